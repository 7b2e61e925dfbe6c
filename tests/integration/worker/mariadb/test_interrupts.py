"""The MariaDB engine when it must not wait or must stop: busy tables, cancel, deadline, the slow fault."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, OperationReport
from tests.support.mariadb import connect, connections_in, make_table, q, query, running_queries, table_info
from tests.support.polling import wait_for
from worker_service.cancel import CancelToken
from worker_service.engines import mariadb as mariadb_engine
from worker_service.engines.mariadb import MariadbEngine
from worker_service.executor import Assignment, Outcome, run_assignment
from worker_service.faults import FaultPlan
from worker_service.targets import BoundTarget


def assignment(operation: str, deadline: datetime | None = None) -> Assignment:
    return Assignment(
        job_id="job-1",
        attempt=1,
        target="maria",
        operation=operation,
        job_type=CHILD_JOB_TYPE,
        config={"operation": operation, "target": "maria"},
        deadline=deadline,
    )


def target(url: URL, faults: FaultPlan | None = None) -> BoundTarget:
    return BoundTarget("maria", url, MariadbEngine(faults or FaultPlan()))


def note(report: OperationReport, prefix: str) -> str:
    return next(n for n in report.notes if n.startswith(prefix))


@contextmanager
def holding(url: URL, *statements: str) -> Iterator[Any]:
    """A second session that ran ``statements`` (a lock) and keeps them in force until the block ends."""
    conn = connect(url)
    try:
        for statement in statements:
            query(conn, statement)
        yield conn
    finally:
        conn.close()


@contextmanager
def in_thread(call: Callable[[], Outcome]) -> Iterator[list[Outcome]]:
    box: list[Outcome] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    try:
        yield box
    finally:
        thread.join(30)
        assert not thread.is_alive(), "the operation never returned"


def test_a_write_locked_table_is_skipped_after_the_default_lock_wait_timeout(
    mariadb_url: URL, admin: Any, db: str
) -> None:
    before = make_table(admin, db, "items", rows=500, fragment=False)
    with holding(mariadb_url, f"LOCK TABLES {q(db)}.items WRITE"):
        started = time.monotonic()
        outcome = run_assignment(assignment("reindex"), target(mariadb_url), CancelToken())
        elapsed = time.monotonic() - started

    assert 4.5 <= elapsed < 8.0, f"gave up after {elapsed:.1f}s, expected the default lock_wait_timeout of 5 s"
    assert outcome.status == JobStatus.COMPLETED, outcome.error
    report = outcome.report
    assert report is not None
    assert (report.objects_processed, report.objects_skipped) == (0, 1)
    skipped = note(report, f"`{db}`.`items`: skipped")
    assert "another session holds a lock on the table (Lock wait timeout exceeded" in skipped
    assert "lock_wait_timeout=5 s" in skipped
    assert table_info(admin, db, "items").space == before.space, "the table was left alone"


@pytest.mark.parametrize("operation", ["vacuum", "optimize", "reindex"])
def test_a_table_in_an_open_transaction_is_skipped_and_the_others_are_done(
    mariadb_url: URL, admin: Any, db: str, operation: str
) -> None:
    busy = make_table(admin, db, "busy", rows=200, fragment=False)
    free = make_table(admin, db, "free", rows=200, fragment=False)
    url = mariadb_url.update_query_dict({"lock_wait_timeout": "1"})
    # An open transaction that read the table holds its metadata lock until it ends: no rebuild can finish.
    with holding(mariadb_url, "BEGIN", f"SELECT COUNT(*) FROM {q(db)}.busy"):
        started = time.monotonic()
        outcome = run_assignment(assignment(operation), target(url), CancelToken())
        elapsed = time.monotonic() - started

    assert elapsed < 3.0, f"took {elapsed:.1f}s with lock_wait_timeout=1"
    assert outcome.status == JobStatus.COMPLETED, outcome.error
    report = outcome.report
    assert report is not None
    assert (report.objects_processed, report.objects_skipped) == (1, 1)
    assert "lock_wait_timeout=1 s" in note(report, f"`{db}`.`busy`: skipped")
    assert note(report, f"`{db}`.`free`: processed")
    assert table_info(admin, db, "busy").space == busy.space
    assert table_info(admin, db, "free").space != free.space


def test_cancel_kills_the_slow_fault_statement_on_the_server(mariadb_url: URL, admin: Any, db: str) -> None:
    make_table(admin, db, "items", rows=200, fragment=False)
    token = CancelToken()
    run = target(mariadb_url, FaultPlan(slow={"vacuum": 60}))
    with in_thread(lambda: run_assignment(assignment("vacuum"), run, token)) as box:
        sleeping = wait_for(
            lambda: [r for r in running_queries(admin, db) if str(r[3]).startswith("SELECT SLEEP(60")],
            timeout=10,
            message="the slow fault never showed up on the server",
        )
        cancelled_at = time.monotonic()
        token.cancel("operator said stop")
    assert time.monotonic() - cancelled_at < 2.0
    assert (box[0].status, box[0].error) == (JobStatus.CANCELLED, "operator said stop")
    wait_for(lambda: not connections_in(admin, db), timeout=5, message="the work connection is still there")
    assert not query(admin, "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = %s", sleeping[0][0])


def test_cancel_kills_a_real_optimize_waiting_for_its_lock(mariadb_url: URL, admin: Any, db: str) -> None:
    before = make_table(admin, db, "items", rows=500, fragment=False)
    url = mariadb_url.update_query_dict({"lock_wait_timeout": "60"})
    token = CancelToken()
    with (
        holding(mariadb_url, f"LOCK TABLES {q(db)}.items WRITE"),
        in_thread(lambda: run_assignment(assignment("optimize"), target(url), token)) as box,
    ):
        wait_for(
            lambda: [r for r in running_queries(admin, db) if str(r[3]).startswith("OPTIMIZE")],
            timeout=10,
            message="OPTIMIZE never started",
        )
        cancelled_at = time.monotonic()
        token.cancel("stop the optimize")
    assert time.monotonic() - cancelled_at < 2.0
    assert (box[0].status, box[0].error) == (JobStatus.CANCELLED, "stop the optimize")
    wait_for(lambda: not connections_in(admin, db), timeout=5, message="the work connection is still there")
    after = table_info(admin, db, "items")
    assert (after.space, after.rows) == (before.space, before.rows), "the table is as it was"


def test_a_cancel_before_the_start_never_connects(mariadb_url: URL, admin: Any, db: str) -> None:
    token = CancelToken()
    token.cancel("too late")
    outcome = run_assignment(assignment("vacuum"), target(mariadb_url.set(port=1)), token)
    assert (outcome.status, outcome.error) == (JobStatus.CANCELLED, "too late")


def test_a_deadline_kills_the_statement_and_fails_the_child(mariadb_url: URL, admin: Any, db: str) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=0.5)
    started = time.monotonic()
    outcome = run_assignment(
        assignment("analyze", deadline), target(mariadb_url, FaultPlan(slow={"analyze": 30})), CancelToken()
    )
    assert time.monotonic() - started < 2.5
    assert outcome.status == JobStatus.FAILED
    assert "deadline exceeded" in outcome.error and "interrupted after" in outcome.error
    wait_for(lambda: not connections_in(admin, db), timeout=5, message="the work connection is still there")


def test_the_server_enforces_the_deadline_on_its_own(
    mariadb_url: URL, admin: Any, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_statement_time = seconds left + 1: the server stops the statement even when no KILL comes."""
    monkeypatch.setattr(mariadb_engine._Killer, "interrupt", lambda self: None)
    deadline = datetime.now(UTC) + timedelta(seconds=0.5)
    started = time.monotonic()
    outcome = run_assignment(
        assignment("vacuum", deadline), target(mariadb_url, FaultPlan(slow={"vacuum": 30})), CancelToken()
    )
    elapsed = time.monotonic() - started
    assert 1.2 <= elapsed < 3.5, elapsed
    assert outcome.status == JobStatus.FAILED and "deadline exceeded" in outcome.error


