"""What standbys read from the store: the change feed (``job_changes``) and the connected workers (``workers``).

Every test here not marked ``sql_only`` is part of the store contract: it runs on SQLite and PostgreSQL (the
``store`` fixture of this folder) and again on the in-memory store (tests/unit/manager/test_memory_store.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dbmaint.operations import JobStatus, Operation
from manager_service.domain import (
    ChildOutcome,
    JobChange,
    MaintenanceSpec,
    ScheduleSpec,
    StartRequest,
    job_from_dict,
    job_to_dict,
)
from manager_service.store import JobStore, SQLAlchemyJobStore, open_store
from manager_service.store.sqlalchemy_store import CHANGES_CHANNEL
from manager_service.workers import WorkerView
from tests.support.servers import fresh_postgres_database

V, A = Operation.VACUUM, Operation.ANALYZE
sql_only = pytest.mark.sql_only


def maintenance(
    targets: tuple[str, ...] = ("db1",), operations: tuple[Operation, ...] = (V, A)
) -> MaintenanceSpec:
    return MaintenanceSpec(targets, operations)


def schedule() -> ScheduleSpec:
    return ScheduleSpec(id="nightly", maintenance=maintenance(), every_seconds=3600.0)


def new_changes(store: JobStore, after: int) -> list[JobChange]:
    return store.changes_after(after, 10_000)


def worker(worker_id: str, *, running: tuple[str, ...] = (), draining: bool = False) -> WorkerView:
    now = datetime.now(UTC).replace(microsecond=0)
    return WorkerView(
        worker_id=worker_id,
        targets=frozenset({"db1", "db2"}),
        slots=2,
        running_job_ids=running,
        last_heartbeat=now,
        connected_at=now - timedelta(minutes=5),
        draining=draining,
        peer="ipv4:127.0.0.1:5000",
    )


def test_a_new_parent_is_one_change_holding_the_stored_job_and_its_new_children_are_none(
    store: JobStore,
) -> None:
    """No watch of the parent can begin before it exists, and the snapshot it begins with carries the children:
    a change row per new child would cost a row per child for nobody."""
    before = store.last_change_seq()
    created = store.create_maintenance(maintenance())
    (change,) = new_changes(store, before)
    assert change.job_id == created.parent.id
    assert change.job() == store.get_job(change.job_id), "the snapshot is the job as stored"
    assert (change.version, change.parent_id) == (1, None)
    assert store.last_change_seq() == change.change_seq
    assert all(store.get_job(child.id) == child for child in created.children), "the children are stored"


def test_every_transition_is_one_change_per_job_it_touched_in_commit_order(store: JobStore) -> None:
    created = store.create_maintenance(maintenance())
    first, second = created.children
    parent_id = created.parent.id
    steps = [
        lambda: store.start_children([StartRequest(first.id, 1, "w1")]),
        lambda: store.finish_child(ChildOutcome(first.id, 1, "w1", JobStatus.COMPLETED)),
        lambda: store.start_children([StartRequest(second.id, 1, "w1")]),
        lambda: store.finish_child(ChildOutcome(second.id, 1, "w1", JobStatus.FAILED, "boom")),
    ]
    seen: list[list[tuple[str, int]]] = []
    cursor = store.last_change_seq()
    for step in steps:
        step()
        changes = new_changes(store, cursor)
        cursor = changes[-1].change_seq
        seen.append(sorted((change.job_id, change.version) for change in changes))
    assert seen == [
        sorted([(first.id, 2), (parent_id, 2)]),  # RUNNING, and the parent starts
        sorted([(first.id, 3), (parent_id, 3)]),
        sorted([(second.id, 2), (parent_id, 4)]),  # the parent's counters move
        sorted([(second.id, 3), (parent_id, 5)]),  # and it ends
    ]
    feed = new_changes(store, 0)
    assert [change.change_seq for change in feed] == sorted({change.change_seq for change in feed})
    last = [change for change in feed if change.job_id == parent_id][-1].job()
    assert last.status is JobStatus.FAILED and last == store.get_job(parent_id)


def test_a_job_changed_twice_in_one_transaction_is_one_change_with_its_last_state(store: JobStore) -> None:
    created = store.create_maintenance(maintenance(targets=("db1", "db2")))
    cursor = store.last_change_seq()
    store.cancel_job(created.parent.id, "stop")  # the parent is marked, then settled CANCELLED: two versions
    changes = new_changes(store, cursor)
    assert sorted(change.job_id for change in changes) == sorted(
        job.id for job in (created.parent, *created.children)
    )
    parent_change = next(change for change in changes if change.job_id == created.parent.id)
    assert parent_change.job().status is JobStatus.CANCELLED
    assert parent_change.job() == store.get_job(created.parent.id)


def test_writes_that_change_no_job_add_no_change(store: JobStore) -> None:
    store.create_maintenance(maintenance())
    cursor = store.last_change_seq()
    store.create_schedule(schedule(), False)
    store.replace_workers([worker("w1")])
    assert store.start_children([StartRequest("no-such-child", 1, "w1")]) == []
    assert new_changes(store, cursor) == []


def test_changes_after_pages_in_change_seq_order(store: JobStore) -> None:
    before = store.last_change_seq()
    created = store.create_maintenance(maintenance(targets=("db1", "db2", "db3")))
    store.cancel_job(created.parent.id, "stop")  # 7 changes: the parent and its 6 children
    first = store.changes_after(before, 3)
    rest = store.changes_after(first[-1].change_seq, 100)
    assert len(first) == 3 and len(rest) == 5
    assert [c.change_seq for c in first + rest] == sorted(c.change_seq for c in new_changes(store, before))


def test_pruning_drops_the_changes_older_than_what_is_kept_and_only_those(store: JobStore) -> None:
    first = store.create_maintenance(maintenance())
    store.cancel_job(first.parent.id, "stop")
    assert store.prune_changes(3600.0) == 0, "an hour's changes are kept"
    assert len(new_changes(store, 0)) == 4, "the parent's creation, then the cancel of it and its 2 children"
    assert store.prune_changes(0.0) == 4
    assert new_changes(store, 0) == []
    created = store.create_maintenance(maintenance(operations=(V,)))
    assert {change.job_id for change in new_changes(store, 0)} == {created.parent.id}


def test_the_stored_workers_are_replaced_as_a_whole(store: JobStore) -> None:
    assert store.list_workers() == []
    store.replace_workers([worker("w2", draining=True), worker("w1", running=("job-a", "job-b"))])
    assert store.list_workers() == [worker("w1", running=("job-a", "job-b")), worker("w2", draining=True)]
    store.replace_workers([worker("w2")])
    assert store.list_workers() == [worker("w2")]


def test_a_new_term_drops_the_workers_of_the_term_before(store: JobStore) -> None:
    store.acquire_lease("manager-a", 30.0)
    store.replace_workers([worker("w1"), worker("w2")])
    store.release_lease()
    store.acquire_lease("manager-b", 30.0)
    store.replace_workers([worker("w3")])
    assert [w.worker_id for w in store.list_workers()] == ["w3"]


def test_pending_targets_are_those_of_pending_children(store: JobStore) -> None:
    created = store.create_maintenance(maintenance(targets=("db1", "db2"), operations=(V,)))
    assert store.pending_targets() == ["db1", "db2"]
    db1 = next(child for child in created.children if child.target == "db1")
    store.start_children([StartRequest(db1.id, 1, "w1")])
    assert store.pending_targets() == ["db2"]


def test_a_job_survives_its_json_snapshot(store: JobStore) -> None:
    created = store.create_maintenance(
        MaintenanceSpec(("db1",), (V,), request_id="r-1", window={"weekdays": [1], "start": "01:00"})
    )
    store.start_children([StartRequest(created.children[0].id, 1, "w1")])
    for job in (store.get_job(created.parent.id), store.get_job(created.children[0].id)):
        assert job is not None
        assert job_from_dict(json.loads(json.dumps(job_to_dict(job)))) == job


# -- PostgreSQL: the NOTIFY hint


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_changes") as url:
        yield url.render_as_string(hide_password=False)


def _notifications(pg_url: str, write: object) -> int:
    """How many notifications on the changes channel ``write()`` sent."""
    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANGES_CHANNEL}")
        write()  # type: ignore[operator]
        return sum(1 for _ in listener.notifies(timeout=0.5))


@sql_only
def test_a_write_that_changes_jobs_sends_one_notify_and_other_writes_none(pg_url: str) -> None:
    store: SQLAlchemyJobStore = open_store(pg_url)
    try:
        created = store.create_maintenance(maintenance(targets=("a", "b", "c")))
        cancelled_many = _notifications(pg_url, lambda: store.cancel_job(created.parent.id, "stop"))
        assert cancelled_many == 1, "one per transaction, however many jobs it wrote (here 7)"
        assert _notifications(pg_url, lambda: store.create_schedule(schedule(), False)) == 0
    finally:
        store.close()


@sql_only
def test_with_notify_off_no_write_notifies(pg_url: str) -> None:
    store = open_store(pg_url, notify=False)
    try:
        created = store.create_maintenance(maintenance())
        assert _notifications(pg_url, lambda: store.cancel_job(created.parent.id, "stop")) == 0
        assert len(store.changes_after(0, 100)) == 4, "the feed is written all the same"
    finally:
        store.close()
