"""The store under concurrency on PostgreSQL: several store instances (as several manager replicas would
have) race on one family of jobs; row locks keep counters exact and no transaction deadlocks."""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from dbmaint.operations import JobStatus, Operation
from manager_service.domain import ChildOutcome, MaintenanceSpec, StartRequest
from manager_service.errors import JobAlreadyFinished
from manager_service.store import SQLAlchemyJobStore, migrations, open_store
from manager_service.store.sqlalchemy_store import make_engine
from tests.support.servers import fresh_postgres_database

REPLICAS = 4


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_race") as url:
        yield url.render_as_string(hide_password=False)


def _in_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not [thread for thread in threads if thread.is_alive()], "a racing store never returned"
    assert not errors, errors


def test_concurrent_migrations_leave_one_schema(pg_url: str) -> None:
    engines = [make_engine(pg_url) for _ in range(REPLICAS)]
    _in_threads(REPLICAS, lambda i: migrations.upgrade(engines[i]) and None)
    assert {migrations.current_revision(e) for e in engines} == {migrations.head_revision()}
    for engine in engines:
        engine.dispose()


def test_replicas_racing_on_one_parent_keep_exact_counters(pg_url: str) -> None:
    stores: list[SQLAlchemyJobStore] = [open_store(pg_url) for _ in range(REPLICAS)]
    targets = tuple(f"db{i}" for i in range(30))
    created = stores[0].create_maintenance(
        MaintenanceSpec(targets, (Operation.VACUUM, Operation.ANALYZE), None, 2)
    )
    children = created.children

    # Every replica tries to start every child: each starts exactly once.
    started: list[list[str]] = [[] for _ in range(REPLICAS)]

    def claim(index: int) -> None:
        order = list(children)
        random.Random(index).shuffle(order)
        for child in order:
            moved = stores[index].start_children([StartRequest(child.id, child.attempt, f"w{index}")])
            started[index].extend(t.child.id for t in moved)

    _in_threads(REPLICAS, claim)
    all_started = [job_id for ids in started for job_id in ids]
    assert sorted(all_started) == sorted(c.id for c in children), "each child started exactly once"

    # Results, duplicates of them, worker losses and a parent cancel, all at once.
    owner = {job_id: f"w{i}" for i, ids in enumerate(started) for job_id in ids}

    def chaos(index: int) -> None:
        store = stores[index]
        rng = random.Random(100 + index)
        for child in rng.sample(children, len(children)):
            roll = rng.random()
            if roll < 0.6:
                store.finish_child(ChildOutcome(child.id, 1, owner[child.id], JobStatus.COMPLETED))
            elif roll < 0.8:
                store.release_child(child.id, 1, "race test")
            elif roll < 0.85:
                with contextlib.suppress(JobAlreadyFinished):
                    store.cancel_job(created.parent.id, "race test")

    _in_threads(REPLICAS, chaos)

    parent = stores[0].get_job(created.parent.id)
    assert parent is not None and parent.progress is not None
    counts = Counter(c.status for c in stores[0].get_children(created.parent.id))
    assert parent.progress.total == len(children)
    assert parent.progress.pending == counts[JobStatus.PENDING]
    assert parent.progress.running == counts[JobStatus.RUNNING]
    assert parent.progress.succeeded == counts[JobStatus.COMPLETED]
    assert parent.progress.failed == counts[JobStatus.FAILED]
    assert parent.progress.cancelled == counts[JobStatus.CANCELLED]
    for store in stores:
        store.close()
