"""Delivery rules of the manager's fleet core through its real gRPC surface (an in-process manager, fake
workers that do exactly what they are told): acknowledgements, slots, cancels across reconnects, sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.manager import Manager, eventually, running_manager

VACUUM, ANALYZE = pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE


async def _workers(m: Manager) -> list[str]:
    reply = await m.api.ListWorkers(pb.ListWorkersRequest())
    return [w.worker_id for w in reply.workers]


async def test_every_result_is_acknowledged_once_committed_applied_or_stale(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["t1"], accepts_acks=True)
        welcome = w.messages[0].welcome
        assert welcome.sends_acks
        created = await m.create(["t1"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        await w.complete(a)
        await w.complete(a)  # a duplicate on the same stream: already applied, acknowledged all the same
        await w.send_result(a.job_id, a.attempt + 5)  # stale
        await eventually(lambda: len(w.acks) >= 3, message=f"three acks (got {w.acks})")
        assert sorted(w.acks) == sorted([(a.job_id, 1), (a.job_id, 1), (a.job_id, 6)])
        assert (await m.job(created.parent.id)).status == pb.JOB_STATUS_COMPLETED


async def test_a_worker_that_does_not_accept_acks_gets_none(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["t1"])
        assert not w.messages[0].welcome.sends_acks
        created = await m.create(["t1"], [VACUUM, ANALYZE])
        (a,) = await w.wait_assignments(1)
        await w.complete(a)
        (_, b) = await w.wait_assignments(2)
        await w.complete(b)
        await eventually(lambda: _completed(m, created.parent.id))
        kinds = {message.WhichOneof("kind") for message in w.messages}
        assert not kinds & {"result_ack", "result_acks"}


async def test_duplicate_results_in_one_batch_free_one_slot(tmp_path: Path) -> None:
    async with running_manager(tmp_path, lease_timeout=30.0, heartbeat_interval=5.0) as m:
        targets = [f"t{i}" for i in range(6)]
        w = await m.connected_worker("w1", targets, slots=2, accepts_batches=True)
        await m.create(targets, [VACUUM])
        first, _ = await w.wait_assignments(2)
        # The same result three times in one batch: one slot is free, not three.
        await w.complete_all([(first.job_id, first.attempt)] * 3)
        await w.wait_assignments(3)
        await m.dispatch_barrier("after-duplicates")
        assert len(w.assignments) == 3 and w.max_outstanding <= 2, [a.job_id for a in w.assignments]


async def test_a_heartbeat_that_crosses_a_late_assignment_does_not_free_its_slot(tmp_path: Path) -> None:
    """The lease of an attempt lapses while its worker stays connected, and a heartbeat that was sent before
    the assignment arrived (so it lists nothing) reaches the manager: the attempt may well be running, so its
    slot stays taken until its result says otherwise."""

    async with running_manager(tmp_path, lease_timeout=1.0, heartbeat_interval=0.25) as m:
        w = await m.connected_worker("w1", ["t1", "t2"], slots=1)
        created = await m.create(["t1", "t2"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        await eventually(lambda: [(c.job_id, c.attempt) for c in w.cancels] == [(a.job_id, a.attempt)])
        await w.heartbeat(running=[])  # crossed the assignment on the wire
        await m.dispatch_barrier("after-crossing")
        assert len(w.assignments) == 1, "a second assignment while the first attempt may still run"
        await w.complete(a, "cancelled", "lease lapsed")  # now it really ended
        await w.wait_assignments(2)
        assert created.parent.id


async def test_a_cancel_stored_while_the_holder_is_away_reaches_it_when_it_comes_back(tmp_path: Path) -> None:
    async with running_manager(tmp_path, lease_timeout=5.0, heartbeat_interval=0.5) as m:
        w = await m.connected_worker("w1", ["t1"])
        created = await m.create(["t1"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        await w.close()
        await eventually(lambda: _gone(m, "w1"), message="the first stream is gone")
        reply = await m.api.CancelJob(pb.CancelJobRequest(id=created.parent.id, reason="stop it"))
        assert reply.job.cancel_requested
        back = await m.connected_worker("w1", ["t1"], running=[(a.job_id, a.attempt)])
        await eventually(lambda: bool(back.cancels), message="the stored cancel is sent on the new stream")
        assert [(c.job_id, c.attempt, c.reason) for c in back.cancels] == [(a.job_id, a.attempt, "stop it")]
        await back.complete(a, "cancelled", "stop it")
        done = await eventually(lambda: _status(m, created.parent.id, pb.JOB_STATUS_CANCELLED))
        assert done


async def test_streams_that_hang_up_at_any_moment_leave_no_session(tmp_path: Path) -> None:
    """Hang up right after the Hello, while the Welcome is on its way, after reading it: none stays listed,
    and every worker id is free again for a real worker."""

    async with running_manager(tmp_path) as m:
        for round_ in range(100):
            fakes = [m.worker(f"ghost-{round_}-{i}", ["t1"]) for i in range(3)]
            await fakes[0].open()
            fakes[0].call.cancel()  # before anything came back
            await fakes[1].open()
            await asyncio.sleep(0)
            fakes[1].call.cancel()  # while the Welcome is sent
            await fakes[2].connect()
            await fakes[2].close()  # after the Welcome
        await eventually(lambda: _no_workers(m), timeout=10, message="every ghost session ended")
        again = await m.connected_worker("ghost-0-1", ["t1"])
        created = await m.create(["t1"], [VACUUM])
        (a,) = await again.wait_assignments(1)
        assert (a.job_id, a.attempt) == (created.children[0].id, 1)


async def test_a_standalone_hello_with_a_worker_id_in_use_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        first = await m.connected_worker("w1", ["t1"])
        twin = m.worker("w1", ["t1"])
        await twin.open()
        assert await twin.status() == grpc.StatusCode.ALREADY_EXISTS
        await m.create(["t1"], [VACUUM])
        await first.wait_assignments(1)
        assert await _workers(m) == ["w1"]


async def _gone(m: Manager, worker_id: str) -> bool:
    return worker_id not in await _workers(m)


async def _no_workers(m: Manager) -> bool:
    return not await _workers(m)


async def _completed(m: Manager, job_id: str) -> bool:
    return bool((await m.job(job_id)).status == pb.JOB_STATUS_COMPLETED)


async def _status(m: Manager, job_id: str, status: int) -> bool:
    return bool((await m.job(job_id)).status == status)
