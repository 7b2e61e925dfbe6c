"""The PostgreSQL engine on a real server: what each operation does, as the catalog shows it."""

from __future__ import annotations

import re

import psycopg
import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import Operation
from tests.support.postgresql import (
    connect,
    dead_tuples,
    index_filenodes,
    make_table,
    note_for,
    query,
    relation_size,
    run_engine,
    scalar,
    table_notes,
    table_stats,
    wait_stats,
)

SIZES = re.compile(r"dead tuples (\d+) -> (\d+), size (\d+) -> (\d+) bytes")


def figures(note: str) -> tuple[int, int, int, int]:
    found = SIZES.search(note)
    assert found, note
    dead_before, dead_after, size_before, size_after = (int(g) for g in found.groups())
    return dead_before, dead_after, size_before, size_after


@pytest.fixture
def three_tables(postgres_url: URL) -> URL:
    """big (20k rows, upper half deleted), mid (5k rows, every other one deleted), small (200 rows)."""
    make_table(postgres_url, "big", 20_000, delete="tail")
    make_table(postgres_url, "mid", 5_000, delete="even")
    make_table(postgres_url, "small", 200)
    wait_stats(postgres_url, "public.big", n_dead_tup=10_000)
    wait_stats(postgres_url, "public.mid", n_dead_tup=2_500)
    return postgres_url


def test_vacuum_removes_the_dead_tuples_largest_table_first(three_tables: URL) -> None:
    url = three_tables
    assert dead_tuples(url, "big") == 10_000 and dead_tuples(url, "mid") == 2_500
    sizes_before = {t: relation_size(url, t) for t in ("big", "mid", "small")}

    report = run_engine(url, Operation.VACUUM)

    assert report.engine == "postgresql"
    assert (report.objects_processed, report.objects_skipped) == (3, 0)
    for table in ("big", "mid"):
        assert dead_tuples(url, table) == 0, f"{table} still has dead tuples"
        stats = table_stats(url, f"public.{table}")
        assert stats["n_dead_tup"] == 0 and stats["last_vacuum"] is not None and stats["vacuum_count"] == 1
    # Largest first, as pg_total_relation_size ranks them.
    assert [n.split(":")[0] for n in table_notes(report)] == [
        "table public.big",
        "table public.mid",
        "table public.small",
    ]
    assert sizes_before["big"] > sizes_before["mid"] > sizes_before["small"]
    big = note_for(report, "public.big")
    assert 'VACUUM (SKIP_LOCKED) "public"."big"' in big
    dead_before, dead_after, size_before, size_after = figures(big)
    assert (dead_before, dead_after) == (10_000, 0)
    # The deleted upper half is at the end of the heap: VACUUM truncates it and the table shrinks.
    assert size_before == sizes_before["big"] and size_after == relation_size(url, "big") < size_before
    assert figures(note_for(report, "public.mid"))[:2] == (2_500, 0)
    assert 0 < report.bytes_after < report.bytes_before
    assert report.notes[0] == f"database size: {report.bytes_before} -> {report.bytes_after} bytes"
    assert report.notes[1] == "tables: 3 processed, 0 skipped"
    assert any(n.startswith("session: autocommit, lock_timeout 5s") for n in report.notes)


def test_analyze_sets_last_analyze_and_the_planner_statistics(three_tables: URL) -> None:
    url = three_tables
    assert table_stats(url, "public.big")["last_analyze"] is None
    assert scalar(url, "SELECT reltuples FROM pg_class WHERE oid = 'big'::regclass") < 0  # never counted

    report = run_engine(url, Operation.ANALYZE)

    assert (report.objects_processed, report.objects_skipped) == (3, 0)
    for table in ("big", "mid", "small"):
        stats = table_stats(url, f"public.{table}")
        assert stats["last_analyze"] is not None and stats["n_mod_since_analyze"] == 0
    assert scalar(url, "SELECT reltuples FROM pg_class WHERE oid = 'big'::regclass") == 10_000
    assert scalar(url, "SELECT count(*) FROM pg_stats WHERE tablename = 'big'") == 2  # id, payload
    assert 'ANALYZE (SKIP_LOCKED) "public"."big"' in note_for(report, "public.big")


