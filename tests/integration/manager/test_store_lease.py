"""The store lease: one manager acts on a store at a time.

On PostgreSQL several store objects (as several managers would have) share one database: the lease row admits
one holder, a lapsed lease is taken with the next term, and the old holder can never write again: its writes
check the row FOR SHARE, so a takeover waits for a write in flight and fences out every later one. A SQLite
store admits one manager through an OS lock on a companion file.

A manager's store cannot hang on a dead link: connecting gives up after ``connect_timeout``, and the lease
statements run under ``statement_timeout``/``lock_timeout``. A store told to stop writing (a leader that stepped
down by itself) writes nothing, though its lease may still be alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from dbmaint.operations import JobStatus, Operation
from manager_service.domain import ChildOutcome, MaintenanceSpec, StartRequest
from manager_service.errors import LeaseLost, LeaseNotRenewed, StoreInUse, StoreUnavailable, Unavailable
from manager_service.store import SQLAlchemyJobStore, open_store
from manager_service.store.sqlalchemy_store import make_engine
from tests.support.polling import wait_for
from tests.support.proxy import TcpProxy
from tests.support.servers import fresh_postgres_database

SPEC = MaintenanceSpec(("db1", "db2"), (Operation.VACUUM,), None, 3)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_lease") as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def two_stores(pg_url: str) -> Iterator[tuple[SQLAlchemyJobStore, SQLAlchemyJobStore]]:
    """Two managers' stores on one PostgreSQL database."""
    first, second = open_store(pg_url), open_store(pg_url)
    yield first, second
    first.close()
    second.close()


def _until_lapsed(store: SQLAlchemyJobStore, holder: str) -> None:
    """Wait until ``holder``'s lease has lapsed by the database's clock (``store`` asks without taking it)."""

    def lapsed() -> bool:
        with store.engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT holder, expires_at <= now() FROM store_lease WHERE name = 'manager'"
            ).one()
        return bool(row[0] != holder or row[1])

    wait_for(lapsed, timeout=10, message=f"the lease of {holder} never lapsed")


def test_a_second_holder_cannot_take_a_live_lease(two_stores: tuple[SQLAlchemyJobStore, ...]) -> None:
    first, second = two_stores
    mine = first.acquire_lease("manager-a", ttl=30, address="10.0.0.1:50051")
    assert mine.held and mine.term == 1 and mine.expires_in is not None and 25 < mine.expires_in <= 30

    theirs = second.acquire_lease("manager-b", ttl=30, address="10.0.0.2:50051")
    assert not theirs.held
    assert (theirs.holder, theirs.address, theirs.term) == ("manager-a", "10.0.0.1:50051", 1)
    assert "manager-a at 10.0.0.1:50051" in theirs.describe()


def test_a_lapsed_lease_is_taken_with_the_next_term(two_stores: tuple[SQLAlchemyJobStore, ...]) -> None:
    first, second = two_stores
    assert first.acquire_lease("manager-a", ttl=0.5).term == 1
    _until_lapsed(second, "manager-a")
    taken = second.acquire_lease("manager-b", ttl=30)
    assert taken.held and taken.term == 2 and taken.holder == "manager-b"


def test_the_holder_renews_its_lease_and_a_released_lease_is_free_at_once(
    two_stores: tuple[SQLAlchemyJobStore, ...],
) -> None:
    first, second = two_stores
    first.acquire_lease("manager-a", ttl=2)
    time.sleep(1)
    renewed = first.renew_lease()
    assert renewed.held and renewed.expires_in is not None and renewed.expires_in > 1.5
    assert not second.acquire_lease("manager-b", ttl=30).held

    first.release_lease()
    taken = second.acquire_lease("manager-b", ttl=30)
    assert taken.held and taken.term == 2


