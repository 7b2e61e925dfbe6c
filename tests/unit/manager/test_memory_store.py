"""The in-memory JobStore in the unit tier: the whole store contract (tests/integration/manager/test_store.py,
every test not marked ``sql_only``) against it, and its lease shared by two store objects on one database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbmaint.operations import JobStatus, Operation
from manager_service.domain import ChildOutcome, JobFilter, MaintenanceSpec, StartRequest
from manager_service.errors import LeaseLost
from manager_service.store.memory import MemoryDatabase, MemoryJobStore
from tests.integration.manager import test_store as contract
from tests.integration.manager import test_store_changes as changes_contract
from tests.integration.manager import test_store_schedules as schedules_contract


def contract_tests(module: Any) -> dict[str, Callable[..., None]]:
    """The module's tests that hold for every JobStore: all ``test_*`` functions not marked ``sql_only``."""
    return {
        name: test
        for name, test in vars(module).items()
        if name.startswith("test_")
        and callable(test)
        and not any(mark.name == "sql_only" for mark in getattr(test, "pytestmark", []))
    }


# Collected here as if written here: pytest finds them in this module's namespace, with their parametrize marks.
globals().update(contract_tests(contract))
globals().update(contract_tests(schedules_contract))
globals().update(contract_tests(changes_contract))


@pytest.fixture
def store() -> Iterator[MemoryJobStore]:
    opened = MemoryJobStore()
    yield opened
    opened.close()


def test_the_contract_runs_here_without_the_sql_only_tests() -> None:
    collected = contract_tests(contract)
    assert "test_counters_follow_start_and_finish" in collected
    assert "test_create_is_atomic_when_the_child_insert_fails" not in collected
    assert len(collected) >= 30


# -- the lease, between two store objects on one database (as two managers on one PostgreSQL database)


class Clock:
    """The database's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SPEC = MaintenanceSpec(("db1",), (Operation.VACUUM,))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def shared(clock: Clock) -> MemoryDatabase:
    return MemoryDatabase(clock=clock)


def test_a_second_holder_is_told_who_holds_the_lease_until_it_lapses(shared: MemoryDatabase, clock: Clock) -> None:
    first, second = MemoryJobStore(shared), MemoryJobStore(shared)
    taken = first.acquire_lease("m1", ttl=10, address="10.0.0.1:50051")
    assert (taken.held, taken.term) == (True, 1)
    refused = second.acquire_lease("m2", ttl=10)
    assert (refused.held, refused.holder, refused.address, refused.term) == (False, "m1", "10.0.0.1:50051", 1)
    assert refused.expires_in == pytest.approx(10)
    clock.now += 10
    took_over = second.acquire_lease("m2", ttl=10)
    assert (took_over.held, took_over.holder, took_over.term) == (True, "m2", 2)


def test_a_write_of_a_fenced_off_holder_raises_lease_lost_and_writes_nothing(
    shared: MemoryDatabase, clock: Clock
) -> None:
    first, second = MemoryJobStore(shared), MemoryJobStore(shared)
    first.acquire_lease("m1", ttl=5)
    created = first.create_maintenance(SPEC)
    (child,) = created.children
    first.start_children([StartRequest(child.id, 1, "w1")])
    clock.now += 5
    second.acquire_lease("m2", ttl=5)
    stops: list[LeaseLost] = []
    first.on_stop = stops.append
    before = first.list_jobs(JobFilter(), 100, None).jobs

    writes: list[Callable[[], object]] = [
        lambda: first.create_maintenance(SPEC),
        lambda: first.finish_child(ChildOutcome(child.id, 1, "w1", JobStatus.COMPLETED)),
        lambda: first.release_child(child.id, 1, "lost"),
        lambda: first.cancel_job(created.parent.id, "stop"),
    ]
    for write in writes:
        with pytest.raises(LeaseLost, match="m2"):
            write()
    with pytest.raises(LeaseLost):
        first.renew_lease()
    assert first.list_jobs(JobFilter(), 100, None).jobs == before
    assert len(stops) == len(writes) + 1 and all(stop.holder == "m2" for stop in stops)


def test_renewing_keeps_the_lease_and_releasing_hands_it_over(shared: MemoryDatabase, clock: Clock) -> None:
    first, second = MemoryJobStore(shared), MemoryJobStore(shared)
    first.acquire_lease("m1", ttl=5)
    clock.now += 4
    assert first.renew_lease().held
    clock.now += 4  # 8 s after taking it, 4 s after renewing it
    assert not second.acquire_lease("m2", ttl=5).held
    first.create_maintenance(SPEC)
    first.release_lease()
    assert second.acquire_lease("m2", ttl=5).term == 2


def test_a_store_that_never_took_the_lease_is_not_fenced_but_cannot_renew() -> None:
    store = MemoryJobStore()
    assert store.create_maintenance(SPEC).created
    with pytest.raises(LeaseLost, match="never took"):
        store.renew_lease()
