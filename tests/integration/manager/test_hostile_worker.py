"""A worker that sends nonsense on its stream cannot change any job it does not hold: results for children it
was never given, stale and made-up attempts, statuses a result cannot have, out-of-order messages and a flood
of heartbeats all leave the honest worker's children exactly as they were. Nor can it stop the manager: NUL
and other control characters in its Hello and results are refused or sanitized. Both job stores."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.exc import DataError

from dbmaint.v1 import maintenance_pb2 as pb
from manager_service.domain import ChildOutcome
from manager_service.store import SQLAlchemyJobStore
from tests.support.manager import Manager, eventually, running_manager

VACUUM, ANALYZE = pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE


def _result(job_id: str, attempt: int, status: int = pb.JOB_STATUS_COMPLETED, error: str = "") -> pb.Result:
    return pb.Result(job_id=job_id, attempt=attempt, status=status, error=error)


async def test_a_hostile_worker_changes_nothing_it_does_not_hold(tmp_path: Path, db_url: str) -> None:
    async with running_manager(tmp_path, database_url=db_url) as m:
        honest = await m.connected_worker("honest", ["t1", "t2"], slots=2)
        hostile = await m.connected_worker("hostile", ["t3"], slots=4, accepts_batches=True)
        created = await m.create(["t1", "t2"], [VACUUM, ANALYZE])
        running = await honest.wait_assignments(2)
        before = {c.id: c for c in (await m.get(created.parent.id)).children}
        parent_before = await m.job(created.parent.id)

        # Results for children it was never given, at the right attempt, a stale one and made-up ones.
        for a in running:
            await hostile.write(pb.WorkerMessage(result=_result(a.job_id, a.attempt)))
            await hostile.write(pb.WorkerMessage(result=_result(a.job_id, a.attempt + 1, pb.JOB_STATUS_FAILED)))
            await hostile.write(pb.WorkerMessage(result=_result(a.job_id, 0, pb.JOB_STATUS_CANCELLED)))
        pending = [c.id for c in created.children if c.id not in {a.job_id for a in running}]
        batch = [_result(job_id, 1) for job_id in pending] + [_result("no-such-job", 1), _result("", -5)]
        await hostile.write(pb.WorkerMessage(results=pb.ResultBatch(results=batch)))
        # Statuses a result cannot carry.
        for status in (pb.JOB_STATUS_PENDING, pb.JOB_STATUS_RUNNING, pb.JOB_STATUS_UNSPECIFIED, 42):
            await hostile.write(pb.WorkerMessage(result=_result(running[0].job_id, 1, status)))
        # Heartbeats claiming the honest worker's children, a flood of them, and a second Hello.
        claim = [pb.RunningChild(job_id=a.job_id, attempt=a.attempt) for a in running]
        for _ in range(2_000):
            await hostile.write(pb.WorkerMessage(heartbeat=pb.Heartbeat(running=claim)))
        await hostile.write(hostile.hello(running=[(a.job_id, a.attempt) for a in running]))
        # A message round trip on the same stream: every message above was handled before this one.
        await hostile.write(pb.WorkerMessage(draining=pb.Draining(reason="probe")))
        await eventually(
            lambda: _draining(m, "hostile"), message="the hostile worker's draining notice was handled"
        )

        after = {c.id: c for c in (await m.get(created.parent.id)).children}
        assert after == before
        assert await m.job(created.parent.id) == parent_before
        assert hostile.assignments == []  # it serves t3 only: it never held anything here

        # The honest worker finishes its children and the rest, each attempt 1.
        for a in running:
            await honest.complete(a)
        for a in (await honest.wait_assignments(4))[2:]:
            await honest.complete(a)
        done = await eventually(lambda: _terminal(m, created.parent.id))
        assert done.job.status == pb.JOB_STATUS_COMPLETED
        assert {(c.status, c.attempt, c.worker_id) for c in done.children} == {
            (pb.JOB_STATUS_COMPLETED, 1, "honest")
        }
        health = health_pb2_grpc.HealthStub(m.channel)
        status = (await health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.SERVING


async def test_nul_and_control_characters_from_a_worker_are_sanitized_and_the_manager_keeps_running(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manager_service")

    async with running_manager(tmp_path, database_url=db_url) as m:
        # A Hello whose worker id holds a NUL is refused, naming the field.
        impostor = m.worker("evil\x00worker", ["t1"])
        await impostor.open()
        assert await impostor.status() == grpc.StatusCode.INVALID_ARGUMENT
        assert "hello.worker_id" in await impostor.details()

        hostile = await m.connected_worker("hostile", ["t1", "t2"], slots=2, accepts_batches=True)
        created = await m.create(["t1", "t2"], [VACUUM])
        first, second = await hostile.wait_assignments(2)
        # A result for a job id holding a NUL (no such child can exist), then text full of control
        # characters in the error, the engine and the notes.
        await hostile.write(pb.WorkerMessage(result=_result("x\x00y", 1, pb.JOB_STATUS_FAILED, "\x00")))
        await hostile.write(
            pb.WorkerMessage(
                results=pb.ResultBatch(
                    results=[
                        pb.Result(
                            job_id=first.job_id,
                            attempt=first.attempt,
                            status=pb.JOB_STATUS_FAILED,
                            error="disk\x00on fire\x1b[31m\r\n\tline 2\x7f\x85",
                            result=pb.OperationResult(engine="sqlite\x00", notes=["a\x00b"]),
                        ),
                        pb.Result(
                            job_id=second.job_id,
                            attempt=second.attempt,
                            status=pb.JOB_STATUS_COMPLETED,
                            result=pb.OperationResult(engine="\x00", notes=["ok\n", "\x00" * 10]),
                        ),
                    ]
                )
            )
        )
        done = await eventually(lambda: _terminal(m, created.parent.id), timeout=10)
        children = {c.id: c for c in done.children}
        failed, completed = children[first.job_id], children[second.job_id]
        assert failed.status == pb.JOB_STATUS_FAILED
        assert failed.error == "disk\ufffdon fire\ufffd[31m\ufffd\n\tline 2\ufffd\ufffd"
        assert (failed.result.engine, list(failed.result.notes)) == ("sqlite\ufffd", ["a\ufffdb"])
        assert completed.status == pb.JOB_STATUS_COMPLETED
        assert (completed.result.engine, list(completed.result.notes)) == ("\ufffd", ["ok\n", "\ufffd" * 10])
        status = (await m.health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.SERVING

        # The stream of the hostile worker is still open and the manager still dispatches to it.
        more = await m.create(["t1"], [ANALYZE])
        third = (await hostile.wait_assignments(3))[2]
        await hostile.complete(third)
        assert (await eventually(lambda: _terminal(m, more.parent.id))).job.status == pb.JOB_STATUS_COMPLETED

        # What only reaches the log is sanitized too: no escape sequence for an operator's terminal.
        await hostile.drain("bye\x1b[2J\x00")
        await eventually(lambda: _draining(m, "hostile"), message="the draining notice was handled")
        assert "worker hostile is draining (bye\ufffd[2J\ufffd)" in caplog.text


async def test_nul_and_control_characters_in_client_requests_are_refused_or_sanitized(
    tmp_path: Path, db_url: str
) -> None:
    async with running_manager(tmp_path, database_url=db_url) as m:
        calls = {
            "id": [
                lambda bad: m.api.GetJob(pb.GetJobRequest(id=bad)),
                lambda bad: m.api.CancelJob(pb.CancelJobRequest(id=bad)),
                lambda bad: _first_of(m.api.WatchJob(pb.WatchJobRequest(id=bad))),
            ],
            "parent_id": [lambda bad: m.api.ListJobs(pb.ListJobsRequest(parent_id=bad))],
            "worker_id": [lambda bad: m.api.DrainWorker(pb.DrainWorkerRequest(worker_id=bad))],
            "request_id": [
                lambda bad: m.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["t1"], request_id=bad))
            ],
        }
        for field, requests in calls.items():
            for call in requests:
                for bad in ("a\x00b", "\x00", "job\x1b", "job\x7f", "job\x9b"):
                    try:
                        await call(bad)
                    except grpc.aio.AioRpcError as error:
                        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, bad, error)
                        assert error.details().startswith(f"{field}:"), (field, bad, error.details())
                    else:
                        raise AssertionError(f"{field}={bad!r} was accepted")

        # A cancel reason is stored: its control characters are replaced, the cancel itself goes through.
        created = await m.create(["t1"], [VACUUM])
        reply = await m.api.CancelJob(pb.CancelJobRequest(id=created.parent.id, reason="stop\x00now\x1b"))
        assert reply.job.status == pb.JOB_STATUS_CANCELLED
        assert (await m.job(created.children[0].id)).error == "stop\ufffdnow\ufffd"
        status = (await m.health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.SERVING


async def test_a_result_the_store_refuses_fails_its_child_and_the_manager_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: whatever the sanitizing misses, one value the store refuses (a DataError) must cost
    only its own child, never the manager, nor the other results of the same group commit."""
    apply_batch = SQLAlchemyJobStore.apply_batch

    def refusing(self: SQLAlchemyJobStore, outcomes: Sequence[ChildOutcome], starts: Any) -> Any:
        if any(o.error == "poison" for o in outcomes):
            raise DataError("UPDATE jobs SET error=...", {}, ValueError("simulated: the store refuses this value"))
        return apply_batch(self, outcomes, starts)

    monkeypatch.setattr(SQLAlchemyJobStore, "apply_batch", refusing)

    async with running_manager(tmp_path) as m:
        worker = await m.connected_worker("w1", ["t1", "t2"], slots=2, accepts_batches=True)
        created = await m.create(["t1", "t2"], [VACUUM])
        first, second = await worker.wait_assignments(2)
        batch = [
            _result(first.job_id, first.attempt, pb.JOB_STATUS_FAILED, "poison"),
            _result(second.job_id, second.attempt),
        ]
        await worker.write(pb.WorkerMessage(results=pb.ResultBatch(results=batch)))
        done = await eventually(lambda: _terminal(m, created.parent.id), timeout=5)
        children = {c.id: c for c in done.children}
        assert children[second.job_id].status == pb.JOB_STATUS_COMPLETED
        assert children[first.job_id].status == pb.JOB_STATUS_FAILED
        assert children[first.job_id].error  # says the result could not be stored
        status = (await m.health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.SERVING


async def _first_of(stream: Any) -> Any:
    try:
        async for message in stream:
            return message
    finally:
        stream.cancel()


async def _draining(m: Manager, worker_id: str) -> bool:
    reply = await m.api.ListWorkers(pb.ListWorkersRequest())
    return any(w.worker_id == worker_id and w.draining for w in reply.workers)


async def _terminal(m: Manager, parent_id: str) -> pb.GetJobResponse | None:
    reply: pb.GetJobResponse = await m.get(parent_id)
    return reply if reply.job.status in (pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED) else None
