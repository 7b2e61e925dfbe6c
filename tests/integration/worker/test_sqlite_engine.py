"""The SQLite engine on real files: what each operation does, failures, cancel and deadline."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation, OperationReport
from dbmaint.windows import window_ended
from tests.support.targets import write_locked
from tests.support.worker import integrity, wait_until
from worker_service.cancel import CancelToken
from worker_service.config import TargetSpec
from worker_service.engines import EngineRegistry, EngineUnavailable, SqliteEngine
from worker_service.engines import sqlite as sqlite_engine
from worker_service.executor import Assignment, Executor, Outcome, run_assignment
from worker_service.faults import FaultPlan
from worker_service.targets import BoundTarget, bind_targets


def run_op(path: Path, operation: Operation, **kwargs: Any) -> OperationReport:
    engine = SqliteEngine(kwargs.pop("faults", FaultPlan()))
    return engine.run(operation, make_url(f"sqlite:///{path}"), kwargs.pop("cancel", CancelToken()), None)


def assignment(operation: str = "vacuum", deadline: datetime | None = None) -> Assignment:
    return Assignment(
        job_id="job-1",
        attempt=1,
        target="db",
        operation=operation,
        job_type=CHILD_JOB_TYPE,
        config={"operation": operation, "target": "db"},
        deadline=deadline,
    )


def target(path: Path, faults: FaultPlan | None = None) -> BoundTarget:
    return BoundTarget("db", make_url(f"sqlite:///{path}"), SqliteEngine(faults or FaultPlan()))


def freelist(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        conn.close()


def test_vacuum_shrinks_the_file_and_empties_the_free_list(sample_db: Path) -> None:
    assert freelist(sample_db) > 0
    report = run_op(sample_db, Operation.VACUUM)
    assert report.engine == "sqlite"
    assert 0 < report.bytes_after < report.bytes_before
    assert report.bytes_before == sample_db.stat().st_size or report.bytes_before > report.bytes_after
    assert report.objects_processed == 1
    assert "statement: VACUUM" in report.notes
    freelist_note = next(n for n in report.notes if n.startswith("freelist_count:"))
    before, after = (int(x) for x in freelist_note.removeprefix("freelist_count: ").split(" -> "))
    assert before > 0 and after == 0
    assert freelist(sample_db) == 0
    assert report.bytes_after == sample_db.stat().st_size
    assert integrity(sample_db) == ("ok", 10_000)


def test_analyze_creates_sqlite_stat1(sample_db: Path) -> None:
    report = run_op(sample_db, Operation.ANALYZE)
    conn = sqlite3.connect(sample_db)
    try:
        stats = conn.execute("SELECT tbl, idx FROM sqlite_stat1 ORDER BY idx").fetchall()
    finally:
        conn.close()
    assert ("items", "items_key") in stats
    assert report.objects_processed == 2  # one table, one index
    assert "statement: ANALYZE" in report.notes and "tables: 1, indexes: 1" in report.notes


def test_reindex_and_optimize_succeed(sample_db: Path) -> None:
    report = run_op(sample_db, Operation.REINDEX)
    assert report.objects_processed == 2 and "statement: REINDEX" in report.notes
    report = run_op(sample_db, Operation.OPTIMIZE)
    assert report.objects_processed == 1 and "statement: PRAGMA optimize" in report.notes
    assert integrity(sample_db) == ("ok", 10_000)


def test_a_missing_file_fails_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    outcome = run_assignment(assignment(), target(missing), CancelToken())
    assert outcome.status is JobStatus.FAILED
    assert f"sqlite database file does not exist: {missing}" == outcome.error
    assert not missing.exists()


def test_a_directory_or_a_non_database_fails(tmp_path: Path) -> None:
    outcome = run_assignment(assignment(), target(tmp_path), CancelToken())
    assert outcome.status is JobStatus.FAILED and "is not a file" in outcome.error
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    outcome = run_assignment(assignment(), target(junk), CancelToken())
    assert outcome.status is JobStatus.FAILED
    assert "cannot read sqlite database" in outcome.error and "not a database" in outcome.error


def test_the_progress_handler_fires_during_vacuum(sample_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = sqlite_engine._ProgressHandler.__call__

    def counting(self: Any) -> int:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(sqlite_engine._ProgressHandler, "__call__", counting)
    run_op(sample_db, Operation.VACUUM)
    assert len(calls) > 10  # every 1000 VM instructions of the real VACUUM


def test_a_slow_fault_makes_the_statement_itself_slow(small_db: Path) -> None:
    started = time.monotonic()
    report = run_op(small_db, Operation.OPTIMIZE, faults=FaultPlan(slow={"optimize": 0.4}))  # ~27 VM steps
    assert time.monotonic() - started >= 0.4
    assert report.duration_seconds >= 0.4
    assert any(n.startswith("fault injected: slow:optimize=0.4") for n in report.notes)


def run_in_thread(fn: Any) -> tuple[threading.Thread, list[Outcome]]:
    box: list[Outcome] = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    return thread, box


def statement_started(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set when the engine's statement starts (the progress handler's clock starts)."""
    started = threading.Event()
    original = sqlite_engine._ProgressHandler.start

    def start(self: Any) -> None:
        original(self)
        started.set()

    monkeypatch.setattr(sqlite_engine._ProgressHandler, "start", start)
    return started


