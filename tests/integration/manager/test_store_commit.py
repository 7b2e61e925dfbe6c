"""A COMMIT whose outcome is unknown (the link broke while it was under way) is reconciled from the store.

The commit is failed for real: the dialect's ``do_commit`` either commits and then raises the driver's
OperationalError as if the answer was lost on the way back, or raises it before committing. The store must
look: committed, the write's outcome is returned; not committed, StoreUnavailable (nothing changed); the store
still unreachable, CommitOutcomeUnknown, never "nothing changed".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from dbmaint.operations import JobStatus, Operation, OperationReport
from manager_service.domain import ChildOutcome, MaintenanceSpec, StartRequest
from manager_service.errors import CommitOutcomeUnknown, StoreUnavailable
from manager_service.store import SQLAlchemyJobStore

SPEC = MaintenanceSpec(("db1", "db2"), (Operation.VACUUM,), None, 3)


def _break_commit(store: SQLAlchemyJobStore, monkeypatch: pytest.MonkeyPatch, *, commit_first: bool) -> list[int]:
    """The next COMMIT raises the driver's OperationalError, after committing or before; returns a list that
    counts the broken commits."""
    dialect = store.engine.dialect
    original: Callable[[Any], None] = dialect.do_commit
    driver_error = dialect.loaded_dbapi.OperationalError
    broken: list[int] = []

    def do_commit(dbapi_connection: Any) -> None:
        if broken:
            original(dbapi_connection)
            return
        broken.append(1)
        if commit_first:
            original(dbapi_connection)
        else:
            dbapi_connection.rollback()
        raise driver_error("server closed the connection unexpectedly")

    monkeypatch.setattr(dialect, "do_commit", do_commit)
    return broken


def _results_and_starts(store: SQLAlchemyJobStore) -> tuple[list[ChildOutcome], list[StartRequest], str]:
    created = store.create_maintenance(SPEC)
    first, second = created.children
    store.start_children([StartRequest(first.id, 1, "w1")])
    report = OperationReport(engine="sqlite", duration_seconds=0.5)
    return (
        [ChildOutcome(first.id, 1, "w1", JobStatus.COMPLETED, report=report)],
        [StartRequest(second.id, 1, "w2")],
        created.parent.id,
    )


def test_a_batch_that_committed_before_the_link_broke_returns_its_results_and_starts(
    store: SQLAlchemyJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, starts, parent_id = _results_and_starts(store)
    broken = _break_commit(store, monkeypatch, commit_first=True)

    batch = store.apply_batch(results, starts)

    assert broken == [1]
    assert [(t.child.id, t.child.status) for t in batch.finished] == [(results[0].job_id, JobStatus.COMPLETED)]
    assert [(t.child.id, t.child.status, t.child.worker_id) for t in batch.started] == [
        (starts[0].job_id, JobStatus.RUNNING, "w2")
    ]
    stored = {job.id: job for job in store.get_children(parent_id)}
    assert stored[results[0].job_id].status is JobStatus.COMPLETED
    assert stored[starts[0].job_id].status is JobStatus.RUNNING


def test_a_create_that_committed_before_the_link_broke_returns_the_stored_jobs(
    store: SQLAlchemyJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _break_commit(store, monkeypatch, commit_first=True)

    created = store.create_maintenance(SPEC)

    assert broken == [1] and created.created and len(created.children) == 2
    assert store.get_job(created.parent.id) is not None
    assert store.count_jobs() == 3, "stored once"


def test_a_batch_whose_commit_never_happened_raises_store_unavailable_and_changes_nothing(
    store: SQLAlchemyJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, starts, parent_id = _results_and_starts(store)
    before = {job.id: job.version for job in store.get_children(parent_id)}
    _break_commit(store, monkeypatch, commit_first=False)

    with pytest.raises(StoreUnavailable) as failed:
        store.apply_batch(results, starts)

    assert not isinstance(failed.value, CommitOutcomeUnknown), "the store was reachable: the outcome is known"
    assert "did not commit" in str(failed.value)
    assert {job.id: job.version for job in store.get_children(parent_id)} == before
    # Safe to retry: the same batch applies once.
    batch = store.apply_batch(results, starts)
    assert len(batch.finished) == 1 and len(batch.started) == 1


def test_a_create_whose_commit_never_happened_raises_store_unavailable_and_stores_nothing(
    store: SQLAlchemyJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _break_commit(store, monkeypatch, commit_first=False)

    with pytest.raises(StoreUnavailable) as failed:
        store.create_maintenance(SPEC)

    assert not isinstance(failed.value, CommitOutcomeUnknown)
    assert store.count_jobs() == 0


@pytest.mark.parametrize("commit_first", [True, False], ids=["committed", "not-committed"])
def test_a_store_unreachable_after_a_broken_commit_raises_commit_outcome_unknown(
    store: SQLAlchemyJobStore, monkeypatch: pytest.MonkeyPatch, commit_first: bool
) -> None:
    results, starts, _ = _results_and_starts(store)
    _break_commit(store, monkeypatch, commit_first=commit_first)
    monkeypatch.setattr("manager_service.store.sqlalchemy_store.RECONCILE_DELAYS", (0.0, 0.01))
    original_connect = store.engine.connect
    calls: list[int] = []

    def connect() -> Any:
        calls.append(1)
        if len(calls) > 1:  # the write's own connection works; every look afterwards fails
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return original_connect()

    monkeypatch.setattr(store.engine, "connect", connect)

    stopped: list[BaseException] = []
    store.on_stop = stopped.append

    with pytest.raises(CommitOutcomeUnknown) as unknown:
        store.apply_batch(results, starts)

    assert isinstance(unknown.value, StoreUnavailable)
    assert "whether the write committed" in str(unknown.value)
    assert len(calls) == 3, "one connection for the write, then one per bounded look"
    assert stopped == [unknown.value], "the owner is told at once"


def test_after_an_unknown_commit_the_store_writes_nothing_more(
    store: SQLAlchemyJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its owner's memory may disagree with the store now: it must rebuild from a fresh store first."""
    results, starts, parent_id = _results_and_starts(store)
    _break_commit(store, monkeypatch, commit_first=False)
    monkeypatch.setattr("manager_service.store.sqlalchemy_store.RECONCILE_DELAYS", (0.0,))
    original_connect = store.engine.connect
    unreachable = [False]

    def connect() -> Any:
        if unreachable[0]:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        unreachable[0] = True  # after the write's own connection
        return original_connect()

    monkeypatch.setattr(store.engine, "connect", connect)
    with pytest.raises(CommitOutcomeUnknown):
        store.apply_batch(results, starts)
    monkeypatch.setattr(store.engine, "connect", original_connect)  # the store answers again
    before = {job.id: job.version for job in store.get_children(parent_id)}

    with pytest.raises(CommitOutcomeUnknown, match="writes nothing more"):
        store.apply_batch(results, starts)
    with pytest.raises(CommitOutcomeUnknown):
        store.create_maintenance(SPEC)
    assert {job.id: job.version for job in store.get_children(parent_id)} == before
    assert store.count_jobs() == 3
