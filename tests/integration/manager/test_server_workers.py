"""The gRPC server in-process, driven by fake workers over WorkerService.Connect."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.manager import FakeWorker, Manager, eventually, running_manager

VACUUM, ANALYZE, REINDEX = pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE, pb.OPERATION_REINDEX


async def progress_is(manager: Manager, parent_id: str, **expected: int) -> bool:
    progress = (await manager.job(parent_id)).progress
    return all(getattr(progress, k) == v for k, v in expected.items())


async def wait_progress(manager: Manager, parent_id: str, timeout: float = 5.0, **expected: int) -> None:
    await eventually(lambda: progress_is(manager, parent_id, **expected), timeout=timeout, message=str(expected))


async def test_welcome_carries_settings(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        welcome = await (m.worker("w1", ["db1"])).connect()
        assert welcome.lease_timeout.ToNanoseconds() == 2_000_000_000
        assert welcome.heartbeat_interval.ToNanoseconds() == 500_000_000
        assert welcome.manager_id


async def test_assignment_content(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["db1"])
        created = await m.create(["db1"], [ANALYZE])
        (a,) = await w.wait_assignments(1)
        child = created.children[0]
        assert (a.job_id, a.attempt, a.target, a.operation) == (child.id, 1, "db1", ANALYZE)
        assert a.job_type == "database_maintenance_operation"
        assert a.parent_id == created.parent.id
        assert a.config == child.config and '"operation":"analyze"' in a.config
        assert a.deadline.seconds > 0
        job = await m.job(child.id)
        assert job.status == pb.JOB_STATUS_RUNNING and job.worker_id == "w1"


async def test_never_more_assignments_than_slots(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", [f"db{i}" for i in range(5)], slots=2)
        created = await m.create([f"db{i}" for i in range(5)], [VACUUM])
        pid = created.parent.id
        await w.wait_assignments(2)
        await m.dispatch_barrier("slots")
        await wait_progress(m, pid, running=2, pending=3)
        assert len(w.assignments) == 2
        workers = await m.api.ListWorkers(pb.ListWorkersRequest())
        (info,) = [x for x in workers.workers if x.worker_id == "w1"]
        assert sorted(info.running_job_ids) == sorted(a.job_id for a in w.assignments)
        # each result frees exactly one slot; the worker never holds more than two
        done = 0
        while done < 5:
            await eventually(lambda: w.outstanding, message="an outstanding assignment")
            job_id, attempt = next(iter(w.outstanding.items()))
            await w.send_result(job_id, attempt)
            done += 1
            await wait_progress(m, pid, succeeded=done)
        assert len(w.assignments) == 5
        assert w.max_outstanding == 2
        assert (await m.job(pid)).status == pb.JOB_STATUS_COMPLETED


async def test_one_operation_per_target_in_order(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        first = await m.create(["shared"], [VACUUM, ANALYZE, REINDEX])
        second = await m.create(["shared"], [ANALYZE])
        a = await m.connected_worker("a", ["shared"], slots=3)
        b = await m.connected_worker("b", ["shared"], slots=3)
        expected = [c.id for c in first.children] + [c.id for c in second.children]
        order = []
        for step in range(len(expected)):
            await eventually(lambda step=step: len(a.assignments) + len(b.assignments) > step)
            await m.dispatch_barrier(f"order{step}")
            received = a.assignments + b.assignments
            assert len(received) == step + 1, "a second operation started on a busy target"
            holder = a if a.outstanding else b
            assert len(a.outstanding) + len(b.outstanding) == 1
            (job_id, attempt) = next(iter(holder.outstanding.items()))
            order.append(job_id)
            await holder.send_result(job_id, attempt)
        assert order == expected
        for parent in (first.parent, second.parent):
            await eventually(
                lambda p=parent: _status_is(m, p.id, pb.JOB_STATUS_COMPLETED), message="parent completed"
            )


async def _status_is(m: Manager, job_id: str, status: int) -> bool:
    return (await m.job(job_id)).status == status


async def test_different_targets_run_in_parallel(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w1 = await m.connected_worker("w1", ["t1"])
        w2 = await m.connected_worker("w2", ["t2"])
        created = await m.create(["t1", "t2"], [VACUUM])
        (a1,) = await w1.wait_assignments(1)
        (a2,) = await w2.wait_assignments(1)
        assert {a1.target, a2.target} == {"t1", "t2"}
        await wait_progress(m, created.parent.id, running=2)


async def test_result_is_applied_once(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["t1", "t2"], slots=2)
        created = await m.create(["t1", "t2"], [VACUUM])
        pid = created.parent.id
        first, second = await w.wait_assignments(2)
        await w.complete(first)
        await wait_progress(m, pid, succeeded=1, running=1)
        before = await m.job(first.job_id)
        # the same (job_id, attempt) again, even with another status: ignored
        await w.complete(first)
        await w.complete(first, status="failed", error="should not count")
        # results on one stream are applied in order: once the next one shows, the repeats were handled
        await w.complete(second)
        await wait_progress(m, pid, succeeded=2)
        after = await m.job(first.job_id)
        assert after == before
        parent = await m.job(pid)
        assert (parent.progress.succeeded, parent.progress.failed) == (2, 0)
        assert parent.status == pb.JOB_STATUS_COMPLETED


async def test_stale_attempt_and_foreign_results_are_ignored(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["t1", "t2"], slots=2)
        other = await m.connected_worker("other", ["elsewhere"])
        created = await m.create(["t1", "t2"], [VACUUM])
        pid = created.parent.id
        held, probe = await w.wait_assignments(2)
        own = await m.create(["elsewhere"], [VACUUM])
        (own_assignment,) = await other.wait_assignments(1)

        await w.send_result(held.job_id, held.attempt + 1, "failed", "from the future")
        await w.send_result(held.job_id, held.attempt - 1, "failed", "from the past")
        await other.send_result(held.job_id, held.attempt, "failed", "not mine")
        await other.send_result(probe.job_id, probe.attempt, "failed", "not mine")
        # each stream is read in order: once the next result on it shows, the ones before were handled
        await other.complete(own_assignment)
        await w.complete(probe)
        await wait_progress(m, own.parent.id, succeeded=1)
        await wait_progress(m, pid, succeeded=1, running=1, failed=0)
        job = await m.job(held.job_id)
        assert job.status == pb.JOB_STATUS_RUNNING and job.attempt == 1 and job.worker_id == "w1"
        assert (await m.job(probe.job_id)).status == pb.JOB_STATUS_COMPLETED
        workers = {x.worker_id: x for x in (await m.api.ListWorkers(pb.ListWorkersRequest())).workers}
        assert list(workers["w1"].running_job_ids) == [held.job_id]
        await w.complete(held)
        await wait_progress(m, pid, succeeded=2, failed=0)


async def test_silent_worker_loses_its_child_after_the_lease(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        silent = await m.connected_worker("silent", ["t1"])
        alive = await m.connected_worker("alive", ["t2"])
        alive.start_heartbeats(0.2)
        created = await m.create(["t1", "t2"], [VACUUM])
        lost_child, kept_child = created.children
        (a1,) = await silent.wait_assignments(1)
        (k1,) = await alive.wait_assignments(1)
        assert (a1.job_id, a1.attempt, k1.job_id) == (lost_child.id, 1, kept_child.id)

        second = await m.connected_worker("second", ["t1"])
        (a2,) = await second.wait_assignments(1, timeout=6.0)
        assert (a2.job_id, a2.attempt) == (lost_child.id, 2)
        # the silent worker was told to stop its attempt
        assert [(c.job_id, c.attempt) for c in silent.cancels] == [(lost_child.id, 1)]
        # leased at the same moment, the heartbeating worker kept its child
        kept = await m.job(kept_child.id)
        assert kept.status == pb.JOB_STATUS_RUNNING and kept.attempt == 1 and kept.worker_id == "alive"
        # a late result of attempt 1 does not count; attempt 2 does
        await silent.complete(a1, status="failed", error="late")
        await second.complete(a2)
        await alive.complete(k1)
        await eventually(lambda: _status_is(m, created.parent.id, pb.JOB_STATUS_COMPLETED))
        job = await m.job(lost_child.id)
        assert job.status == pb.JOB_STATUS_COMPLETED and job.attempt == 2 and job.worker_id == "second"


@pytest.mark.parametrize("how", ["half-close", "cancel"])
async def test_a_closed_stream_keeps_its_children_until_the_lease_lapses_then_requeues_them(
    tmp_path: Path, how: str
) -> None:
    """The end of a stream says nothing about the statement it ran: the worker may come back (a link blip, a
    manager restart) and report it. So the child keeps its attempt until the lease lapses, and only then is
    re-queued; the target's resource lock keeps a later attempt waiting if the old one still runs."""

    async with running_manager(tmp_path, lease_timeout=2.0, heartbeat_interval=0.5) as m:
        first = await m.connected_worker("first", ["t1"])
        created = await m.create(["t1"], [VACUUM])
        (a1,) = await first.wait_assignments(1)
        if how == "half-close":
            await first.half_close()
            await eventually(lambda: first.ended, message="server ends the stream")
        else:
            await first.close()
        await eventually(lambda: _listed(m, "first", False), message="the session is gone")
        second = await m.connected_worker("second", ["t1"])
        job = await m.job(a1.job_id)
        assert (job.status, job.attempt, job.worker_id) == (pb.JOB_STATUS_RUNNING, 1, "first")
        assert second.assignments == []
        (a2,) = await second.wait_assignments(1, timeout=6.0)
        assert (a2.job_id, a2.attempt) == (a1.job_id, 2)
        await second.complete(a2)
        await eventually(lambda: _status_is(m, created.parent.id, pb.JOB_STATUS_COMPLETED))


