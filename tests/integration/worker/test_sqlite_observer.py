"""The SQLite observer on real files: the free-list ratio of the file, and tables without statistics."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dbmaint.operations import TableAction, TableScope
from dbmaint.thresholds import Thresholds
from tests.support.worker import make_db
from worker_service.engines.base import OperationFailed
from worker_service.engines.observe_sqlite import observe_sqlite


def holes_db(path: Path) -> Path:
    """A table of 5000 rows of ~500 bytes with its last 4000 deleted: whole pages go to the free list."""
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, payload BLOB)")
        setup.executemany("INSERT INTO items VALUES (?, randomblob(500))", ((i,) for i in range(1, 5001)))
        setup.execute("DELETE FROM items WHERE id > 1000")
    setup.close()
    return path


def _open(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


def test_a_file_with_most_rows_deleted_is_proposed_for_vacuum_with_its_free_list_ratio(tmp_path: Path) -> None:
    conn = _open(holes_db(tmp_path / "holes.db"))
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]

    whole_file = observe_sqlite(conn, TableScope())[0]

    assert (whole_file.schema, whole_file.table, whole_file.action) == ("main", "", TableAction.VACUUM)
    assert whole_file.reasons == ("freelist",)
    assert whole_file.evidence["free_pages"] == free > pages / 2
    assert whole_file.evidence["page_count"] == pages
    assert whole_file.evidence["free_ratio"] == pytest.approx(free / pages)
    assert whole_file.evidence["auto_vacuum_mode"] == 0


def test_a_file_without_a_free_list_is_skipped_below_threshold(tmp_path: Path) -> None:
    conn = _open(make_db(tmp_path / "full.db", rows=2000, delete_half=False))

    whole_file = next(o for o in observe_sqlite(conn, TableScope()) if o.table == "")

    assert (whole_file.action, whole_file.reasons) == (TableAction.SKIP, ("below_threshold",))
    assert whole_file.evidence["free_pages"] == 0


def test_a_table_never_analyzed_is_proposed_for_analyze_and_an_analyzed_one_is_skipped(tmp_path: Path) -> None:
    path = make_db(tmp_path / "stats.db", rows=2000, delete_half=False)
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE fresh (id INTEGER PRIMARY KEY, name TEXT)")
        setup.execute("CREATE INDEX fresh_name ON fresh (name)")
        setup.executemany("INSERT INTO fresh VALUES (?, ?)", ((i, f"n{i}") for i in range(500)))
    conn = _open(path)
    before = {o.table: o for o in observe_sqlite(conn, TableScope())}
    assert before["items"].action is TableAction.ANALYZE and before["items"].reasons == ("stale_statistics",)
    assert before["items"].evidence["statistics_table_exists"] == 0

    with sqlite3.connect(path) as setup:
        setup.execute("ANALYZE items")
    after = {o.table: o for o in observe_sqlite(conn, TableScope())}

    assert after["items"].action is TableAction.SKIP and after["items"].evidence["has_statistics"] == 1
    assert after["fresh"].action is TableAction.ANALYZE
    assert after["fresh"].evidence["indexes_without_statistics"] == 1


def test_observing_changes_nothing_in_the_file(tmp_path: Path) -> None:
    path = holes_db(tmp_path / "same.db")
    content = path.read_bytes()

    writable = sqlite3.connect(path, isolation_level=None)  # as the engine opens it: nothing stops a write
    observe_sqlite(writable, TableScope())
    writable.close()

    assert path.read_bytes() == content


def test_a_lower_threshold_from_a_mapping_changes_the_proposal(tmp_path: Path) -> None:
    conn = _open(holes_db(tmp_path / "holes.db"))
    strict = Thresholds.from_mapping({"freelist_min_ratio": 0.99})

    assert observe_sqlite(conn, TableScope(), strict)[0].action is not TableAction.VACUUM


def test_an_unknown_table_in_scope_is_named() -> None:
    conn = sqlite3.connect(":memory:")
    with pytest.raises(OperationFailed, match="'nope' does not exist"):
        observe_sqlite(conn, TableScope(tables=("nope",)))


def test_an_unknown_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown threshold 'dead_ratio'"):
        Thresholds.from_mapping({"dead_ratio": 0.1})
