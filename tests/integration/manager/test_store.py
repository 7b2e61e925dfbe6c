"""The job store's contract: every test here that is not marked ``sql_only`` runs against each JobStore, the
SQLAlchemy store on SQLite and on PostgreSQL (the ``store`` fixture of this folder) and the in-memory store
(tests/unit/manager/test_memory_store.py collects them again with its own ``store``). The ``sql_only`` tests look
inside the SQL store: its engine and statements, a second connection to the same database."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from dbmaint.operations import CHILD_JOB_TYPE, PARENT_JOB_TYPE, JobStatus, Operation, OperationReport
from manager_service.domain import ChildOutcome, CreateOutcome, Job, JobFilter, MaintenanceSpec, StartRequest
from manager_service.errors import JobAlreadyFinished, JobNotFound, RequestIdReused
from manager_service.store import JobStore, SQLAlchemyJobStore, open_store
from manager_service.store import sqlalchemy_store as store_module

P, R, C, F, X = (
    JobStatus.PENDING,
    JobStatus.RUNNING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
V, A, RI = Operation.VACUUM, Operation.ANALYZE, Operation.REINDEX
# A test that needs the SQLAlchemy store itself (its engine, its statements, its URL), not just the contract.
sql_only = pytest.mark.sql_only


def spec(
    targets=("db1",), operations=(V,), request_id: str | None = None, max_attempts: int = 3
) -> MaintenanceSpec:
    return MaintenanceSpec(tuple(targets), tuple(operations), request_id, max_attempts)


def assert_counters_match(store: JobStore, parent_id: str) -> Job:
    """The parent's counters must equal a recount of its children's statuses, always."""
    parent = store.get_job(parent_id)
    assert parent is not None and parent.progress is not None
    children = store.get_children(parent_id)
    counts = Counter(c.status for c in children)
    recount = {
        "total": len(children),
        "pending": counts[P],
        "running": counts[R],
        "succeeded": counts[C],
        "failed": counts[F],
        "cancelled": counts[X],
    }
    actual = {k: getattr(parent.progress, k) for k in recount}
    assert actual == recount, f"counters {actual} disagree with children {recount}"
    return parent


def start(store: JobStore, job: Job, worker: str = "w1") -> Job:
    (transition,) = store.start_children([StartRequest(job.id, job.attempt, worker)])
    assert transition.child.status is R
    return transition.child


def finish(store: JobStore, job: Job, status: JobStatus = C, worker: str = "w1", error: str | None = None) -> Job:
    transition = store.finish_child(ChildOutcome(job.id, job.attempt, worker, status, error))
    assert transition is not None
    return transition.child


def current(store: JobStore, job_id: str) -> Job:
    job = store.get_job(job_id)
    assert job is not None
    return job


# -- create


def test_create_stores_parent_and_children(store: JobStore) -> None:
    outcome = store.create_maintenance(spec(("db1", "db2"), (V, A, RI), max_attempts=4))
    assert outcome.created
    p = outcome.parent
    assert p.type == PARENT_JOB_TYPE and p.parent_id is None and p.status is P
    assert p.config == {"targets": ["db1", "db2"], "operations": ["vacuum", "analyze", "reindex"]}
    assert p.progress is not None and (p.progress.total, p.progress.pending) == (6, 6)
    assert len(outcome.children) == 6
    expected = list(itertools.product(("db1", "db2"), (V, A, RI)))
    assert [(c.target, c.operation) for c in outcome.children] == expected
    assert [c.position for c in outcome.children] == list(range(6))
    seqs = [c.seq for c in outcome.children]
    assert len(set(seqs)) == len(seqs) and min(seqs) > p.seq
    for target in {c.target for c in outcome.children}:  # each target's operations queue in the requested order
        mine = [c.seq for c in outcome.children if c.target == target]
        assert mine == sorted(mine)
    for c, (target, operation) in zip(outcome.children, expected, strict=True):
        assert c.type == CHILD_JOB_TYPE
        assert c.parent_id == p.id
        assert c.status is P
        assert c.config == {"operation": str(operation), "target": target}
        assert (c.attempt, c.max_attempts) == (1, 4)
        assert c.progress is None and c.worker_id is None
    assert store.count_jobs() == 7
    assert [c.id for c in store.get_children(p.id)] == [c.id for c in outcome.children]
    assert_counters_match(store, p.id)


@sql_only
def test_create_is_atomic_when_the_child_insert_fails(store: SQLAlchemyJobStore) -> None:
    before = store.create_maintenance(spec(("keep",)))
    count = store.count_jobs()

    def fail_on_child_insert(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool):
        if statement.lstrip().upper().startswith("INSERT") and many:
            raise RuntimeError("disk on fire")

    event.listen(store.engine, "before_cursor_execute", fail_on_child_insert)
    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            store.create_maintenance(spec(("db1", "db2"), (V, A), request_id="atomic-1"))
    finally:
        event.remove(store.engine, "before_cursor_execute", fail_on_child_insert)

    assert store.count_jobs() == count, "the parent (or some children) survived a failed create"
    page = store.list_jobs(JobFilter(), 100, None)
    assert {j.id for j in page.jobs} == {before.parent.id, *(c.id for c in before.children)}
    # the key was not burnt: the same request now succeeds
    again = store.create_maintenance(spec(("db1", "db2"), (V, A), request_id="atomic-1"))
    assert again.created and len(again.children) == 4


@sql_only
def test_create_failing_on_a_duplicate_child_id_stores_nothing_and_says_so(store: SQLAlchemyJobStore, monkeypatch):
    """An IntegrityError that is not a request_id race must surface as itself: a request without a request_id
    cannot have 'already used' a key."""
    store.create_maintenance(spec(("existing",)))  # a parent with request_id NULL is already stored
    count = store.count_jobs()
    ids = iter([uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=2)])  # parent, then two equal child ids
    monkeypatch.setattr(store_module, "uuid", SimpleNamespace(uuid4=lambda: next(ids)))
    with pytest.raises(IntegrityError):
        store.create_maintenance(spec(("db1",), (V, A)))
    assert store.count_jobs() == count


def test_same_request_id_returns_the_same_jobs(store: JobStore) -> None:
    first = store.create_maintenance(spec(("db1", "db2"), (V, A), request_id="req-1"))
    count = store.count_jobs()
    second = store.create_maintenance(spec(("db1", "db2"), (V, A), request_id="req-1"))
    assert not second.created and first.created
    assert second.parent.id == first.parent.id
    assert second.parent.request_id == "req-1"
    assert [c.id for c in second.children] == [c.id for c in first.children]
    assert store.count_jobs() == count


def test_same_request_id_after_progress_returns_current_state(store: JobStore) -> None:
    first = store.create_maintenance(spec(("db1",), (V,), request_id="req-2"))
    finish(store, start(store, first.children[0]))
    again = store.create_maintenance(spec(("db1",), (V,), request_id="req-2"))
    assert not again.created
    assert again.parent.status is C and again.children[0].status is C


@pytest.mark.parametrize(
    "other",
    [spec(("db1", "db2"), (V,), "req-x"), spec(("db1",), (V, A), "req-x"), spec(("db2", "db1"), (V, A), "req-x")],
    ids=["other-operations", "other-targets", "other-target-order"],
)
def test_same_request_id_with_other_parameters_is_refused(store: JobStore, other) -> None:
    store.create_maintenance(spec(("db1", "db2"), (V, A), "req-x"))
    count = store.count_jobs()
    with pytest.raises(RequestIdReused, match="req-x"):
        store.create_maintenance(other)
    assert store.count_jobs() == count


def test_different_request_ids_create_different_parents(store: JobStore) -> None:
    a = store.create_maintenance(spec(request_id="a"))
    b = store.create_maintenance(spec(request_id="b"))
    none1 = store.create_maintenance(spec())
    none2 = store.create_maintenance(spec())
    assert len({a.parent.id, b.parent.id, none1.parent.id, none2.parent.id}) == 4
    assert all(o.created for o in (a, b, none1, none2))


# -- transitions and counters


def test_counters_follow_start_and_finish(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1", "db2", "db3"), (V, A)))
    pid = out.parent.id
    c = out.children
    assert assert_counters_match(store, pid).status is P

    transitions = store.start_children([StartRequest(c[0].id, 1, "w1"), StartRequest(c[2].id, 1, "w2")])
    assert [t.child.id for t in transitions] == [c[0].id, c[2].id]
    assert transitions[-1].parent.status is R
    p = assert_counters_match(store, pid)
    assert p.status is R and p.started_at is not None
    running = current(store, c[2].id)
    assert running.worker_id == "w2" and running.started_at is not None

    report = OperationReport(engine="sqlite", bytes_before=10, bytes_after=4, notes=("VACUUM",))
    t = store.finish_child(ChildOutcome(c[0].id, 1, "w1", C, None, report))
    assert t is not None and t.child.status is C and t.child.report == report
    assert t.child.finished_at is not None
    assert_counters_match(store, pid)

    t = store.finish_child(ChildOutcome(c[2].id, 1, "w2", F, "locked"))
    assert t is not None and t.child.error == "locked"
    p = assert_counters_match(store, pid)
    assert p.status is R  # four left

    for job in (c[1], c[3], c[4], c[5]):
        finish(store, start(store, job))
        assert_counters_match(store, pid)
    p = assert_counters_match(store, pid)
    assert p.status is F and p.finished_at is not None
    assert p.error is not None and "1 child job(s) failed" in p.error and "db2/vacuum (locked)" in p.error


def test_all_completed_parent_completes(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1",), (V, A)))
    for job in out.children:
        finish(store, start(store, job))
    p = assert_counters_match(store, out.parent.id)
    assert p.status is C and p.error is None and p.finished_at is not None


def test_start_with_stale_attempt_or_twice_is_left_out(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1", "db2")))
    c1, c2 = out.children
    assert store.start_children([StartRequest(c1.id, 2, "w1")]) == []
    assert store.start_children([StartRequest("no-such-job", 1, "w1")]) == []
    started = store.start_children([StartRequest(c2.id, 1, "w1"), StartRequest(c2.id, 1, "w2")])
    assert [t.child.id for t in started] == [c2.id]
    assert current(store, c2.id).worker_id == "w1"
    assert current(store, c1.id).status is P
    assert_counters_match(store, out.parent.id)


def test_stale_results_are_ignored(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1",), (V, A)))
    pid = out.parent.id
    job = start(store, out.children[0], "w1")
    before = current(store, job.id)
    parent_before = current(store, pid)

    assert store.finish_child(ChildOutcome(job.id, 2, "w1", C)) is None  # wrong attempt
    assert store.finish_child(ChildOutcome(job.id, 0, "w1", C)) is None
    assert store.finish_child(ChildOutcome(job.id, 1, "w2", F)) is None  # wrong worker
    assert store.finish_child(ChildOutcome("no-such-job", 1, "w1", C)) is None
    assert store.finish_child(ChildOutcome(out.children[1].id, 1, "w1", C)) is None  # still pending
    assert current(store, job.id) == before
    assert current(store, pid) == parent_before

    finish(store, job, C, "w1")
    done = current(store, job.id)
    parent_done = assert_counters_match(store, pid)
    for status in (C, F, X):  # already terminal: the same result again, or another one
        assert store.finish_child(ChildOutcome(job.id, 1, "w1", status, "late")) is None
    assert current(store, job.id) == done
    assert current(store, pid) == parent_done


def test_finish_refuses_a_non_terminal_status(store: JobStore) -> None:
    out = store.create_maintenance(spec())
    job = start(store, out.children[0])
    for status in (P, R):
        with pytest.raises(ValueError):
            store.finish_child(ChildOutcome(job.id, 1, "w1", status))
    assert current(store, job.id).status is R


def test_release_requeues_then_fails_at_max_attempts(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1", "db2"), (V,), max_attempts=2))
    pid = out.parent.id
    job = start(store, out.children[0], "w1")

    t = store.release_child(job.id, 1, "stream ended")
    assert t is not None
    assert (t.child.status, t.child.attempt) == (P, 2)
    assert t.child.started_at is None and t.child.finished_at is None
    assert t.child.error is not None and "attempt 1" in t.child.error
    assert t.parent.status is R  # a parent that started stays RUNNING
    assert_counters_match(store, pid)

    # the old attempt is fenced off: neither a late result nor a second release change anything
    assert store.finish_child(ChildOutcome(job.id, 1, "w1", C)) is None
    assert store.release_child(job.id, 1, "again") is None
    assert store.release_child(job.id, 2, "not running yet") is None
    assert store.start_children([StartRequest(job.id, 1, "w2")]) == []

    job = start(store, current(store, job.id), "w2")
    assert job.attempt == 2 and job.worker_id == "w2" and job.error is None
    t = store.release_child(job.id, 2, "no heartbeat")
    assert t is not None
    assert (t.child.status, t.child.attempt) == (F, 2)
    assert t.child.error is not None and "2 of 2 attempts" in t.child.error and "no heartbeat" in t.child.error
    assert t.child.finished_at is not None
    p = assert_counters_match(store, pid)
    assert p.status is R  # db2 still pending

    finish(store, start(store, out.children[1]))
    p = assert_counters_match(store, pid)
    assert p.status is F and p.error is not None and "db1/vacuum" in p.error


def test_release_of_cancel_requested_child_cancels_it(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1",), (V,)))
    job = start(store, out.children[0])
    store.cancel_job(job.id, "stop")
    t = store.release_child(job.id, 1, "gone")
    assert t is not None and t.child.status is X and t.child.attempt == 1
    p = assert_counters_match(store, out.parent.id)
    assert p.status is X


# -- cancel


def test_cancel_parent_stops_pending_and_interrupts_running(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1", "db2", "db3", "db4"), (V,)))
    pid = out.parent.id
    done, running, pending, also_running = out.children
    finish(store, start(store, done))
    start(store, running, "w1")
    start(store, also_running, "w2")
    assert_counters_match(store, pid)

    outcome = store.cancel_job(pid, "operator said so")
    assert outcome.job.id == pid
    assert outcome.job.status is R and outcome.job.cancel_requested
    assert {j.id for j in outcome.to_interrupt} == {running.id, also_running.id}
    assert all(j.cancel_requested and j.status is R for j in outcome.to_interrupt)
    assert pid in {j.id for j in outcome.changed} and pending.id in {j.id for j in outcome.changed}
    stopped = current(store, pending.id)
    assert stopped.status is X and stopped.started_at is None and stopped.error == "operator said so"
    assert current(store, done.id).status is C  # finished children are left alone
    assert_counters_match(store, pid)

    # a cancelled pending child never starts
    assert store.start_children([StartRequest(pending.id, 1, "w1")]) == []

    finish(store, current(store, running.id), C, "w1")  # finished first: status stays honest
    assert current(store, running.id).status is C
    p = assert_counters_match(store, pid)
    assert p.status is R
    finish(store, current(store, also_running.id), X, "w2", "interrupted")
    p = assert_counters_match(store, pid)
    assert p.status is X and p.error == "operator said so" and p.finished_at is not None

    with pytest.raises(JobAlreadyFinished):
        store.cancel_job(pid, "again")


def test_cancel_pending_parent_ends_it_at_once(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1", "db2"), (V, A)))
    outcome = store.cancel_job(out.parent.id, "not today")
    assert outcome.job.status is X and outcome.to_interrupt == []
    p = assert_counters_match(store, out.parent.id)
    assert p.progress is not None and p.progress.cancelled == 4
    assert p.started_at is None and p.finished_at is not None
    assert all(c.status is X for c in store.get_children(out.parent.id))
    assert store.unfinished_children() == []


def test_cancel_running_child(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1", "db2"), (V,)))
    c1, c2 = out.children
    job = start(store, c1)
    outcome = store.cancel_job(job.id, "too slow")
    assert outcome.job.id == job.id and outcome.job.status is R and outcome.job.cancel_requested
    assert [j.id for j in outcome.to_interrupt] == [job.id]
    assert_counters_match(store, out.parent.id)
    finish(store, current(store, job.id), X, error="interrupted")
    finish(store, start(store, c2))
    p = assert_counters_match(store, out.parent.id)
    assert p.status is X  # a child was cancelled, none failed


def test_cancel_pending_child(store: JobStore) -> None:
    out = store.create_maintenance(spec(("db1", "db2"), (V,)))
    c1, c2 = out.children
    outcome = store.cancel_job(c2.id, "skip it")
    assert outcome.job.id == c2.id and outcome.job.status is X and outcome.to_interrupt == []
    assert out.parent.id in {j.id for j in outcome.changed}
    p = assert_counters_match(store, out.parent.id)
    assert p.status is P and not p.cancel_requested
    finish(store, start(store, c1))
    p = assert_counters_match(store, out.parent.id)
    assert p.status is X


def test_cancel_finished_or_unknown(store: JobStore) -> None:
    out = store.create_maintenance(spec())
    job = finish(store, start(store, out.children[0]))
    with pytest.raises(JobAlreadyFinished):
        store.cancel_job(job.id, "late")
    with pytest.raises(JobAlreadyFinished):
        store.cancel_job(out.parent.id, "late")
    with pytest.raises(JobNotFound):
        store.cancel_job(str(uuid.uuid4()), "who")
    assert current(store, job.id).status is C and not current(store, job.id).cancel_requested


def test_versions_grow_with_every_change(store: JobStore) -> None:
    out = store.create_maintenance(spec())
    job = out.children[0]
    versions = [job.version]
    job = start(store, job)
    versions.append(job.version)
    job = finish(store, job)
    versions.append(job.version)
    assert versions == sorted(set(versions))


def _assert_stored_as_answered(store: SQLAlchemyJobStore, *answered: Job) -> None:
    for job in answered:
        assert current(store, job.id) == job, f"{job.id}: the store answered a job that differs from its row"


def test_every_transition_answers_with_the_jobs_exactly_as_it_stored_them(store: SQLAlchemyJobStore) -> None:
    out = store.create_maintenance(spec(("db1", "db2", "db3"), (V, A)))
    report = OperationReport(engine="sqlite", bytes_before=10, bytes_after=4, notes=("VACUUM",))
    first, second, third, fourth = out.children[:4]

    started = store.start_children([StartRequest(c.id, c.attempt, "w1") for c in (first, second, third)])
    _assert_stored_as_answered(store, *(t.child for t in started), *(t.parent for t in started))
    finished = store.finish_child(ChildOutcome(first.id, first.attempt, "w1", C, None, report))
    assert finished is not None
    _assert_stored_as_answered(store, finished.child, finished.parent)
    released = store.release_child(second.id, second.attempt, "stream broke")
    assert released is not None and released.child.status is P
    _assert_stored_as_answered(store, released.child, released.parent)
    cancelled_child = store.cancel_job(fourth.id, "not needed")
    _assert_stored_as_answered(store, cancelled_child.job, *cancelled_child.changed)
    cancelled = store.cancel_job(out.parent.id, "stop")
    assert [j.id for j in cancelled.to_interrupt] == [third.id]
    _assert_stored_as_answered(store, cancelled.job, *cancelled.changed, *cancelled.to_interrupt)
    ended = store.finish_child(ChildOutcome(third.id, third.attempt, "w1", X, "interrupted"))
    assert ended is not None and ended.parent.status is X
    _assert_stored_as_answered(store, ended.child, ended.parent)


# -- reads


def _created(store: JobStore, n: int) -> list[CreateOutcome]:
    return [store.create_maintenance(spec((f"db{i}",), (V, A))) for i in range(n)]


def test_list_jobs_filters(store: JobStore) -> None:
    outs = _created(store, 3)
    finish(store, start(store, outs[0].children[0]))
    start(store, outs[1].children[0])

    parents = store.list_jobs(JobFilter(type=PARENT_JOB_TYPE), 100, None).jobs
    assert [j.id for j in parents] == [o.parent.id for o in reversed(outs)]
    children = store.list_jobs(JobFilter(type=CHILD_JOB_TYPE), 100, None).jobs
    assert len(children) == 6 and all(j.type == CHILD_JOB_TYPE for j in children)

    of_parent = store.list_jobs(JobFilter(parent_id=outs[1].parent.id), 100, None).jobs
    assert [j.id for j in of_parent] == [c.id for c in reversed(outs[1].children)]

    running = store.list_jobs(JobFilter(status=R), 100, None).jobs
    assert {j.id for j in running} == {outs[0].parent.id, outs[1].parent.id, outs[1].children[0].id}
    completed = store.list_jobs(JobFilter(status=C), 100, None).jobs
    assert [j.id for j in completed] == [outs[0].children[0].id]

    both = store.list_jobs(JobFilter(status=P, type=CHILD_JOB_TYPE, parent_id=outs[2].parent.id), 100, None)
    assert [j.id for j in both.jobs] == [c.id for c in reversed(outs[2].children)]
    assert both.next_before_seq is None
    assert store.list_jobs(JobFilter(parent_id="nobody"), 100, None).jobs == []


@pytest.mark.parametrize("page_size", [1, 2, 4, 9, 50])
def test_list_jobs_pages_newest_first_without_gaps(store: JobStore, page_size: int) -> None:
    outs = _created(store, 3)  # 9 jobs
    expected = [j.id for o in outs for j in (o.parent, *o.children)]
    expected.reverse()  # newest first
    seen: list[str] = []
    before: int | None = None
    pages = 0
    while True:
        page = store.list_jobs(JobFilter(), page_size, before)
        pages += 1
        assert len(page.jobs) <= page_size
        seen.extend(j.id for j in page.jobs)
        if page.next_before_seq is None:
            break
        assert len(page.jobs) == page_size
        before = page.next_before_seq
        assert pages < 20
    assert seen == expected
    assert pages == max(1, -(-len(expected) // page_size))


@sql_only
def test_reopened_store_sees_everything(store: SQLAlchemyJobStore, db_url: str) -> None:
    outs = _created(store, 2)
    job = start(store, outs[0].children[0], "w9")
    finish(store, start(store, outs[1].children[0]))
    store.cancel_job(outs[1].parent.id, "bye")
    keyed = store.create_maintenance(spec(("k",), request_id="durable"))
    snapshot = {j.id: j for j in store.list_jobs(JobFilter(), 1000, None).jobs}

    reopened = open_store(db_url)
    try:
        again = {j.id: j for j in reopened.list_jobs(JobFilter(), 1000, None).jobs}
        assert again == snapshot
        assert reopened.get_job(job.id) == current(store, job.id)
        assert reopened.get_job(job.id).worker_id == "w9"  # type: ignore[union-attr]
        for o in outs:
            assert_counters_match(reopened, o.parent.id)
        repeat = reopened.create_maintenance(spec(("k",), request_id="durable"))
        assert not repeat.created and repeat.parent.id == keyed.parent.id
    finally:
        reopened.close()


def test_unfinished_children_in_seq_order(store: JobStore) -> None:
    outs = _created(store, 3)
    finish(store, start(store, outs[0].children[0]))  # completed: left out
    start(store, outs[1].children[1])  # running
    store.cancel_job(outs[2].children[0].id, "no")  # cancelled: left out
    expected = [outs[0].children[1], outs[1].children[0], outs[1].children[1], outs[2].children[1]]
    unfinished = store.unfinished_children()
    assert [j.id for j in unfinished] == [j.id for j in expected]
    assert [j.status for j in unfinished] == [P, P, R, P]
    assert all(j.type == CHILD_JOB_TYPE for j in unfinished)
    seqs = [j.seq for j in unfinished]
    assert seqs == sorted(seqs)


def test_get_unknown(store: JobStore) -> None:
    assert store.get_job("nope") is None
    assert store.get_children("nope") == []


@sql_only
def test_request_id_race_answers_with_the_stored_parent(
    store: SQLAlchemyJobStore, db_url: str, monkeypatch
) -> None:
    """Two managers (or threads) insert the same key: the loser hits the unique index and must answer with the
    winner's jobs, created=False, and store nothing of its own."""
    loser = open_store(db_url)
    try:
        winner = store.create_maintenance(spec(("db1",), (V, A), request_id="race"))
        count = store.count_jobs()
        real = loser._find_request
        calls = []

        def blind_first(conn, s):  # the loser's first look happens "before" the winner committed
            calls.append(s.request_id)
            return None if len(calls) == 1 else real(conn, s)

        monkeypatch.setattr(loser, "_find_request", blind_first)
        outcome = loser.create_maintenance(spec(("db1",), (V, A), request_id="race"))
        assert len(calls) == 2
        assert not outcome.created
        assert outcome.parent.id == winner.parent.id
        assert [c.id for c in outcome.children] == [c.id for c in winner.children]
        assert store.count_jobs() == count
    finally:
        loser.close()


