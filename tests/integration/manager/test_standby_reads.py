"""A standby answers the read RPCs from the store (in-process managers on one PostgreSQL store): GetJob,
ListJobs, ListWorkers, the schedule reads, and a WatchJob that sees every change of a parent to its end, also
when the leader changes meanwhile. Writes and worker streams stay UNAVAILABLE on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import create_engine, text

from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from manager_service import standby as standby_module
from tests.support.manager import FakeWorker, Manager, eventually, running_manager
from tests.support.servers import fresh_postgres_database

PARENT_TYPE = "database_maintenance_parent"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_standby_reads") as url:
        yield url.render_as_string(hide_password=False)


class Watch:
    """A WatchJob stream read into ``messages`` until it ends."""

    def __init__(self, manager: Manager, job_id: str) -> None:
        self.messages: list[pb.WatchJobResponse] = []
        self._call = manager.api.WatchJob(pb.WatchJobRequest(id=job_id))
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self._call:
            self.messages.append(message)

    def changes_of(self, job_id: str) -> list[pb.Job]:
        return [m.changed for m in self.messages if m.HasField("changed") and m.changed.id == job_id]


async def run_to_the_end(worker: FakeWorker, children: int) -> None:
    """Complete every assignment, one at a time, until ``children`` are done."""
    for done in range(children):
        assignments = await worker.wait_assignments(done + 1, timeout=10)
        await worker.complete(assignments[done])


Counters = tuple[int, int, int, int]


def counters(job: pb.Job) -> Counters:
    return (job.progress.pending, job.progress.running, job.progress.succeeded, job.progress.failed)


def parent_counters_in_the_feed(pg_url: str, parent_id: str) -> list[Counters]:
    """The parent's counters in each of its stored changes, in change order."""
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT snapshot FROM job_changes WHERE job_id = :id ORDER BY change_seq"), {"id": parent_id}
            )
            progress = [json.loads(row.snapshot)["progress"] for row in rows]
    finally:
        engine.dispose()
    return [(p["pending"], p["running"], p["succeeded"], p["failed"]) for p in progress]


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


