"""MODE_PLAN on a real PostgreSQL server: a child that observes, reports what it would do and why, and changes
nothing -- not even while another session holds the target's resource lock."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import TableAction, TableScope
from tests.integration.worker.postgresql.test_resource_lock import lock_held
from tests.support.plan import plan_of, run_child
from tests.support.postgresql import make_table, scalar, table_stats, wait_stats
from worker_service.cancel import CancelToken, OperationCancelled
from worker_service.engines.plan import run_plan
from worker_service.engines.postgresql import PostgresqlEngine


@pytest.fixture
def tables(postgres_url: URL) -> URL:
    """bloated: 20k rows analyzed, then every other row deleted (autovacuum off); clean: 2k rows, analyzed."""
    make_table(postgres_url, "bloated", 20_000, analyze=True, delete="even")
    make_table(postgres_url, "clean", 2_000, analyze=True)
    wait_stats(postgres_url, "public.bloated", n_dead_tup=10_000)
    return postgres_url


def test_a_plan_proposes_vacuum_for_the_bloated_table_with_its_dead_tuples_and_changes_nothing(
    tables: URL,
) -> None:
    before = {name: table_stats(tables, f"public.{name}") for name in ("bloated", "clean")}

    report = plan_of(PostgresqlEngine(), tables)

    (vacuum,) = [t for t in report.tables if t.table == "bloated" and t.action is TableAction.VACUUM]
    assert vacuum.reasons == ("dead_tuples",)
    assert vacuum.evidence["dead_tuples"] == vacuum.before["dead_tuples"] == 10_000
    assert vacuum.evidence["dead_ratio"] == pytest.approx(0.5, abs=0.01) and vacuum.after == {}
    (clean,) = [t for t in report.tables if t.table == "clean"]
    assert (clean.action, clean.reasons) == (TableAction.SKIP, ("below_threshold",))
    assert report.notes[0] == "plan: 2 table(s) observed, nothing changed"
    assert "plan: vacuum public.bloated (dead_tuples)" in report.notes
    assert (report.objects_processed, report.objects_skipped) == (0, 2)
    database_size = scalar(tables, "SELECT pg_database_size(current_database())")
    assert report.bytes_before == report.bytes_after == database_size
    after = {name: table_stats(tables, f"public.{name}") for name in ("bloated", "clean")}
    assert after == before  # n_dead_tup, vacuum_count, analyze_count, last_vacuum: all as they were


def test_a_plan_does_not_wait_while_another_session_holds_the_targets_resource_lock(tables: URL) -> None:
    with lock_held(tables):
        started = time.monotonic()
        report = plan_of(PostgresqlEngine(), tables, tables=["bloated"])
        elapsed = time.monotonic() - started

    assert elapsed < 5, f"the plan took {elapsed:.1f}s: it waited for the lock"
    assert report.notes[0] == "plan: 1 table(s) observed, nothing changed"
    assert not any("resource lock" in note for note in report.notes), report.notes


def test_an_assignment_without_mode_still_vacuums(tables: URL) -> None:
    report = run_child(PostgresqlEngine(), tables, "vacuum", tables=["bloated"])

    assert report.objects_processed == 1
    assert table_stats(tables, "public.bloated")["vacuum_count"] == 1


def test_a_cancelled_plan_raises_the_cancel_and_reads_nothing(tables: URL) -> None:
    cancel = CancelToken()
    cancel.cancel("operator said stop")

    with pytest.raises(OperationCancelled, match="operator said stop"):
        run_plan(PostgresqlEngine(), tables, cancel, None, TableScope())