def test_every_write_of_the_old_holder_after_a_takeover_raises_lease_lost_and_changes_nothing(
    two_stores: tuple[SQLAlchemyJobStore, ...],
) -> None:
    old, new = two_stores
    old.acquire_lease("manager-a", ttl=0.5)
    created = old.create_maintenance(SPEC)
    first_child, second_child = created.children
    old.start_children([StartRequest(first_child.id, 1, "w1")])
    _until_lapsed(new, "manager-a")
    assert new.acquire_lease("manager-b", ttl=30, address="10.0.0.2:50051").held
    before = {job.id: job.version for job in new.get_children(created.parent.id)}
    count = new.count_jobs()

    writes: list[tuple[str, Callable[[], Any]]] = [
        ("create_maintenance", lambda: old.create_maintenance(SPEC)),
        ("start_children", lambda: old.start_children([StartRequest(second_child.id, 1, "w1")])),
        ("finish_child", lambda: old.finish_child(ChildOutcome(first_child.id, 1, "w1", JobStatus.COMPLETED))),
        ("apply_batch", lambda: old.apply_batch([], [StartRequest(second_child.id, 1, "w1")])),
        ("release_child", lambda: old.release_child(first_child.id, 1, "lost")),
        ("cancel_job", lambda: old.cancel_job(created.parent.id, "stop")),
    ]
    for name, write in writes:
        with pytest.raises(LeaseLost) as lost:
            write()
        assert lost.value.holder == "manager-b", name
        assert "manager-b at 10.0.0.2:50051" in str(lost.value), name
    with pytest.raises(LeaseLost):
        old.renew_lease()

    assert new.count_jobs() == count
    assert {job.id: job.version for job in new.get_children(created.parent.id)} == before


