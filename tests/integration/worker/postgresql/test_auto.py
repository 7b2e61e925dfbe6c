"""MODE_AUTO on a real PostgreSQL server: a child observes, acts only on the tables over a threshold (most
urgent first), skips the others with a reason, observes again and reports before/after."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import OperationReport, TableAction, TableReport
from tests.support.plan import run_child
from tests.support.postgresql import connect, locked, make_table, scalar, table_stats, wait_stats
from worker_service.engines.postgresql import PostgresqlEngine


@pytest.fixture
def tables(postgres_url: URL) -> URL:
    """bloated: 20k rows analyzed, then every other row deleted (autovacuum off); clean: 2k rows, analyzed."""
    make_table(postgres_url, "bloated", 20_000, analyze=True, delete="even")
    make_table(postgres_url, "clean", 2_000, analyze=True)
    wait_stats(postgres_url, "public.bloated", n_dead_tup=10_000)
    return postgres_url


def auto(url: URL, operation: str, **config: object) -> OperationReport:
    report: OperationReport = run_child(PostgresqlEngine(), url, operation, mode="auto", **config)
    return report


def report_of(report: OperationReport, table: str) -> TableReport:
    (found,) = [t for t in report.tables if t.table == table]
    return found


def index_valid(url: URL, index: str) -> bool | None:
    return scalar(url, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (index,))  # type: ignore[no-any-return]


def test_auto_vacuums_only_the_bloated_table_and_reports_its_dead_tuples_before_and_after(tables: URL) -> None:
    report = auto(tables, "vacuum")

    bloated = report_of(report, "bloated")
    assert (bloated.action, bloated.reasons) == (TableAction.VACUUM, ("dead_tuples",))
    assert bloated.before["dead_tuples"] == 10_000 and bloated.after["dead_tuples"] == 0
    assert bloated.evidence["vacuum_threshold_tuples"] == pytest.approx(50 + 0.2 * 20_000)
    assert bloated.duration_seconds > 0
    clean = report_of(report, "clean")
    assert (clean.action, clean.reasons, clean.after) == (TableAction.SKIP, ("below_threshold",), {})
    assert table_stats(tables, "public.bloated")["vacuum_count"] == 1
    assert table_stats(tables, "public.clean")["vacuum_count"] == 0
    assert report.notes[:2] == (
        "auto: 2 table(s) observed, 1 acted on, 1 skipped",
        "auto: vacuum public.bloated (dead_tuples)",
    )
    assert any(note.startswith("table public.bloated: VACUUM (SKIP_LOCKED)") for note in report.notes)
    assert (report.objects_processed, report.objects_skipped) == (1, 1)


def test_auto_analyze_analyzes_only_the_table_whose_statistics_are_stale(tables: URL) -> None:
    report = auto(tables, "analyze")

    bloated = report_of(report, "bloated")
    assert (bloated.action, bloated.reasons) == (TableAction.ANALYZE, ("stale_statistics",))
    assert bloated.before["modified_since_analyze"] == 10_000 and bloated.after["modified_since_analyze"] == 0
    assert report_of(report, "clean").action is TableAction.SKIP
    assert table_stats(tables, "public.bloated")["analyze_count"] == 2  # make_table's, then ours
    assert table_stats(tables, "public.clean")["analyze_count"] == 1


def test_a_held_xmin_horizon_skips_the_vacuum_with_the_holders_pid_and_runs_nothing(tables: URL) -> None:
    holder = connect(tables, autocommit=False)
    try:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM clean")
        report = auto(tables, "vacuum", thresholds={"xmin_horizon_min_seconds": 0})
        bloated = report_of(report, "bloated")
        assert (bloated.action, bloated.reasons) == (TableAction.SKIP, ("dead_tuples", "xmin_horizon_held"))
        assert bloated.evidence["xmin_holder_pid"] == holder.info.backend_pid
        assert "auto: nothing over the thresholds: no statement run" in report.notes
        assert any(n == "auto: skipped public.bloated (dead_tuples, xmin_horizon_held)" for n in report.notes)
        assert table_stats(tables, "public.bloated")["vacuum_count"] == 0
    finally:
        holder.rollback()
        holder.close()


def test_wraparound_comes_first_with_a_vacuum_freeze_that_resets_the_tables_xid_age(tables: URL) -> None:
    with connect(tables) as conn:
        conn.execute("SELECT txid_current()")  # one more xid, so every table's age is above 0
    age_before = scalar(tables, "SELECT age(relfrozenxid) FROM pg_class WHERE oid = 'clean'::regclass")

    report = auto(tables, "vacuum", thresholds={"freeze_age_ratio": 0})

    assert [t.action for t in report.tables] == [TableAction.FREEZE, TableAction.FREEZE]
    clean = report_of(report, "clean")
    assert "xid_age" in clean.reasons and clean.after["xid_age"] < clean.before["xid_age"]
    assert scalar(tables, "SELECT age(relfrozenxid) FROM pg_class WHERE oid = 'clean'::regclass") < age_before
    assert any(note.startswith("table public.clean: VACUUM (FREEZE, SKIP_LOCKED)") for note in report.notes)


def test_auto_reindex_drops_a_ccnew_leftover_and_rebuilds_a_failed_concurrent_index(tables: URL) -> None:
    with connect(tables) as conn:
        for table in ("clean", "bloated"):
            conn.execute(f"INSERT INTO {table} VALUES (100000, 'twin'), (100001, 'twin')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY clean_unique_payload ON clean (payload)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY bloated_payload_ccnew ON bloated (payload)")
        conn.execute("DELETE FROM clean WHERE id = 100001")  # the duplicate is gone: the index can be built
    assert index_valid(tables, "clean_unique_payload") is False

    report = auto(tables, "reindex")

    bloated = report_of(report, "bloated")
    assert (bloated.action, bloated.reasons) == (TableAction.DROP_INVALID_INDEX, ("invalid_index",))
    assert bloated.before["leftover_indexes"] == 1 and "leftover_indexes" not in bloated.after
    assert index_valid(tables, "bloated_payload_ccnew") is None  # dropped
    clean = report_of(report, "clean")
    assert (clean.action, clean.reasons) == (TableAction.REINDEX, ("invalid_index",))
    assert index_valid(tables, "clean_unique_payload") is True
    statements = " ".join(report.notes)
    assert 'REINDEX INDEX CONCURRENTLY "public"."clean_unique_payload"' in statements
    assert "REINDEX TABLE" not in statements  # no bloat: only the invalid index is rebuilt


def test_a_table_locked_by_another_session_is_reported_skipped_as_locked(tables: URL) -> None:
    with locked(tables, "public.bloated"):
        report = auto(tables, "vacuum")

    bloated = report_of(report, "bloated")
    assert bloated.action is TableAction.SKIP and bloated.reasons == ("dead_tuples", "locked")
    assert table_stats(tables, "public.bloated")["vacuum_count"] == 0


def test_a_mode_all_child_reports_each_table_with_its_figures_and_duration(tables: URL) -> None:
    report = run_child(PostgresqlEngine(), tables, "vacuum")

    by_table = {t.table: t for t in report.tables}
    assert set(by_table) == {"bloated", "clean"}
    bloated = by_table["bloated"]
    assert bloated.action is TableAction.VACUUM and bloated.duration_seconds > 0
    assert bloated.before["dead_tuples"] == 10_000 and bloated.after["dead_tuples"] == 0
    assert bloated.before["size_bytes"] > 0
