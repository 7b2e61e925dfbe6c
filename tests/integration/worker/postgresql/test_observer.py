"""The PostgreSQL observer on a real server: a bloated table, a clean analyzed one, invalid indexes, and a
transaction holding the xmin horizon. Observing changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import TableAction, TableScope
from dbmaint.thresholds import Thresholds
from tests.support.postgresql import connect, make_table, table_stats, wait_stats
from worker_service.engines.base import OperationFailed
from worker_service.engines.observe import TableObservation
from worker_service.engines.observe_postgresql import observe_postgresql


@pytest.fixture
def tables(postgres_url: URL) -> URL:
    """bloated: 20k rows analyzed, then every other row deleted (autovacuum off); clean: 2k rows, analyzed."""
    make_table(postgres_url, "bloated", 20_000, analyze=True, delete="even")
    make_table(postgres_url, "clean", 2_000, analyze=True)
    wait_stats(postgres_url, "public.bloated", n_dead_tup=10_000)
    return postgres_url


@pytest.fixture
def observer(tables: URL) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with connect(tables) as conn:
        yield conn


def the_vacuum_of(table: str, observations: list[TableObservation]) -> TableObservation:
    """The observation about ``table``'s dead tuples (its deletes also call for an ANALYZE, reported apart)."""
    (found,) = [o for o in observations if o.table == table and "dead_tuples" in o.reasons]
    return found


def by_table(observations: list[TableObservation]) -> dict[str, list[TableObservation]]:
    found: dict[str, list[TableObservation]] = {}
    for observation in observations:
        found.setdefault(observation.table, []).append(observation)
    return found


def test_the_bloated_table_is_proposed_for_vacuum_with_its_dead_tuples(observer: Any) -> None:
    observations = observe_postgresql(observer, TableScope())
    bloated = the_vacuum_of("bloated", observations)

    assert (bloated.schema, bloated.action, bloated.reasons) == ("public", TableAction.VACUUM, ("dead_tuples",))
    assert bloated.evidence["dead_tuples"] == 10_000
    assert bloated.evidence["vacuum_threshold_tuples"] == pytest.approx(50 + 0.2 * 20_000)
    assert bloated.evidence["dead_ratio"] == pytest.approx(0.5, abs=0.01)
    assert bloated.evidence["xid_age"] > 0 and bloated.evidence["freeze_max_age"] == 200_000_000
    (analyze,) = [o for o in by_table(observations)["bloated"] if o is not bloated]
    assert (analyze.action, analyze.reasons) == (TableAction.ANALYZE, ("stale_statistics",))
    assert analyze.evidence["modified_since_analyze"] == 10_000


def test_the_clean_analyzed_table_is_skipped_below_threshold(observer: Any) -> None:
    (clean,) = by_table(observe_postgresql(observer, TableScope()))["clean"]

    assert (clean.action, clean.reasons) == (TableAction.SKIP, ("below_threshold",))
    assert clean.evidence["dead_tuples"] == 0 and clean.evidence["live_tuples"] == 2_000


def test_the_bloated_table_comes_before_the_clean_one(observer: Any) -> None:
    tables = [o.table for o in observe_postgresql(observer, TableScope())]
    assert tables.index("bloated") < tables.index("clean")


def test_observing_changes_nothing(tables: URL, observer: Any) -> None:
    before = table_stats(tables, "public.bloated")

    observe_postgresql(observer, TableScope())
    observe_postgresql(observer, TableScope(tables=("bloated",)))

    assert table_stats(tables, "public.bloated") == before


def test_a_reloption_raises_the_vacuum_threshold_above_the_dead_tuples(tables: URL, observer: Any) -> None:
    with connect(tables) as conn:
        conn.execute("ALTER TABLE bloated SET (autovacuum_vacuum_scale_factor = 0.9)")

    (bloated,) = observe_postgresql(observer, TableScope(tables=("bloated",)))

    assert bloated.action is TableAction.ANALYZE  # no VACUUM: 10k dead tuples are below 50 + 0.9 * 20k
    assert bloated.evidence["vacuum_threshold_tuples"] == pytest.approx(50 + 0.9 * 20_000)


