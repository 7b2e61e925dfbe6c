"""MODE_AUTO on real SQLite files: VACUUM runs only when the free list is over its threshold, ANALYZE only on
the tables without statistics, and the report has the figures before and after."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from dbmaint.operations import OperationReport, TableAction
from tests.integration.worker.test_sqlite_observer import holes_db
from tests.support.plan import run_child
from worker_service.engines.sqlite import SqliteEngine


def auto(path: Path, operation: str, **config: object) -> OperationReport:
    report: OperationReport = run_child(
        SqliteEngine(), make_url(f"sqlite:///{path}"), operation, mode="auto", **config
    )
    return report


def test_auto_vacuums_a_file_whose_free_list_is_over_the_threshold_and_reports_the_ratio_before_and_after(
    tmp_path: Path,
) -> None:
    path = holes_db(tmp_path / "holes.db")
    size_before = path.stat().st_size

    report = auto(path, "vacuum")

    whole_file = report.tables[0]
    assert (whole_file.table, whole_file.action, whole_file.reasons) == ("", TableAction.VACUUM, ("freelist",))
    assert whole_file.before["free_ratio"] > 0.5 and whole_file.after["free_ratio"] == 0
    assert whole_file.duration_seconds > 0
    assert report.bytes_before == size_before and report.bytes_after == path.stat().st_size < size_before


def test_auto_leaves_a_file_with_a_small_free_list_alone(tmp_path: Path) -> None:
    path = holes_db(tmp_path / "holes.db")

    report = auto(path, "vacuum", thresholds={"freelist_min_ratio": 0.99})

    assert report.tables[0].action is TableAction.SKIP and report.tables[0].reasons == ("below_threshold",)
    assert "auto: nothing over the thresholds: no statement run" in report.notes
    assert report.bytes_after == report.bytes_before == path.stat().st_size


def test_auto_analyzes_only_the_table_without_statistics(tmp_path: Path) -> None:
    path = tmp_path / "stats.db"
    with sqlite3.connect(path) as setup:
        for table in ("fresh", "stale"):
            setup.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
            setup.execute(f"CREATE INDEX {table}_name ON {table} (name)")
            setup.executemany(f"INSERT INTO {table} VALUES (?, ?)", ((i, f"n{i % 7}") for i in range(200)))
        setup.execute("ANALYZE fresh")
    setup.close()

    report = auto(path, "analyze")

    by_table = {t.table: t for t in report.tables}
    assert (by_table["stale"].action, by_table["stale"].reasons) == (TableAction.ANALYZE, ("stale_statistics",))
    assert by_table["stale"].before["has_statistics"] == 0 and by_table["stale"].after["has_statistics"] == 1
    assert by_table["fresh"].action is TableAction.SKIP
    assert 'ANALYZE "main"."stale"' in " ".join(report.notes) and '"fresh"' not in " ".join(report.notes)