def test_a_write_in_flight_holds_a_takeover_until_it_ends_and_the_successor_sees_it(
    two_stores: tuple[SQLAlchemyJobStore, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = two_stores
    old.acquire_lease("manager-a", ttl=1)
    created = old.create_maintenance(SPEC)
    child = created.children[0]

    inside, resume = threading.Event(), threading.Event()
    original = old._start_rows

    def paused_start_rows(*args: Any) -> Any:
        inside.set()  # the lease was checked; the transaction is open
        assert resume.wait(30)
        return original(*args)

    monkeypatch.setattr(old, "_start_rows", paused_start_rows)
    answers: dict[str, Any] = {}
    writer = threading.Thread(
        target=lambda: answers.update(write=old.apply_batch([], [StartRequest(child.id, 1, "w1")]))
    )
    writer.start()
    assert inside.wait(10)
    _until_lapsed(new, "manager-a")

    taker = threading.Thread(target=lambda: answers.update(take=new.acquire_lease("manager-b", ttl=30)))
    taker.start()
    taker.join(1.5)
    assert taker.is_alive(), "the takeover must wait for the old holder's write in flight"

    resume.set()
    writer.join(10)
    taker.join(10)
    assert not writer.is_alive() and not taker.is_alive(), "the write or the takeover never returned"
    assert [t.child.id for t in answers["write"].started] == [child.id], "the write that began in time commits"
    assert answers["take"].held and answers["take"].term == 2
    running = new.get_job(child.id)
    assert running is not None and running.status is JobStatus.RUNNING, "the successor sees that write"
    with pytest.raises(LeaseLost):
        old.finish_child(ChildOutcome(child.id, 1, "w1", JobStatus.COMPLETED))


def test_a_frozen_holders_open_transaction_is_ended_by_the_idle_timeout_and_writes_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = open_store(pg_url, idle_in_transaction_timeout=1.0)
    new = open_store(pg_url)
    try:
        old.acquire_lease("manager-a", ttl=1)
        created = old.create_maintenance(SPEC)
        child = created.children[0]
        inside, resume = threading.Event(), threading.Event()
        original = old._start_rows

        def frozen_start_rows(*args: Any) -> Any:
            inside.set()
            assert resume.wait(30)  # frozen (SIGSTOP, a partition) with its transaction open
            return original(*args)

        monkeypatch.setattr(old, "_start_rows", frozen_start_rows)
        answers: dict[str, Any] = {}

        def write() -> None:
            try:
                answers["write"] = old.apply_batch([], [StartRequest(child.id, 1, "w1")])
            except Exception as error:
                answers["write"] = error

        writer = threading.Thread(target=write)
        writer.start()
        assert inside.wait(10)
        began = time.monotonic()
        taken = new.acquire_lease("manager-b", ttl=30)
        while not taken.held and time.monotonic() - began < 10:
            time.sleep(0.1)
            taken = new.acquire_lease("manager-b", ttl=30)
        assert taken.held, "the frozen holder's open transaction must not block the takeover for long"
        resume.set()
        writer.join(10)
        assert not writer.is_alive(), "the frozen holder's write never returned"
        assert isinstance(answers["write"], Unavailable), answers["write"]
        pending = new.get_job(child.id)
        assert pending is not None and pending.status is JobStatus.PENDING, "the frozen holder wrote nothing"
    finally:
        old.close()
        new.close()


def test_a_second_manager_on_a_sqlite_store_is_refused_naming_the_lock_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    first, second = open_store(url), open_store(url)
    try:
        assert first.acquire_lease("manager-a", ttl=15, address="127.0.0.1:50051").held
        with pytest.raises(StoreInUse) as refused:
            second.acquire_lease("manager-b", ttl=15)
        message = str(refused.value)
        assert str(tmp_path / "jobs.db.manager-lock") in message
        assert "manager-a" in message and "127.0.0.1:50051" in message
        first.create_maintenance(SPEC)  # the holder writes as before

        first.close()  # the lock goes with the store (and with the process)
        assert second.acquire_lease("manager-b", ttl=15).held
    finally:
        first.close()
        second.close()


def test_a_renewal_held_up_by_a_lock_fails_after_the_lease_statement_timeout_instead_of_waiting(
    pg_url: str,
) -> None:
    store = open_store(pg_url, link_timeout=0.5)
    try:
        assert store.acquire_lease("manager-a", ttl=30).held
        with store.engine.connect() as blocker, blocker.begin():
            # Another session holds the lease row (as a stuck write of another term would): the renewal's UPDATE
            # must give up, not wait for it.
            blocker.exec_driver_sql("SELECT term FROM store_lease WHERE name = 'manager' FOR UPDATE").one()
            with pytest.raises(StoreUnavailable, match="timeout"):
                store.renew_lease()
        assert store.renew_lease().held, "the next renewal goes through once the lock is gone"
    finally:
        store.close()


def test_connecting_through_a_black_holed_link_fails_after_the_connect_timeout(pg_url: str) -> None:
    open_store(pg_url).close()  # the schema, through the direct link
    with TcpProxy("127.0.0.1:5432") as proxy:
        url = make_url(pg_url).set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
        store = SQLAlchemyJobStore(make_engine(url, link_timeout=1.0), lease_statement_timeout=1.0)
        try:
            proxy.blackhole()  # connections are accepted and never answered
            with pytest.raises(StoreUnavailable, match="timeout"):
                store.acquire_lease("manager-a", ttl=30)
        finally:
            store.close()


def test_a_store_told_to_stop_writing_writes_nothing_though_its_lease_is_alive(
    two_stores: tuple[SQLAlchemyJobStore, ...],
) -> None:
    old, reader = two_stores
    assert old.acquire_lease("manager-a", ttl=30).held
    created = old.create_maintenance(SPEC)
    child = created.children[0]
    count = reader.count_jobs()

    old.stop_writing(LeaseNotRenewed("stepped down: the lease could not be renewed"))
    with pytest.raises(LeaseNotRenewed):
        old.create_maintenance(SPEC)
    with pytest.raises(LeaseNotRenewed):
        old.start_children([StartRequest(child.id, 1, "w1")])
    with pytest.raises(LeaseNotRenewed):
        old.renew_lease()

    assert reader.count_jobs() == count
    pending = reader.get_job(child.id)
    assert pending is not None and pending.status is JobStatus.PENDING
    theirs = reader.acquire_lease("manager-b", ttl=30)
    assert not theirs.held and theirs.holder == "manager-a", "the lease itself is untouched"
