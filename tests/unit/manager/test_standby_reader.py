"""A standby's reads over the in-memory store: a "leader" store object writes, the StandbyReader reads another
store object on the same database (as two managers share one PostgreSQL database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from dbmaint.operations import JobStatus, Operation
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from manager_service.domain import ChildOutcome, Job, MaintenanceSpec, StartRequest
from manager_service.errors import JobNotFound, LimitReached
from manager_service.gate import READ_METHODS
from manager_service.reads import Snapshot
from manager_service.standby import StandbyReader
from manager_service.store.memory import MemoryDatabase, MemoryJobStore
from manager_service.workers import WorkerView

V, A = Operation.VACUUM, Operation.ANALYZE


@pytest.fixture
async def stores() -> AsyncIterator[tuple[MemoryJobStore, StandbyReader]]:
    database = MemoryDatabase()
    reader = StandbyReader(MemoryJobStore(database), max_watchers=2, max_watch_backlog=100, poll_every=0.01)
    reader.start()
    yield MemoryJobStore(database), reader
    await reader.close()


async def next_event(events: AsyncIterator[Snapshot | Job]) -> Snapshot | Job:
    return await asyncio.wait_for(anext(events), 5)


async def test_a_watch_gets_a_snapshot_then_each_stored_change_once_until_the_parent_ends(
    stores: tuple[MemoryJobStore, StandbyReader],
) -> None:
    leader, reader = stores
    created = leader.create_maintenance(MaintenanceSpec(("db1",), (V, A)))
    first, second = created.children
    events = reader.watch(created.parent.id)
    snapshot = await next_event(events)
    assert isinstance(snapshot, Snapshot) and [c.id for c in snapshot.children] == [first.id, second.id]

    leader.apply_batch([], [StartRequest(first.id, 1, "w1"), StartRequest(second.id, 1, "w1")])
    leader.apply_batch(
        [
            ChildOutcome(first.id, 1, "w1", JobStatus.COMPLETED),
            ChildOutcome(second.id, 1, "w1", JobStatus.COMPLETED),
        ],
        [],
    )
    seen = []
    async for event in events:
        assert isinstance(event, Job)
        seen.append((event.id, event.status, event.version))
    assert sorted(seen) == sorted(
        [
            (first.id, JobStatus.RUNNING, 2),
            (second.id, JobStatus.RUNNING, 2),
            (created.parent.id, JobStatus.RUNNING, 2),
            (first.id, JobStatus.COMPLETED, 3),
            (second.id, JobStatus.COMPLETED, 3),
            (created.parent.id, JobStatus.COMPLETED, 3),
        ]
    )
    assert seen[-1] == (created.parent.id, JobStatus.COMPLETED, 3), "the parent's end ends the watch"


async def test_a_watch_of_a_finished_job_is_its_snapshot_alone_and_of_a_missing_one_is_not_found(
    stores: tuple[MemoryJobStore, StandbyReader],
) -> None:
    leader, reader = stores
    created = leader.create_maintenance(MaintenanceSpec(("db1",), (V,)))
    leader.cancel_job(created.parent.id, "stop")
    assert [type(event) for event in [event async for event in reader.watch(created.parent.id)]] == [Snapshot]
    with pytest.raises(JobNotFound):
        await next_event(reader.watch("00000000-0000-0000-0000-000000000000"))


async def test_watches_beyond_the_limit_are_refused(stores: tuple[MemoryJobStore, StandbyReader]) -> None:
    leader, reader = stores
    created = leader.create_maintenance(MaintenanceSpec(("db1",), (V,)))
    open_watches = [reader.watch(created.parent.id) for _ in range(2)]
    for events in open_watches:
        await next_event(events)
    with pytest.raises(LimitReached):
        await next_event(reader.watch(created.parent.id))
    for events in open_watches:
        await events.aclose()


async def test_workers_and_unserved_targets_come_from_what_the_leader_stored(
    stores: tuple[MemoryJobStore, StandbyReader],
) -> None:
    leader, reader = stores
    leader.create_maintenance(MaintenanceSpec(("db1", "db2", "db3"), (V,)))
    now = datetime.now(UTC)
    leader.replace_workers(
        [
            WorkerView("w1", frozenset({"db1"}), 1, (), now, now),
            WorkerView("w2", frozenset({"db2"}), 1, (), now, now, draining=True),
        ]
    )
    assert [w.worker_id for w in await reader.workers()] == ["w1", "w2"]
    assert await reader.unserved_targets() == ["db2", "db3"], "a draining worker serves nothing new"


def test_every_method_the_gate_routes_to_a_standby_is_a_read_of_dbmaint_s_services() -> None:
    services = {
        "dbmaint.v1.MaintenanceService": pb.DESCRIPTOR.services_by_name["MaintenanceService"],
        "dbmaint.v1.ScheduleService": spb.DESCRIPTOR.services_by_name["ScheduleService"],
    }
    for method in READ_METHODS:
        service, name = method.strip("/").split("/")
        assert name in services[service].methods_by_name, method
        assert name.startswith(("Get", "List", "Watch")), method