def test_the_scope_travels_in_every_child_config(store: JobStore) -> None:
    from manager_service.validation import Limits, validate_maintenance

    spec = validate_maintenance(["db1", "db2"], [], "", Limits(), schemas=["sales"], tables=["sales.orders"])
    outcome = store.create_maintenance(spec)
    assert outcome.parent.config["schemas"] == ["sales"] and outcome.parent.config["tables"] == ["sales.orders"]
    for child in outcome.children:
        assert child.config == {
            "operation": str(child.operation),
            "target": child.target,
            "schemas": ["sales"],
            "tables": ["sales.orders"],
        }


def test_children_are_queued_round_robin_over_targets(store: JobStore) -> None:
    """seq order (the dispatch order) takes every target's first operation before any target's second; positions
    and each target's own order stay as requested."""
    created = store.create_maintenance(spec(targets=("t1", "t2", "t3"), operations=(V, A, RI)))
    by_seq = sorted(created.children, key=lambda c: c.seq)
    assert [(c.target, c.operation) for c in by_seq[:3]] == [("t1", V), ("t2", V), ("t3", V)]
    assert [(c.target, c.operation) for c in by_seq[3:6]] == [("t1", A), ("t2", A), ("t3", A)]
    assert [c.position for c in created.children] == list(range(9))
    for target in ("t1", "t2", "t3"):
        mine = [c for c in by_seq if c.target == target]
        assert [c.operation for c in mine] == [V, A, RI]