async def test_a_worker_that_comes_back_within_the_lease_keeps_its_child_and_its_result_counts(
    tmp_path: Path,
) -> None:
    async with running_manager(tmp_path, lease_timeout=3.0, heartbeat_interval=0.5) as m:
        first = await m.connected_worker("w1", ["t1"])
        created = await m.create(["t1"], [VACUUM])
        (a1,) = await first.wait_assignments(1)
        await first.close()
        await eventually(lambda: _listed(m, "w1", False), message="the session is gone")
        again = await m.connected_worker("w1", ["t1"], running=[(a1.job_id, a1.attempt)])
        again.start_heartbeats(0.2)
        await asyncio.sleep(3.5)  # longer than the lease: only the new stream's heartbeats keep it
        job = await m.job(a1.job_id)
        assert (job.status, job.attempt, job.worker_id) == (pb.JOB_STATUS_RUNNING, 1, "w1")
        await again.complete(a1)
        done = await eventually(lambda: _status_is(m, created.parent.id, pb.JOB_STATUS_COMPLETED))
        assert done


async def _listed(m: Manager, worker_id: str, listed: bool) -> bool:
    reply = await m.api.ListWorkers(pb.ListWorkersRequest())
    return (worker_id in [w.worker_id for w in reply.workers]) == listed