def test_cancel_interrupts_a_slowed_vacuum_promptly(sample_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = statement_started(monkeypatch)
    token = CancelToken()
    slow = target(sample_db, FaultPlan(slow={"vacuum": 30}))
    thread, box = run_in_thread(lambda: run_assignment(assignment(), slow, token))
    assert started.wait(5)
    # The VACUUM is in progress: another connection cannot take a write lock now.
    wait_until(lambda: write_locked(sample_db), timeout=2, message="VACUUM holds the database")
    cancelled_at = time.monotonic()
    token.cancel("cancelled by test")
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - cancelled_at < 2.0
    assert (box[0].status, box[0].error) == (JobStatus.CANCELLED, "cancelled by test")
    assert integrity(sample_db) == ("ok", 10_000)
    assert freelist(sample_db) > 0  # the interrupted VACUUM rolled back


def test_interrupt_alone_stops_the_statement(sample_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection.interrupt() from the cancelling thread stops the statement even if the handler never would."""
    calls: list[int] = []

    def never_stops(self: Any) -> int:
        calls.append(1)
        time.sleep(0.001)  # ~90k VM steps: this VACUUM would take minutes
        return 0

    monkeypatch.setattr(sqlite_engine._ProgressHandler, "__call__", never_stops)
    token = CancelToken()
    slow = target(sample_db, FaultPlan(slow={"vacuum": 30}))  # a fault: the handler runs on every VM step
    thread, box = run_in_thread(lambda: run_assignment(assignment(), slow, token))
    wait_until(lambda: len(calls) > 50, timeout=5, message="VACUUM running")
    cancelled_at = time.monotonic()
    token.cancel("interrupt only")
    thread.join(5)
    assert not thread.is_alive(), "the interrupted VACUUM never returned"
    assert time.monotonic() - cancelled_at < 2.0
    assert box and (box[0].status, box[0].error) == (JobStatus.CANCELLED, "interrupt only")
    assert integrity(sample_db) == ("ok", 10_000)


def test_a_deadline_fails_the_operation(sample_db: Path) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=0.3)
    started = time.monotonic()
    outcome = run_assignment(
        assignment(deadline=deadline), target(sample_db, FaultPlan(slow={"vacuum": 30})), CancelToken()
    )
    assert time.monotonic() - started < 2.0
    assert outcome.status is JobStatus.FAILED
    assert "deadline exceeded" in outcome.error and "interrupted after" in outcome.error
    assert integrity(sample_db) == ("ok", 10_000)


def test_url_checks() -> None:
    engine = SqliteEngine()
    for bad in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x.db?uri=true"):
        with pytest.raises(EngineUnavailable, match="must name a database file"):
            engine.check_url(make_url(bad))
    with pytest.raises(EngineUnavailable, match="driver 'pysqlcipher' is not supported"):
        engine.check_url(make_url("sqlite+pysqlcipher:///x.db"))
    with pytest.raises(EngineUnavailable, match="timeout"):
        engine.check_url(make_url("sqlite:///x.db?timeout=soon"))
    engine.check_url(make_url("sqlite+pysqlite:///x.db?timeout=2"))


def test_registry_and_binding_name_the_target_and_mask_the_password() -> None:
    registry = EngineRegistry([SqliteEngine()])
    specs = [
        TargetSpec("ok", make_url("sqlite:///a.db")),
        TargetSpec("pg", make_url("postgresql://u:pw1234@h/db")),
    ]
    with pytest.raises(EngineUnavailable) as info:
        bind_targets(specs, registry)
    message = str(info.value)
    assert "target 'pg'" in message and "dialect 'postgresql'" in message and "supports: sqlite" in message
    assert "pw1234" not in message
    assert bind_targets(specs[:1], registry)["ok"].engine.name == "sqlite"


def test_objects_processed_excludes_sqlite_internal_tables(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE a (x TEXT UNIQUE); CREATE TABLE b (y); CREATE INDEX b_y ON b (y); ANALYZE;")
    conn.close()
    report = run_op(path, Operation.REINDEX)
    assert report.objects_processed == 3  # a, b, b_y (not sqlite_stat1, not sqlite_autoindex_a_1)


async def test_a_slowed_vacuum_is_cancelled_at_its_window_end(sample_db: Path) -> None:
    window_end = datetime.now(UTC) + timedelta(seconds=1)
    executor = Executor({"db": target(sample_db, FaultPlan(slow={"vacuum": 30}))}, slots=1)
    try:
        running = executor.start(replace(assignment(), window_end=window_end))
        outcome = await asyncio.wait_for(running, 10)
    finally:
        executor.close()
    ended_after = datetime.now(UTC) - window_end
    assert timedelta(0) <= ended_after < timedelta(seconds=3)
    assert (outcome.status, outcome.error) == (JobStatus.CANCELLED, window_ended(window_end))
    assert outcome.error.startswith("maintenance window ended at ")
    assert integrity(sample_db) == ("ok", 10_000)
    assert freelist(sample_db) > 0  # the interrupted VACUUM rolled back