# -- pages of children


def test_create_answers_with_children_equal_to_what_it_stored(store: JobStore) -> None:
    """The children in the answer are built from what was inserted (not re-read): they must equal the rows."""
    outcome = store.create_maintenance(spec(("db1", "db2", "db3"), (V, A)))
    assert outcome.children == store.get_children(outcome.parent.id)
    assert outcome.parent == store.get_job(outcome.parent.id)


@sql_only
def test_children_are_stored_exactly_as_sqlalchemy_stores_the_parent(store: SQLAlchemyJobStore) -> None:
    """The children go in through the driver directly: every value must land as SQLAlchemy writes it (SQLite
    keeps datetimes as text; a different format would sort and compare differently)."""
    store.create_maintenance(spec(("db1", "db2"), (V, A)))
    columns = "created_at, updated_at, cancel_requested, version, attempt, total, commit_token"
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT parent_id IS NULL, {columns} FROM jobs").all()
    parent = next(row for row in rows if row[0])
    kids = [row for row in rows if not row[0]]
    assert len(kids) == 4
    for kid in kids:
        assert (kid[1], kid[2], kid[7]) == (parent[1], parent[2], parent[7]), "same instant, same text, same token"
        assert (kid[3], kid[4], kid[5], kid[6]) == (False, 1, 1, 0)