async def test_a_result_sent_just_before_the_stream_ends_is_applied_not_rerun(tmp_path: Path) -> None:
    """The result was delivered: closing the stream right after it must not re-queue the child, even when it
    arrives while the committer is busy writing another result (the disconnect then waits for the lock)."""

    async with running_manager(tmp_path, lease_timeout=30.0, heartbeat_interval=5.0) as m:
        store = m.server._orchestrator._store  # type: ignore[union-attr]
        apply_batch = store.apply_batch
        writing = threading.Event()

        def slow_apply_batch(outcomes, starts):  # type: ignore[no-untyped-def]
            writing.set()
            time.sleep(0.3)  # a busy store: the next result lands while this write runs
            return apply_batch(outcomes, starts)

        a = await m.connected_worker("a", ["t1"])
        b = await m.connected_worker("b", ["t2"])
        await m.create(["t1", "t2"], [VACUUM])
        (job_a,) = await a.wait_assignments(1)
        (job_b,) = await b.wait_assignments(1)
        store.apply_batch = slow_apply_batch
        await b.send_result(job_b.job_id, job_b.attempt)
        assert await asyncio.to_thread(writing.wait, 5), "b's result was never written"  # it is being written now
        await a.send_result(job_a.job_id, job_a.attempt)
        await a.half_close()
        await eventually(lambda: a.ended, timeout=5, message="a's stream ended")

        async def a_done() -> bool:
            return (await m.job(job_a.job_id)).status != pb.JOB_STATUS_RUNNING

        await eventually(a_done, timeout=5)
        job = await m.job(job_a.job_id)
        assert (job.status, job.attempt) == (pb.JOB_STATUS_COMPLETED, 1), "a delivered result was re-queued"


async def _attempt_pending(m: Manager, job_id: str, attempt: int) -> bool:
    job = await m.job(job_id)
    return job.status == pb.JOB_STATUS_PENDING and job.attempt == attempt


