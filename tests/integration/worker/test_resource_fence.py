"""The resource fence on SQLite targets, and how a waiting attempt reaches the heartbeat.

A second attempt on a target whose resource lock is held (here: a flock on ``<db>.dbmaint-lock`` taken by the
test, as an earlier attempt in a frozen worker would hold it) waits, says why, and runs normally once the lock
is free; a cancel or the deadline stops the wait.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.fake_manager_for_workers import fake_manager
from tests.support.worker import eventually, integrity, make_worker, wait_until
from worker_service.cancel import CancelToken
from worker_service.engines import SqliteEngine
from worker_service.engines.base import RunStatus
from worker_service.executor import Assignment, Executor, Outcome, run_assignment
from worker_service.stream import Hello, heartbeat_message, hello_message
from worker_service.targets import BoundTarget

WAITING = "waiting for the resource lock on target 'db' (held by another process, pid 4242 on a-host)"


def assignment(deadline: datetime | None = None, attempt: int = 2) -> Assignment:
    return Assignment(
        job_id="job-1",
        attempt=attempt,
        target="db",
        operation="vacuum",
        job_type=CHILD_JOB_TYPE,
        config={"operation": "vacuum", "target": "db"},
        deadline=deadline,
    )


def target(path: Path) -> BoundTarget:
    return BoundTarget("db", make_url(f"sqlite:///{path}"), SqliteEngine())


@contextmanager
def lock_held(database: Path) -> Iterator[None]:
    """The target's resource lock held elsewhere, its holder's line written as a worker writes it."""
    fd = os.open(f"{database}.dbmaint-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, b"pid 4242 on a-host\n")
        yield
    finally:
        os.close(fd)


def in_thread(run_it: object) -> tuple[threading.Thread, list[Outcome]]:
    box: list[Outcome] = []
    thread = threading.Thread(target=lambda: box.append(run_it()), daemon=True)  # type: ignore[operator]
    thread.start()
    return thread, box


def test_a_second_attempt_waits_for_the_resource_lock_then_runs_normally(sample_db: Path) -> None:
    status = RunStatus("db")
    with lock_held(sample_db):
        thread, box = in_thread(lambda: run_assignment(assignment(), target(sample_db), CancelToken(), status))
        wait_until(lambda: status.waiting_reason == WAITING, timeout=5, message=lambda: status.waiting_reason)
        thread.join(1.0)
        assert thread.is_alive() and not box, "the attempt ran while the lock was held"
    thread.join(10)
    assert not thread.is_alive(), "the attempt did not finish once the lock was free"
    outcome = box[0]
    assert outcome.status is JobStatus.COMPLETED, outcome.error
    assert outcome.report is not None and outcome.report.bytes_after < outcome.report.bytes_before
    assert any(n.startswith("resource lock: flock on ") and "after waiting" in n for n in outcome.report.notes)
    assert status.waiting_reason == ""
    assert integrity(sample_db) == ("ok", 10_000)


def test_a_cancel_stops_the_wait_for_the_resource_lock(small_db: Path) -> None:
    status, token = RunStatus("db"), CancelToken()
    with lock_held(small_db):
        thread, box = in_thread(lambda: run_assignment(assignment(), target(small_db), token, status))
        wait_until(lambda: status.waiting_reason == WAITING, timeout=5)
        token.cancel("operator said stop")
        thread.join(2)
        assert not thread.is_alive()
    assert (box[0].status, box[0].error) == (JobStatus.CANCELLED, "operator said stop")
    assert status.waiting_reason == ""


def test_the_deadline_stops_the_wait_for_the_resource_lock(small_db: Path) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=0.6)
    with lock_held(small_db):
        outcome = run_assignment(assignment(deadline), target(small_db), CancelToken(), RunStatus("db"))
    assert outcome.status is JobStatus.FAILED and "deadline exceeded" in outcome.error


def test_the_lock_is_released_when_the_operation_ends(small_db: Path) -> None:
    assert run_assignment(assignment(), target(small_db), CancelToken()).status is JobStatus.COMPLETED
    fd = os.open(f"{small_db}.dbmaint-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held
    finally:
        os.close(fd)


def test_a_missing_database_fails_without_creating_it_or_a_lock_file(tmp_path: Path) -> None:
    outcome = run_assignment(assignment(), target(tmp_path / "gone.db"), CancelToken())
    assert outcome.status is JobStatus.FAILED and "does not exist" in outcome.error
    assert list(tmp_path.iterdir()) == []


async def test_the_executor_reports_a_waiting_attempt_and_wakes_the_heartbeat(sample_db: Path) -> None:
    woken = threading.Event()

    executor = Executor({"db": target(sample_db)}, slots=1)
    executor.watch_status(woken.set)
    try:
        with lock_held(sample_db):
            future = executor.start(assignment())
            await asyncio.to_thread(wait_until, lambda: executor.waiting_reasons(), 5)
            assert executor.waiting_reasons() == {("job-1", 2): WAITING}
            # The reason is visible a moment before the slot thread calls back: wait for the call, bounded.
            assert await asyncio.to_thread(woken.wait, 5), "the heartbeat was not woken when the wait began"
            heartbeat = heartbeat_message(executor.running(), executor.waiting_reasons())
            [child] = heartbeat.heartbeat.running
            assert (child.job_id, child.attempt, child.waiting_reason) == ("job-1", 2, WAITING)
            woken.clear()
        outcome = await asyncio.wait_for(future, 10)
        assert outcome.status is JobStatus.COMPLETED
        assert await asyncio.to_thread(woken.wait, 5), "the heartbeat was not woken when the wait ended"
        assert executor.waiting_reasons() == {}
    finally:
        executor.close()


def test_hello_lists_the_waiting_reason_of_each_running_attempt() -> None:
    hello = Hello("w1", ("db",), 2, (("a", 1), ("b", 3)), "1.0", waiting={("b", 3): WAITING})
    running = hello_message(hello).hello.running
    assert [(c.job_id, c.attempt, c.waiting_reason) for c in running] == [("a", 1, ""), ("b", 3, WAITING)]


@pytest.mark.parametrize("holder_line", [b"", b"garbage"])
def test_a_lock_file_without_a_holder_line_still_gives_a_reason(small_db: Path, holder_line: bytes) -> None:
    fd = os.open(f"{small_db}.dbmaint-lock", os.O_RDWR | os.O_CREAT, 0o644)
    status, token = RunStatus("db"), CancelToken()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, holder_line)
        thread, _ = in_thread(lambda: run_assignment(assignment(), target(small_db), token, status))
        wait_until(lambda: status.waiting_reason, timeout=5)
        assert status.waiting_reason == "waiting for the resource lock on target 'db' (held by another process)"
        token.cancel("done")
        thread.join(2)
        assert not thread.is_alive(), "the cancel did not end the wait for the lock"
    finally:
        os.close(fd)


def waiting_reasons(message: pb.Heartbeat | pb.Hello) -> dict[tuple[str, int], str]:
    return {(r.job_id, r.attempt): r.waiting_reason for r in message.running}


async def test_the_worker_sends_a_heartbeat_with_the_reason_as_soon_as_a_wait_starts_and_ends(
    sample_db: Path,
) -> None:
    reason = WAITING.replace("'db'", "'orders'")

    async with fake_manager(heartbeat_interval=30.0) as server:  # no heartbeat from the timer in this test
        worker = make_worker(server.address, {"orders": sample_db})
        runner = asyncio.create_task(worker.run())
        stream = await eventually(lambda: server.manager.streams and server.manager.streams[0])
        with lock_held(sample_db):
            await stream.assign("job-1", "orders")
            # (Each stream also carries a heartbeat right after the Hello: look for the one the wait sent.)
            await eventually(
                lambda: any(waiting_reasons(b) == {("job-1", 1): reason} for b in stream.heartbeats),
                timeout=3,
                message="a heartbeat at once",
            )
            await stream.drop()  # the next Hello lists the waiting attempt with its reason
            second = await eventually(lambda: len(server.manager.streams) > 1 and server.manager.streams[1])
            assert waiting_reasons(second.hello) == {("job-1", 1): reason}
        await eventually(
            lambda: any(waiting_reasons(b) == {("job-1", 1): ""} for b in second.heartbeats),
            timeout=3,
            message="a heartbeat when it ends",
        )
        result = await eventually(lambda: second.result_for("job-1"), timeout=10)
        assert result.status == pb.JOB_STATUS_COMPLETED
        await worker.shutdown()
        assert await runner == 0