def test_children_page_walks_the_children_in_position_order(store: JobStore) -> None:
    outcome = store.create_maintenance(spec([f"db{i}" for i in range(7)], (V, A)))  # 14 children
    seen: list[Job] = []
    after: int | None = None
    pages = []
    while True:
        page = store.children_page(outcome.parent.id, 5, after)
        pages.append(len(page.children))
        seen.extend(page.children)
        if not page.more:
            break
        after = page.children[-1].position
    assert pages == [5, 5, 4]
    assert [c.id for c in seen] == [c.id for c in store.get_children(outcome.parent.id)]
    assert [c.position for c in seen] == list(range(14))


def test_children_page_of_exactly_the_rest_says_no_more_follow(store: JobStore) -> None:
    outcome = store.create_maintenance(spec(("db1", "db2"), (V, A)))  # 4 children
    first = store.children_page(outcome.parent.id, 4)
    assert len(first.children) == 4 and not first.more
    assert not store.children_page(outcome.parent.id, 2, 3).children
    middle = store.children_page(outcome.parent.id, 2, 0)
    assert [c.position for c in middle.children] == [1, 2] and middle.more


def test_children_page_filters_by_status_and_pages_within_the_filter(store: JobStore) -> None:
    outcome = store.create_maintenance(spec([f"db{i}" for i in range(3)], (V, A)))  # 6 children
    c = outcome.children
    finish(store, start(store, c[0]))
    finish(store, start(store, c[2]), F, error="boom")
    start(store, c[3])
    store.cancel_job(c[5].id, "no")
    unfinished = store.children_page(outcome.parent.id, 10, statuses=[P, R, F, X])
    assert [(j.position, j.status) for j in unfinished.children] == [(1, P), (2, F), (3, R), (4, P), (5, X)]
    first = store.children_page(outcome.parent.id, 2, statuses=[P, R])
    assert [j.position for j in first.children] == [1, 3] and first.more
    rest = store.children_page(outcome.parent.id, 2, first.children[-1].position, statuses=[P, R])
    assert [j.position for j in rest.children] == [4] and not rest.more
    assert store.children_page(outcome.parent.id, 10, statuses=[C]).children == [current(store, c[0].id)]