def test_a_failed_concurrent_unique_index_is_proposed_for_reindex_and_a_ccnew_leftover_for_drop(
    tables: URL, observer: Any
) -> None:
    with connect(tables) as conn:
        for table in ("clean", "bloated"):
            conn.execute(f"INSERT INTO {table} VALUES (100000, 'twin'), (100001, 'twin')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY clean_unique_payload ON clean (payload)")
        # the name a failed REINDEX CONCURRENTLY leaves behind
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY bloated_payload_ccnew ON bloated (payload)")

    found = by_table(observe_postgresql(observer, TableScope()))

    (clean,) = [o for o in found["clean"] if "invalid_index" in o.reasons]
    assert clean.action is TableAction.REINDEX and clean.evidence["invalid_indexes"] == 1
    (leftover,) = [o for o in found["bloated"] if "invalid_index" in o.reasons]
    assert leftover.action is TableAction.DROP_INVALID_INDEX and leftover.evidence["leftover_indexes"] == 1


def test_an_open_repeatable_read_snapshot_holds_the_horizon_and_names_its_pid(tables: URL, observer: Any) -> None:
    holder = connect(tables, autocommit=False)
    try:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM clean")  # the snapshot is taken now
        holder_pid = holder.info.backend_pid
        eager = Thresholds.from_mapping({"xmin_horizon_min_seconds": 0})

        bloated = the_vacuum_of("bloated", observe_postgresql(observer, TableScope(), eager))

        assert bloated.action is TableAction.SKIP and bloated.wanted is TableAction.VACUUM
        assert bloated.reasons == ("dead_tuples", "xmin_horizon_held")
        assert bloated.evidence["xmin_holder_pid"] == holder_pid
        assert bloated.evidence["dead_tuples"] == 10_000
        # with the default (a horizon held for 5 minutes), a fresh transaction does not count yet
        default = the_vacuum_of("bloated", observe_postgresql(observer, TableScope()))
        assert default.action is TableAction.VACUUM
    finally:
        holder.rollback()
        holder.close()


def test_a_scope_narrows_the_tables_and_an_unknown_table_is_named(observer: Any) -> None:
    assert {o.table for o in observe_postgresql(observer, TableScope(tables=("public.clean",)))} == {"clean"}
    with pytest.raises(OperationFailed, match="'missing' does not exist"):
        observe_postgresql(observer, TableScope(tables=("missing",)))


def test_btree_bloat_left_by_deleted_rows_is_estimated_and_proposed_for_reindex(
    tables: URL, observer: Any
) -> None:
    with connect(tables) as conn:
        conn.execute("VACUUM bloated")  # the index entries go, their pages stay
    low_bytes = Thresholds.from_mapping({"bloat_min_bytes": 0, "bloat_min_ratio": 0.4})

    found = by_table(observe_postgresql(observer, TableScope(), low_bytes))

    (reindex,) = [o for o in found["bloated"] if o.action is TableAction.REINDEX]
    assert reindex.reasons == ("bloat_estimate",)
    assert 0.4 <= reindex.evidence["bloat_ratio"] < 1
    assert 0 < reindex.evidence["bloat_bytes"] < reindex.evidence["btree_index_bytes"]
    assert all(o.action is not TableAction.REINDEX for o in found["clean"])
    assert found["clean"][0].evidence["bloat_ratio"] < 0.4


def test_a_table_past_its_freeze_threshold_is_proposed_for_freeze_before_anything_else(observer: Any) -> None:
    # Any age is "old" when the threshold is 0 % of autovacuum_freeze_max_age: a young database stands in
    # for one near wraparound.
    urgent = Thresholds.from_mapping({"freeze_age_ratio": 0})

    observations = observe_postgresql(observer, TableScope(), urgent)

    first = observations[0]
    assert first.action is TableAction.FREEZE and first.reasons[0] == "xid_age"
    assert first.evidence["xid_age"] > first.evidence["freeze_threshold_xids"] == 0
    bloated = [o for o in observations if o.table == "bloated" and o.action is TableAction.FREEZE]
    assert bloated and bloated[0].reasons == ("xid_age", "dead_tuples")
    assert all(o.action is not TableAction.VACUUM for o in observations)