@pytest.mark.timeout(90)
@pytest.mark.parametrize("store_notify", [True, False], ids=["notify", "poll-only"])
async def test_a_standby_answers_the_reads_and_watches_a_parent_through_every_change(
    tmp_path: Path, pg_url: str, store_notify: bool
) -> None:
    async with (
        running_manager(tmp_path / "a", database_url=pg_url, store_lease=3.0, store_notify=store_notify) as leader,
        running_manager(
            tmp_path / "b", database_url=pg_url, store_lease=3.0, store_notify=store_notify
        ) as standby,
    ):
        assert leader.server.leading and not standby.server.leading
        created = await leader.create(["db1", "db2"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
        parent_id = created.parent.id

        got = await standby.get(parent_id)
        assert got.job.status == pb.JOB_STATUS_PENDING and len(got.children) == 4
        listed = await standby.api.ListJobs(pb.ListJobsRequest(parent_id=parent_id))
        assert sorted(j.id for j in listed.jobs) == sorted(c.id for c in created.children)

        watch = Watch(standby, parent_id)
        await eventually(lambda: len(watch.messages) >= 1, timeout=5, message="the snapshot")
        assert watch.messages[0].snapshot.job.status == pb.JOB_STATUS_PENDING

        worker = await leader.connected_worker("w1", ["db1", "db2"])
        worker.start_heartbeats()

        async def listed_on_the_standby() -> bool:
            reply = await standby.api.ListWorkers(pb.ListWorkersRequest())
            return [w.worker_id for w in reply.workers] == ["w1"]

        await eventually(listed_on_the_standby, timeout=10, message="the standby lists the leader's worker")
        workers = await standby.api.ListWorkers(pb.ListWorkersRequest())
        (info,) = workers.workers
        assert sorted(info.targets) == ["db1", "db2"] and info.slots == 1
        assert info.last_heartbeat.seconds > 0 and info.connected_at.seconds > 0
        assert list(workers.unserved_targets) == []

        await run_to_the_end(worker, 4)
        await asyncio.wait_for(watch.task, 15)  # the stream ends with the parent

        parent_changes = watch.changes_of(parent_id)
        assert parent_changes[-1].status == pb.JOB_STATUS_COMPLETED
        assert parent_changes[-1].progress.succeeded == 4
        assert [counters(j) for j in parent_changes] == parent_counters_in_the_feed(pg_url, parent_id)[1:], (
            "one message per stored change of the parent, none missed, none twice"
        )
        for child in created.children:
            statuses = [j.status for j in watch.changes_of(child.id)]
            assert statuses == [pb.JOB_STATUS_RUNNING, pb.JOB_STATUS_COMPLETED], child.target

        assert (await standby.get(parent_id)).job.status == pb.JOB_STATUS_COMPLETED
        create = await refused(standby.create(["db1"], [pb.OPERATION_ANALYZE]))
        assert create.code() == grpc.StatusCode.UNAVAILABLE
        cancel = await refused(standby.api.CancelJob(pb.CancelJobRequest(id=parent_id)))
        assert cancel.code() == grpc.StatusCode.UNAVAILABLE
        stray = standby.worker("w2", ["db1"])
        await stray.open()
        assert await stray.status() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.timeout(60)
async def test_a_notify_wakes_the_standby_s_follower_long_before_its_next_poll(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(standby_module, "POLL_EVERY", 120.0)
    async with (
        running_manager(tmp_path / "a", database_url=pg_url, store_lease=3.0) as leader,
        running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as standby,
    ):
        created = await leader.create(["db1"], [pb.OPERATION_VACUUM])
        watch = Watch(standby, created.parent.id)
        await eventually(lambda: len(watch.messages) >= 1, timeout=5, message="the snapshot")
        await leader.connected_worker("w1", ["db1"])
        await eventually(
            lambda: bool(watch.changes_of(created.children[0].id)),
            timeout=10,
            message="the child's start, told by NOTIFY (the next poll is two minutes away)",
        )
        watch.task.cancel()


@pytest.mark.timeout(60)
async def test_a_standby_answers_the_schedule_reads_and_refuses_their_writes(tmp_path: Path, pg_url: str) -> None:
    async with (
        running_manager(tmp_path / "a", database_url=pg_url, store_lease=3.0) as leader,
        running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as standby,
    ):
        maintenance = pb.CreateMaintenanceRequest(targets=["db1"], operations=[pb.OPERATION_VACUUM])
        schedule = spb.Schedule(id="nightly", every=Duration(seconds=3600), maintenance=maintenance, paused=True)
        await spb_grpc.ScheduleServiceStub(leader.channel).CreateSchedule(
            spb.CreateScheduleRequest(schedule=schedule)
        )
        reads = spb_grpc.ScheduleServiceStub(standby.channel)
        got = (await reads.GetSchedule(spb.GetScheduleRequest(id="nightly"))).schedule
        assert got.id == "nightly" and got.paused
        listed = await reads.ListSchedules(spb.ListSchedulesRequest())
        assert [s.id for s in listed.schedules] == ["nightly"]
        assert list((await reads.ListFirings(spb.ListFiringsRequest(schedule_id="nightly"))).firings) == []
        missing = await refused(reads.GetSchedule(spb.GetScheduleRequest(id="nope")))
        assert missing.code() == grpc.StatusCode.NOT_FOUND
        trigger = await refused(reads.TriggerSchedule(spb.TriggerScheduleRequest(id="nightly")))
        assert trigger.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.timeout(90)
async def test_a_watch_on_a_standby_sees_its_parent_to_the_end_across_a_leader_change(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_manager(tmp_path / "a", database_url=pg_url, store_lease=3.0) as first:
        created = await first.create(["db1"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
        parent_id = created.parent.id
        async with running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as second:
            watch = Watch(second, parent_id)
            await eventually(lambda: len(watch.messages) >= 1, timeout=5, message="the snapshot")
            worker = await first.connected_worker("w1", ["db1"])
            (assignment,) = await worker.wait_assignments(1)
            await worker.complete(assignment)
            await eventually(
                lambda: len(watch.changes_of(parent_id)) >= 1,
                timeout=10,
                message="a change under the first leader",
            )

            await first.server.shutdown()  # gives the lease up: the standby takes over
            await eventually(lambda: second.server.leading, timeout=10, message="the standby took over")
            again = await second.connected_worker("w1", ["db1"])
            (next_one,) = await again.wait_assignments(1, timeout=10)
            await again.complete(next_one)

            await asyncio.wait_for(watch.task, 15)
            assert watch.changes_of(parent_id)[-1].status == pb.JOB_STATUS_COMPLETED
            for child in created.children:
                assert [j.status for j in watch.changes_of(child.id)][-1] == pb.JOB_STATUS_COMPLETED