async def test_child_fails_after_max_attempts(tmp_path: Path) -> None:
    async with running_manager(tmp_path, lease_timeout=1.0, heartbeat_interval=0.25, max_attempts=2) as m:
        created = await m.create(["t1"], [VACUUM])
        for attempt in (1, 2):
            w = await m.connected_worker(f"w{attempt}", ["t1"])
            (a,) = await w.wait_assignments(1, timeout=5.0)
            assert a.attempt == attempt
            await w.close()
        await eventually(lambda: _status_is(m, created.parent.id, pb.JOB_STATUS_FAILED))
        child = await m.job(created.children[0].id)
        assert child.status == pb.JOB_STATUS_FAILED and "2 of 2 attempts" in child.error
        assert "t1/vacuum" in (await m.job(created.parent.id)).error


async def test_second_hello_with_same_worker_id_is_refused(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await m.connected_worker("twin", ["db1"])
        clone = m.worker("twin", ["db2"])
        await clone.open()
        assert await clone.status() == grpc.StatusCode.ALREADY_EXISTS
        assert "twin" in await clone.details()
        workers = await m.api.ListWorkers(pb.ListWorkersRequest())
        (info,) = workers.workers
        assert (info.worker_id, list(info.targets)) == ("twin", ["db1"])
        # the first stream is untouched and still gets work
        created = await m.create(["db1"], [VACUUM])
        (a,) = await m.workers[0].wait_assignments(1)
        assert a.job_id == created.children[0].id


@pytest.mark.parametrize(
    ("first", "field"),
    [
        pytest.param(pb.WorkerMessage(heartbeat=pb.Heartbeat()), "hello", id="heartbeat-first"),
        pytest.param(pb.WorkerMessage(result=pb.Result(job_id="x", attempt=1)), "hello", id="result-first"),
        pytest.param(pb.WorkerMessage(), "hello", id="empty-message"),
        pytest.param(
            pb.WorkerMessage(hello=pb.Hello(worker_id="", targets=["db1"], slots=1)), "worker_id", id="no-id"
        ),
        pytest.param(
            pb.WorkerMessage(hello=pb.Hello(worker_id="w", targets=[], slots=1)), "targets", id="no-targets"
        ),
        pytest.param(
            pb.WorkerMessage(hello=pb.Hello(worker_id="w", targets=["db1"], slots=0)), "slots", id="zero-slots"
        ),
        pytest.param(
            pb.WorkerMessage(hello=pb.Hello(worker_id="w", targets=["bad name"], slots=1)),
            "targets[0]",
            id="bad-target",
        ),
    ],
)
async def test_bad_first_message_is_invalid_argument(tmp_path: Path, first: pb.WorkerMessage, field: str) -> None:
    async with running_manager(tmp_path) as m:
        fake = m.worker("w", ["db1"])
        await fake.open(first)
        assert await fake.status() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in await fake.details()
        assert not any(msg.WhichOneof("kind") == "welcome" for msg in fake.messages)
        assert (await m.api.ListWorkers(pb.ListWorkersRequest())).workers == []


async def test_cancel_of_running_child_sends_cancel_to_worker(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["t1", "t2"], slots=1)
        created = await m.create(["t1", "t2"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        response = await m.api.CancelJob(pb.CancelJobRequest(id=a.job_id, reason="too slow"))
        assert response.job.status == pb.JOB_STATUS_RUNNING and response.job.cancel_requested
        await eventually(lambda: w.cancels, message="a Cancel message")
        (cancel,) = w.cancels
        assert (cancel.job_id, cancel.attempt, cancel.reason) == (a.job_id, a.attempt, "too slow")
        await w.complete(a, status="cancelled", error="interrupted")
        (b,) = (await w.wait_assignments(2))[1:]
        assert b.job_id != a.job_id  # the sibling still runs
        await w.complete(b)
        await eventually(lambda: _status_is(m, created.parent.id, pb.JOB_STATUS_CANCELLED))
        assert (await m.job(a.job_id)).status == pb.JOB_STATUS_CANCELLED


async def test_cancel_of_parent_interrupts_running_and_stops_pending(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["t1"], slots=1)
        created = await m.create(["t1"], [VACUUM, ANALYZE, REINDEX])
        (a,) = await w.wait_assignments(1)
        response = await m.api.CancelJob(pb.CancelJobRequest(id=created.parent.id))
        assert response.job.cancel_requested and response.job.status == pb.JOB_STATUS_RUNNING
        await eventually(lambda: w.cancels, message="a Cancel message")
        assert w.cancels[0].job_id == a.job_id
        got = await m.get(created.parent.id)
        assert [c.status for c in got.children[1:]] == [pb.JOB_STATUS_CANCELLED] * 2
        await w.complete(a)  # it finished first: status stays honest
        await eventually(lambda: _status_is(m, created.parent.id, pb.JOB_STATUS_CANCELLED))
        await m.dispatch_barrier("cancelled")
        assert len(w.assignments) == 1  # the cancelled siblings never ran
        got = await m.get(created.parent.id)
        assert got.children[0].status == pb.JOB_STATUS_COMPLETED
        assert got.job.progress.succeeded == 1 and got.job.progress.cancelled == 2


async def test_draining_worker_gets_no_new_work(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["t1", "t2"], slots=1)
        created = await m.create(["t1", "t2"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        await w.drain()
        await eventually(lambda: _worker_draining(m, "w1"), message="worker draining")
        await w.complete(a)
        await wait_progress(m, created.parent.id, succeeded=1, pending=1)
        await m.dispatch_barrier("drain")
        assert len(w.assignments) == 1
        pending = (await m.get(created.parent.id)).children[1]
        assert "draining" in pending.waiting_reason


async def _worker_draining(m: Manager, worker_id: str) -> bool:
    workers = await m.api.ListWorkers(pb.ListWorkersRequest())
    return any(w.worker_id == worker_id and w.draining for w in workers.workers)


async def test_list_workers_and_unserved_targets(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["served", "idle"], slots=3)
        created = await m.create(["served", "orphan"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        assert a.target == "served"
        workers = await m.api.ListWorkers(pb.ListWorkersRequest())
        (info,) = workers.workers
        assert info.worker_id == "w1"
        assert list(info.targets) == ["idle", "served"]
        assert info.slots == 3
        assert list(info.running_job_ids) == [a.job_id]
        assert not info.draining and info.peer
        assert info.connected_at.seconds > 0 and info.last_heartbeat.seconds > 0
        assert list(workers.unserved_targets) == ["orphan"]

        orphan = (await m.get(created.parent.id)).children[1]
        assert orphan.status == pb.JOB_STATUS_PENDING
        assert "orphan" in orphan.waiting_reason and "no connected worker" in orphan.waiting_reason
        assert (await m.job(orphan.id)).waiting_reason == orphan.waiting_reason
        running = await m.job(a.job_id)
        assert running.waiting_reason == ""

        late = await m.connected_worker("late", ["orphan"])
        await late.wait_assignments(1)
        workers = await m.api.ListWorkers(pb.ListWorkersRequest())
        assert list(workers.unserved_targets) == []
        assert sorted(x.worker_id for x in workers.workers) == ["late", "w1"]


async def test_many_workers_many_targets_all_complete(tmp_path: Path) -> None:
    """A busier run: every child completes exactly once and no worker exceeds its slots."""

    async with running_manager(tmp_path) as m:
        targets = [f"db{i}" for i in range(6)]
        fakes = [await m.connected_worker(f"w{i}", targets, slots=2) for i in range(3)]
        created = [await m.create(targets, [VACUUM, ANALYZE]) for _ in range(2)]

        async def serve(fake: FakeWorker) -> None:
            while not fake.ended:
                if fake.outstanding:
                    job_id, attempt = next(iter(fake.outstanding.items()))
                    await fake.send_result(job_id, attempt)
                await asyncio.sleep(0.005)

        servers = [asyncio.create_task(serve(f)) for f in fakes]
        try:
            for c in created:
                await eventually(lambda c=c: _status_is(m, c.parent.id, pb.JOB_STATUS_COMPLETED), timeout=10.0)
        finally:
            for s in servers:
                s.cancel()
            await asyncio.gather(*servers, return_exceptions=True)
        assigned = [a.job_id for f in fakes for a in f.assignments]
        assert sorted(assigned) == sorted(ch.id for c in created for ch in c.children)
        assert all(f.max_outstanding <= 2 for f in fakes)


async def test_hello_listing_a_child_it_does_not_hold_gets_cancel_and_keeps_the_slot(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        stray = ("0e2f7d64-0000-4000-8000-000000000000", 3)
        w = m.worker("w1", ["db1"], slots=1)
        await w.open(w.hello(running=[stray]))
        await eventually(lambda: w.cancels, message="a Cancel for the stray child")
        assert [(c.job_id, c.attempt) for c in w.cancels] == [stray]
        created = await m.create(["db1"], [VACUUM])
        await m.dispatch_barrier("stray")
        assert w.assignments == []  # its only slot is still busy with the stray child
        pending = (await m.get(created.parent.id)).children[0]
        assert "free slot" in pending.waiting_reason
        await w.heartbeat(running=[])  # it stopped: the slot is free again
        (a,) = await w.wait_assignments(1)
        assert a.job_id == created.children[0].id


async def test_waiting_reason_for_busy_target(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["db1"], slots=2)
        created = await m.create(["db1"], [VACUUM, ANALYZE])
        (a,) = await w.wait_assignments(1)
        waiting = (await m.get(created.parent.id)).children[1]
        assert waiting.status == pb.JOB_STATUS_PENDING
        assert "db1" in waiting.waiting_reason and a.job_id in waiting.waiting_reason
        assert "busy" in waiting.waiting_reason


@pytest.mark.parametrize(
    ("hello", "field"),
    [
        pytest.param(pb.Hello(worker_id="w" * 256, targets=["db1"], slots=1), "worker_id", id="id-too-long"),
        pytest.param(pb.Hello(worker_id="w", targets=["db1"], slots=1025), "slots", id="too-many-slots"),
        pytest.param(pb.Hello(worker_id="w", targets=["db1"], slots=-1), "slots", id="negative-slots"),
    ],
)
async def test_hello_out_of_bounds_is_invalid_argument(tmp_path: Path, hello: pb.Hello, field: str) -> None:
    async with running_manager(tmp_path) as m:
        fake = m.worker("w", ["db1"])
        await fake.open(pb.WorkerMessage(hello=hello))
        assert await fake.status() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in await fake.details()


async def test_a_worker_that_accepts_batches_gets_a_turn_of_assignments_in_one_message(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        targets = [f"t{i}" for i in range(6)]
        batching = await m.connected_worker("w1", targets, slots=6, accepts_batches=True)
        created = await m.create(targets, [VACUUM])
        assignments = await batching.wait_assignments(6)
        kinds = [msg.WhichOneof("kind") for msg in batching.messages[1:]]
        # One dispatch turn started all six: they travel together, not as six messages.
        assert kinds == ["assignments"], kinds
        assert sorted(a.target for a in assignments) == targets
        # A ResultBatch is applied result by result, each fenced: a stale attempt and a child this worker
        # does not hold change nothing, the rest count.
        stale = (assignments[0].job_id, assignments[0].attempt + 1)
        foreign = ("not-a-job", 1)
        await batching.complete_all([stale, foreign, *((a.job_id, a.attempt) for a in assignments)])
        await wait_progress(m, created.parent.id, succeeded=6)
        parent = await m.job(created.parent.id)
        assert parent.status == pb.JOB_STATUS_COMPLETED
        assert all(c.attempt == 1 for c in (await m.get(created.parent.id)).children)


async def test_a_worker_without_batches_gets_one_assignment_per_message(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        targets = [f"t{i}" for i in range(4)]
        w = await m.connected_worker("w1", targets, slots=4)
        await m.create(targets, [VACUUM])
        await w.wait_assignments(4)
        assert [msg.WhichOneof("kind") for msg in w.messages[1:]] == ["assignment"] * 4


async def test_drain_worker_in_band(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w1 = await m.connected_worker("w1", ["t1", "t2"])
        created = await m.create(["t1", "t2"], [VACUUM])
        (first,) = await w1.wait_assignments(1)
        reply = await m.api.DrainWorker(pb.DrainWorkerRequest(worker_id="w1", reason="host maintenance"))
        assert reply.worker.worker_id == "w1" and reply.worker.draining
        assert list(reply.worker.running_job_ids) == [first.job_id]
        await eventually(lambda: any(msg.WhichOneof("kind") == "drain" for msg in w1.messages))
        drain = next(msg.drain for msg in w1.messages if msg.WhichOneof("kind") == "drain")
        assert drain.reason == "host maintenance"
        # It finishes what it runs; nothing new goes to it, the next child waits for another worker.
        await w1.complete(first)
        await wait_progress(m, created.parent.id, succeeded=1, pending=1)
        assert len(w1.assignments) == 1
        w2 = await m.connected_worker("w2", ["t1", "t2"])
        (second,) = await w2.wait_assignments(1)
        await w2.complete(second)
        await wait_progress(m, created.parent.id, succeeded=2)
        # Unknown and empty ids.
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await m.api.DrainWorker(pb.DrainWorkerRequest(worker_id="nobody"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await m.api.DrainWorker(pb.DrainWorkerRequest(worker_id=""))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
