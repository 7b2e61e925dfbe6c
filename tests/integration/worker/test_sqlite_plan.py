"""MODE_PLAN on real SQLite files: a child reports the free-list ratio and what it would do, leaves the file
byte-identical, and does not wait while another process holds the target's resource lock."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dbmaint.operations import TableAction, TableScope
from tests.integration.worker.test_resource_fence import lock_held
from tests.integration.worker.test_sqlite_observer import holes_db
from tests.support.plan import plan_of, run_child
from worker_service.cancel import CancelToken
from worker_service.engines.base import OperationFailed
from worker_service.engines.plan import run_plan
from worker_service.engines.sqlite import SqliteEngine


def freelist_count(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        conn.close()


def test_a_plan_reports_the_free_list_ratio_and_leaves_the_file_byte_identical(tmp_path: Path) -> None:
    path = holes_db(tmp_path / "holes.db")
    content, modified = path.read_bytes(), os.stat(path).st_mtime_ns

    report = plan_of(SqliteEngine(), make_url(f"sqlite:///{path}"))

    whole_file = report.tables[0]
    assert (whole_file.schema, whole_file.table, whole_file.action) == ("main", "", TableAction.VACUUM)
    assert whole_file.reasons == ("freelist",)
    assert whole_file.evidence["free_ratio"] == whole_file.before["free_ratio"] > 0.5
    assert whole_file.evidence["free_pages"] == freelist_count(path)
    assert report.notes[:2] == (
        "plan: 1 table(s) observed, nothing changed",
        "plan: vacuum the database file (main) (freelist)",
    )
    assert report.bytes_before == report.bytes_after == len(content)
    assert (report.objects_processed, report.objects_skipped) == (0, 1)
    assert path.read_bytes() == content and os.stat(path).st_mtime_ns == modified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holes.db"]  # no journal, no lock file


def test_a_plan_does_not_wait_while_another_process_holds_the_targets_lock(tmp_path: Path) -> None:
    path = holes_db(tmp_path / "holes.db")
    with lock_held(path):
        started = time.monotonic()
        report = plan_of(SqliteEngine(), make_url(f"sqlite:///{path}"))
        elapsed = time.monotonic() - started

    assert elapsed < 5, f"the plan took {elapsed:.1f}s: it waited for the lock"
    assert report.tables[0].action is TableAction.VACUUM


def test_an_assignment_without_mode_still_vacuums(tmp_path: Path) -> None:
    path = holes_db(tmp_path / "holes.db")

    report = run_child(SqliteEngine(), make_url(f"sqlite:///{path}"), "vacuum")

    assert report.objects_processed == 1 and freelist_count(path) == 0


def test_a_plan_of_a_missing_file_fails_and_creates_nothing(tmp_path: Path) -> None:
    url = make_url(f"sqlite:///{tmp_path / 'missing.db'}")
    with pytest.raises(OperationFailed, match="does not exist"):
        run_plan(SqliteEngine(), url, CancelToken(), None, TableScope())
    assert list(tmp_path.iterdir()) == []
