"""A worker that sends nonsense on its stream cannot change any job it does not hold: results for children it
was never given, stale and made-up attempts, statuses a result cannot have, out-of-order messages and a flood
of heartbeats all leave the honest worker's children exactly as they were."""

from __future__ import annotations

from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbmaint.v1 import maintenance_pb2 as pb

from .helpers import Manager, eventually, run_async, running_manager

VACUUM, ANALYZE = pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE


def _result(job_id: str, attempt: int, status: int = pb.JOB_STATUS_COMPLETED, error: str = "") -> pb.Result:
    return pb.Result(job_id=job_id, attempt=attempt, status=status, error=error)


def test_a_hostile_worker_changes_nothing_it_does_not_hold(tmp_path: Path) -> None:
    async def body() -> None:
        async with running_manager(tmp_path) as m:
            honest = await m.connected_worker("honest", ["t1", "t2"], slots=2)
            hostile = await m.connected_worker("hostile", ["t3"], slots=4, accepts_batches=True)
            created = await m.create(["t1", "t2"], [VACUUM, ANALYZE])
            running = await honest.wait_assignments(2)
            before = {c.id: c for c in (await m.get(created.parent.id)).children}
            parent_before = await m.job(created.parent.id)

            # Results for children it was never given, at the right attempt, a stale one and made-up ones.
            for a in running:
                await hostile.write(pb.WorkerMessage(result=_result(a.job_id, a.attempt)))
                await hostile.write(
                    pb.WorkerMessage(result=_result(a.job_id, a.attempt + 1, pb.JOB_STATUS_FAILED))
                )
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

    run_async(body())


async def _draining(m: Manager, worker_id: str) -> bool:
    reply = await m.api.ListWorkers(pb.ListWorkersRequest())
    return any(w.worker_id == worker_id and w.draining for w in reply.workers)


async def _terminal(m: Manager, parent_id: str) -> pb.GetJobResponse | None:
    reply: pb.GetJobResponse = await m.get(parent_id)
    return reply if reply.job.status in (pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED) else None