def test_the_slow_fault_is_a_real_statement_and_is_noted(mariadb_url: URL, admin: Any, db: str) -> None:
    make_table(admin, db, "items", rows=200, fragment=False)
    run = target(mariadb_url, FaultPlan(slow={"analyze": 1.0}))
    started = time.monotonic()
    with in_thread(lambda: run_assignment(assignment("analyze"), run, CancelToken())) as box:
        wait_for(
            lambda: any(str(r[3]).startswith("SELECT SLEEP(1") for r in running_queries(admin, db)),
            timeout=5,
            message="no SLEEP on the server",
        )
    assert time.monotonic() - started >= 1.0
    assert box[0].status == JobStatus.COMPLETED, box[0].error
    report = box[0].report
    assert report is not None and report.objects_processed == 1
    assert note(report, "fault injected: slow:analyze=1 (SELECT SLEEP(1)")


def test_a_kill_from_another_session_fails_the_table_not_the_worker(mariadb_url: URL, admin: Any, db: str) -> None:
    """Not our cancel, not our deadline: a DBA's KILL QUERY is a failure of that table, named as such."""
    make_table(admin, db, "items", rows=200, fragment=False)
    url = mariadb_url.update_query_dict({"lock_wait_timeout": "60"})
    with (
        holding(mariadb_url, f"LOCK TABLES {q(db)}.items WRITE"),
        in_thread(lambda: run_assignment(assignment("vacuum"), target(url), CancelToken())) as box,
    ):
        (optimize,) = wait_for(
            lambda: [r for r in running_queries(admin, db) if str(r[3]).startswith("OPTIMIZE")],
            timeout=10,
            message="OPTIMIZE never started",
        )
        query(admin, f"KILL QUERY {int(optimize[0])}")
    outcome = box[0]
    assert outcome.status == JobStatus.FAILED
    assert outcome.error == (
        f"vacuum failed on 1 of 1 table(s): `{db}`.`items`: interrupted on the server by another session "
        "(Query execution was interrupted)"
    )