def test_children_page_of_an_unknown_parent_or_a_child_is_empty(store: JobStore) -> None:
    outcome = store.create_maintenance(spec())
    assert store.children_page("nope", 10).children == []
    assert store.children_page(outcome.children[0].id, 10) == store.children_page("nope", 10)


@sql_only
def test_children_page_asks_the_database_for_one_page_not_every_child(store: SQLAlchemyJobStore) -> None:
    """Keyset paging: one statement, limited to the page (+1 row to learn whether more follow)."""
    outcome = store.create_maintenance(spec([f"db{i}" for i in range(50)], (V, A)))  # 100 children
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "jobs" in statement:
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        page = store.children_page(outcome.parent.id, 10, 40)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert [c.position for c in page.children] == list(range(41, 51)) and page.more
    assert len(statements) == 1 and "LIMIT" in statements[0].upper()


def test_a_repeated_request_answers_with_the_first_page_of_children(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "FIRST_CHILDREN_PAGE", 3)
    first = store.create_maintenance(spec(("db1", "db2"), (V, A), request_id="paged"))
    assert len(first.children) == 4, "a new parent's children are all in the outcome: the manager queues them"
    again = store.create_maintenance(spec(("db1", "db2"), (V, A), request_id="paged"))
    assert not again.created and again.more_children
    assert [c.id for c in again.children] == [c.id for c in first.children[:3]]