def test_reindex_rebuilds_every_index_concurrently(three_tables: URL) -> None:
    url = three_tables
    before = {t: index_filenodes(url, t) for t in ("big", "mid", "small")}

    report = run_engine(url, Operation.REINDEX)

    assert (report.objects_processed, report.objects_skipped) == (3, 0)
    for table, nodes in before.items():
        after = index_filenodes(url, table)
        assert set(after) == set(nodes) == {f"{table}_pkey", f"{table}_payload"}, "same names, same count"
        assert all(after[name] != node for name, node in nodes.items()), f"{table}: an index was not rebuilt"
    assert scalar(url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    note = note_for(report, "public.big")
    assert 'REINDEX TABLE CONCURRENTLY "public"."big"' in note and "indexes 2" in note
    # Half the rows are gone: the rebuilt indexes are smaller.
    _, _, size_before, size_after = figures(note)
    assert size_after < size_before
    assert "no invalid *_ccnew/*_ccold index left on these tables" in report.notes


def test_reindex_drops_the_invalid_ccnew_indexes_a_failed_concurrent_build_left(postgres_url: URL) -> None:
    url = postgres_url
    make_table(url, "dups", 1_000)
    with connect(url) as conn:
        conn.execute("UPDATE dups SET payload = 'same' WHERE id <= 10")
        for name in ("dups_payload_ccnew", "dups_payload_ccold2", "dups_broken"):
            with pytest.raises(psycopg.errors.UniqueViolation):  # leaves an INVALID index behind
                conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON dups (payload)".encode())
        conn.execute("CREATE INDEX CONCURRENTLY keep_ccnew ON dups (id)")  # valid: not a leftover
    invalid = "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE NOT x.indisvalid"
    assert sorted(r[0] for r in query(url, invalid)) == [
        "dups_broken",
        "dups_payload_ccnew",
        "dups_payload_ccold2",
    ]

    report = run_engine(url, Operation.REINDEX)

    assert [r[0] for r in query(url, invalid)] == ["dups_broken"], "only *_ccnew/*_ccold leftovers are dropped"
    assert set(index_filenodes(url, "dups")) == {"dups_pkey", "dups_payload", "keep_ccnew", "dups_broken"}
    dropped = [n for n in report.notes if n.startswith("dropped invalid index")]
    assert dropped == [
        f"dropped invalid index public.{name} on public.dups (left by a failed REINDEX CONCURRENTLY): "
        f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{name}"'
        for name in ("dups_payload_ccnew", "dups_payload_ccold2")
    ]
    # The table itself was reindexed; PostgreSQL said it skipped the invalid ones.
    note = note_for(report, "public.dups")
    assert report.objects_processed == 1 and "cannot reindex invalid index" in note


def test_optimize_vacuums_only_the_tables_over_the_autovacuum_thresholds(postgres_url: URL) -> None:
    url = postgres_url
    # Analyzed first, so reltuples = 10000: thresholds 50 + 0.2 * 10000 = 2050 dead, 50 + 0.1 * 10000 = 1050.
    make_table(url, "churned", 10_000, analyze=True, delete="id <= 5000")
    make_table(
        url, "updated", 10_000, analyze=True, after="UPDATE updated SET payload = 'x' || id WHERE id <= 1500"
    )
    make_table(url, "quiet", 10_000, analyze=True, delete="id <= 100")
    wait_stats(url, "public.churned", n_dead_tup=5_000)
    wait_stats(url, "public.updated", n_dead_tup=1_500, n_mod_since_analyze=1_500)
    wait_stats(url, "public.quiet", n_dead_tup=100, n_mod_since_analyze=100)

    report = run_engine(url, Operation.OPTIMIZE)

    assert (report.objects_processed, report.objects_skipped) == (2, 0)
    assert report.notes[1] == "tables: 2 processed, 0 skipped, 1 below the thresholds"
    churned = note_for(report, "public.churned")
    assert 'VACUUM (ANALYZE, SKIP_LOCKED) "public"."churned"' in churned
    assert "over a threshold: dead tuples 5000 > 2050" in churned
    assert "changed since analyze 1500 > 1050" in note_for(report, "public.updated")
    assert "dead tuples 1500 <= 2050" in note_for(report, "public.updated")
    below = next(n for n in report.notes if n.startswith("below the autovacuum thresholds"))
    assert "public.quiet (dead tuples 100 <= 2050, changed since analyze 100 <= 1050" in below
    for table in ("churned", "updated"):
        stats = table_stats(url, f"public.{table}")
        assert stats["n_dead_tup"] == 0 and stats["last_vacuum"] is not None and stats["analyze_count"] == 2
    quiet = table_stats(url, "public.quiet")
    assert quiet["last_vacuum"] is None and quiet["n_dead_tup"] == 100 and quiet["analyze_count"] == 1
    assert dead_tuples(url, "churned") == 0 and dead_tuples(url, "quiet") == 100


def test_optimize_with_nothing_over_the_thresholds_does_nothing(postgres_url: URL) -> None:
    make_table(postgres_url, "calm", 1_000, analyze=True)
    report = run_engine(postgres_url, Operation.OPTIMIZE)
    assert (report.objects_processed, report.objects_skipped) == (0, 0)
    assert "no table over the autovacuum thresholds: nothing to do" in report.notes
    assert table_stats(postgres_url, "public.calm")["last_vacuum"] is None


def test_an_empty_database_completes_with_nothing_to_do(postgres_url: URL) -> None:
    for operation in (Operation.VACUUM, Operation.ANALYZE, Operation.REINDEX):
        report = run_engine(postgres_url, operation)
        assert (report.objects_processed, report.objects_skipped) == (0, 0) and report.bytes_before > 0
        assert "no table in scope: nothing to do" in report.notes
