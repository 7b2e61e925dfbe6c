"""An in-memory JobStore: the store contract without a database, for fast tests of the layers above it.

It keeps the rules of the SQL store, not just its shape:

* every public method is one transaction: it runs under the database's lock, and a write stores the rows it
  changed together when it ends, or none of them if it raises;
* child changes are fenced by the state machine (``state_machine.result_applies`` / ``start_applies``) and move
  the parent's counters in the same transaction, then settle the parent's status and error;
* ``request_id`` is an idempotency key: the same key with the same parameters answers with the stored parent
  and the first page of its children, with other parameters raises RequestIdReused;
* ``seq`` grows with every insert (parent first, then its children round robin over the targets), lists are
  newest first and pages continue by ``before_seq``; children pages are in position order;
* the lease: several store objects may share one ``MemoryDatabase`` (as several managers share one PostgreSQL
  database). ``acquire_lease`` takes it when it is free, lapsed or already this holder's, and the term grows;
  from then on every write checks holder, term and expiry first and raises LeaseLost, having written nothing.
  Time is the database's clock (``time.monotonic`` unless one is given).
* every write that inserts or changes jobs appends one change per job it touched (the job as it leaves it), with
  a change_seq from a counter, except the children a new parent is created with; ``replace_workers`` keeps
  the workers of the writer's term.

Nothing survives the process: ``close`` forgets nothing, but there is nowhere to reopen it from.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import product

from dbmaint.operations import CHILD_JOB_TYPE, PARENT_JOB_TYPE, JobStatus
from manager_service import state_machine
from manager_service.domain import (
    BatchOutcome,
    CancelOutcome,
    ChildOutcome,
    CreateOutcome,
    Firing,
    FiringOutcome,
    FiringPlan,
    FiringsOutcome,
    Job,
    JobChange,
    JobFilter,
    MaintenanceSpec,
    Progress,
    Schedule,
    ScheduleSpec,
    StartRequest,
    Transition,
    job_to_dict,
    utcnow,
)
from manager_service.errors import (
    JobAlreadyFinished,
    JobNotFound,
    LeaseLost,
    RequestIdReused,
    ScheduleChanged,
    ScheduleExists,
    ScheduleNotFound,
    SlotAlreadyRecorded,
)
from manager_service.store import sqlalchemy_store as sql_store
from manager_service.store import transitions
from manager_service.store.base import ChildrenPage, LeaseState, Page
from manager_service.workers import WorkerView

Clock = Callable[[], float]


@dataclass(slots=True)
class Lease:
    """The lease record (one per database). ``holder`` empty: nobody holds it."""

    holder: str = ""
    address: str = ""
    term: int = 0
    expires_at: float = 0.0


@dataclass(slots=True)
class MemoryDatabase:
    """What the store objects of one "database" share: the rows by id, the idempotency keys, the lease."""

    clock: Clock = time.monotonic
    jobs: dict[str, Job] = field(default_factory=dict)
    children_of: dict[str, list[str]] = field(default_factory=dict)  # parent id -> child ids in position order
    requests: dict[str, tuple[str, str]] = field(default_factory=dict)  # request_id -> (parent id, fingerprint)
    lease: Lease = field(default_factory=Lease)
    last_seq: int = 0
    schedules: dict[str, Schedule] = field(default_factory=dict)  # by key, deleted ones included
    live_schedules: dict[str, str] = field(default_factory=dict)  # live id -> key
    firings: list[tuple[int, Firing]] = field(default_factory=list)  # (seq, firing) in insertion order
    last_firing_seq: int = 0
    changes: list[JobChange] = field(default_factory=list)
    last_change_seq: int = 0
    workers: dict[str, tuple[int, WorkerView]] = field(default_factory=dict)  # worker id -> (term, worker)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MemoryJobStore:
    """JobStore in memory; ``MemoryJobStore(database)`` opens another store object on a shared database."""

    def __init__(self, database: MemoryDatabase | None = None) -> None:
        self._db = database or MemoryDatabase()
        # (holder, term, ttl) once acquire_lease took the lease: from then on every write checks it.
        self._fence: tuple[str, int, float] | None = None
        self.on_stop: Callable[[LeaseLost], None] | None = None

    @property
    def database(self) -> MemoryDatabase:
        return self._db

    def close(self) -> None:
        """Nothing to release: the rows live as long as the database object."""

    def count_jobs(self) -> int:
        with self._db.lock:
            return len(self._db.jobs)

    # -- transactions

    @contextmanager
    def _write(self) -> Iterator[dict[str, Job]]:
        """One write transaction: the lease is checked first (LeaseLost: nothing is written); the body puts the
        rows it changes into the yielded dict, and they are stored together when it ends without an error."""
        with self._db.lock:
            self._check_lease()
            changed: dict[str, Job] = {}
            yield changed
            self._db.jobs.update(changed)
            self._append_changes(changed.values())

    def _append_changes(self, changed: Iterable[Job]) -> None:
        at = utcnow()
        for job in changed:
            self._db.last_change_seq += 1
            snapshot = json.dumps(job_to_dict(job), separators=(",", ":"))
            self._db.changes.append(
                JobChange(self._db.last_change_seq, job.id, job.parent_id, job.version, at, snapshot)
            )

    def _check_lease(self) -> None:
        if self._fence is None:
            return
        holder, term, _ = self._fence
        lease = self._db.lease
        if (lease.holder, lease.term) != (holder, term) or lease.expires_at <= self._db.clock():
            raise self._lease_lost("nothing was written")

    def _lease_lost(self, what: str) -> LeaseLost:
        assert self._fence is not None
        holder, term, _ = self._fence
        lease = self._db.lease
        state = LeaseState(False, lease.holder, lease.address, lease.term, None)
        lost = LeaseLost(
            f"this manager ({holder}, term {term}) no longer holds the job store's lease; {what}: "
            f"{state.describe()}",
            lease.holder,
            lease.address,
        )
        if self.on_stop is not None:
            self.on_stop(lost)
        return lost

    # -- the store lease

    def acquire_lease(self, holder: str, ttl: float, address: str = "") -> LeaseState:
        with self._db.lock:
            lease, now = self._db.lease, self._db.clock()
            if lease.holder not in ("", holder) and lease.expires_at > now:
                return LeaseState(False, lease.holder, lease.address, lease.term, lease.expires_at - now)
            self._db.lease = Lease(holder, address, lease.term + 1, now + ttl)
            self._fence = (holder, lease.term + 1, ttl)
            return LeaseState(True, holder, address, lease.term + 1, ttl)

    def renew_lease(self) -> LeaseState:
        """Like the SQL store: the holder and term must still be on the lease (a lapsed lease nobody took yet
        is renewed)."""
        if self._fence is None:
            raise LeaseLost("this store never took the job store's lease")
        holder, term, ttl = self._fence
        with self._db.lock:
            lease = self._db.lease
            if (lease.holder, lease.term) != (holder, term):
                raise self._lease_lost("it cannot be renewed")
            lease.expires_at = self._db.clock() + ttl
            return LeaseState(True, holder, lease.address, term, ttl)

    def release_lease(self) -> None:
        if self._fence is None:
            return
        holder, term, _ = self._fence
        with self._db.lock:
            if (self._db.lease.holder, self._db.lease.term) == (holder, term):
                self._db.lease = Lease("", "", term, self._db.clock())

    # -- reads

    def get_job(self, job_id: str) -> Job | None:
        with self._db.lock:
            return self._db.jobs.get(job_id)

    def get_children(self, parent_id: str) -> list[Job]:
        with self._db.lock:
            return self._children(parent_id)

    def children_page(
        self,
        parent_id: str,
        limit: int,
        after_position: int | None = None,
        statuses: Sequence[JobStatus] = (),
    ) -> ChildrenPage:
        with self._db.lock:
            return self._children_page(parent_id, limit, after_position, statuses)

    def _children_page(
        self, parent_id: str, limit: int, after_position: int | None = None, statuses: Sequence[JobStatus] = ()
    ) -> ChildrenPage:
        after = -1 if after_position is None else after_position
        wanted = set(statuses)
        found = [
            child
            for child in self._children(parent_id)
            if child.position > after and (not wanted or child.status in wanted)
        ]
        return ChildrenPage(found[:limit], len(found) > limit)

    def list_jobs(self, filter: JobFilter, limit: int, before_seq: int | None) -> Page:
        with self._db.lock:
            newest_first = sorted(self._db.jobs.values(), key=lambda job: job.seq, reverse=True)
        found = [
            job for job in newest_first if _matches(job, filter) and (before_seq is None or job.seq < before_seq)
        ]
        page = found[:limit]
        return Page(page, page[-1].seq if len(found) > limit and page else None)

    def unfinished_children(self) -> list[Job]:
        with self._db.lock:
            unfinished = [
                job
                for job in self._db.jobs.values()
                if job.type == CHILD_JOB_TYPE and job.status in (JobStatus.PENDING, JobStatus.RUNNING)
            ]
        return sorted(unfinished, key=lambda job: job.seq)

    # -- what standbys read

    def changes_after(self, after_seq: int, limit: int) -> list[JobChange]:
        with self._db.lock:
            return [change for change in self._db.changes if change.change_seq > after_seq][:limit]

    def last_change_seq(self) -> int:
        with self._db.lock:
            return self._db.changes[-1].change_seq if self._db.changes else 0

    def prune_changes(self, kept_for: float) -> int:
        with self._write():
            horizon = utcnow() - timedelta(seconds=kept_for)
            kept = [change for change in self._db.changes if change.at >= horizon]
            pruned = len(self._db.changes) - len(kept)
            self._db.changes = kept
            return pruned

    def replace_workers(self, connected: Sequence[WorkerView]) -> None:
        term = self._fence[1] if self._fence is not None else 0
        with self._write():
            self._db.workers = {worker.worker_id: (term, worker) for worker in connected}

    def list_workers(self) -> list[WorkerView]:
        with self._db.lock:
            rows = list(self._db.workers.values())
        newest = max((term for term, _ in rows), default=0)
        return sorted((worker for term, worker in rows if term == newest), key=lambda worker: worker.worker_id)

    def pending_targets(self) -> list[str]:
        with self._db.lock:
            return sorted(
                {
                    job.target
                    for job in self._db.jobs.values()
                    if job.status is JobStatus.PENDING and job.target is not None and not job.is_parent
                }
            )

    def _children(self, parent_id: str) -> list[Job]:
        return [self._db.jobs[child_id] for child_id in self._db.children_of.get(parent_id, [])]

    # -- create

    def create_maintenance(self, spec: MaintenanceSpec) -> CreateOutcome:
        with self._write() as changed:
            if spec.request_id and spec.request_id in self._db.requests:
                return self._repeated_request(spec)
            outcome = self._new_maintenance(spec)
            changed[outcome.parent.id] = outcome.parent
            # Stored, but no change in the feed: no watch of the parent can see them before their parent exists.
            self._db.jobs.update((child.id, child) for child in outcome.children)
            self._db.children_of[outcome.parent.id] = [child.id for child in outcome.children]
            if spec.request_id:
                self._db.requests[spec.request_id] = (outcome.parent.id, spec.fingerprint)
            return outcome

    def _repeated_request(self, spec: MaintenanceSpec) -> CreateOutcome:
        assert spec.request_id is not None
        parent_id, fingerprint = self._db.requests[spec.request_id]
        if fingerprint != spec.fingerprint:
            raise RequestIdReused(
                f"request_id {spec.request_id!r} was already used for other targets or operations "
                f"(parent {parent_id})"
            )
        # Read when called: the SQL store's page size is the one both stores answer with.
        page = self._children_page(parent_id, sql_store.FIRST_CHILDREN_PAGE)
        return CreateOutcome(self._db.jobs[parent_id], page.children, created=False, more_children=page.more)

    def _new_maintenance(self, spec: MaintenanceSpec) -> CreateOutcome:
        """The parent and its children as the SQL store inserts them: seq in insertion order (the parent, then
        the children round robin over the targets), the answer's children in position order."""
        now = utcnow()
        pairs = list(product(spec.targets, spec.operations))
        scope = spec.child_config()
        parent = Job(
            id=str(uuid.uuid4()),
            seq=self._next_seq(),
            type=PARENT_JOB_TYPE,
            status=JobStatus.PENDING,
            config={"targets": list(spec.targets), "operations": [str(o) for o in spec.operations], **scope},
            created_at=now,
            request_id=spec.request_id,
            progress=Progress(total=len(pairs), pending=len(pairs)),
            schedule_id=spec.schedule_id,
            scheduled_time=spec.scheduled_time,
            window=spec.window,
        )
        children = [
            Job(
                id=str(uuid.uuid4()),
                seq=self._next_seq(),
                type=CHILD_JOB_TYPE,
                status=JobStatus.PENDING,
                config={"operation": str(operation), "target": target, **scope},
                created_at=now,
                parent_id=parent.id,
                target=target,
                operation=operation,
                position=position,
                attempt=1,
                max_attempts=spec.max_attempts,
                schedule_id=spec.schedule_id,
                scheduled_time=spec.scheduled_time,
                window=spec.window,
            )
            for position, (target, operation) in sql_store._round_robin(pairs, len(spec.operations))
        ]
        children.sort(key=lambda child: child.position)
        return CreateOutcome(parent, children, created=True)

    def _next_seq(self) -> int:
        self._db.last_seq += 1
        return self._db.last_seq

    # -- child transitions

    def start_children(self, requests: Sequence[StartRequest]) -> list[Transition]:
        return self.apply_batch((), requests).started

    def finish_child(self, outcome: ChildOutcome) -> Transition | None:
        finished = self.apply_batch([outcome], ()).finished
        return finished[0] if finished else None

    def apply_batch(self, outcomes: Sequence[ChildOutcome], starts: Sequence[StartRequest]) -> BatchOutcome:
        """Results first, then starts, in one transaction; a result or start that does not apply (stale attempt,
        other worker, already applied earlier in this batch) is left out of the answer."""
        for outcome in outcomes:
            if outcome.status not in state_machine.RESULT_STATUSES:
                raise ValueError(f"a result cannot set status {outcome.status}")
        if not outcomes and not starts:
            return BatchOutcome([], [])
        now = utcnow()
        with self._write() as changed:
            finished = [self._finish(changed, outcome, now) for outcome in outcomes]
            started = [self._start(changed, request, now) for request in starts]
            moves = [move for move in (*finished, *started) if move is not None]
            parents = self._settle_parents(changed, moves, now)
        return BatchOutcome(
            finished=[Transition(after, parents[after.parent_id or ""]) for _, after in filter(None, finished)],
            started=[Transition(after, parents[after.parent_id or ""]) for _, after in filter(None, started)],
        )

    def _finish(
        self, changed: dict[str, Job], outcome: ChildOutcome, now: datetime
    ) -> tuple[JobStatus, Job] | None:
        child = self._current(changed, outcome.job_id)
        if child is None or not state_machine.result_applies(child, outcome.attempt, outcome.worker_id):
            return None
        state_machine.check_transition(child.status, outcome.status)
        after = transitions.applied(child, transitions.finish(outcome, now))
        changed[child.id] = after
        return child.status, after

    def _start(
        self, changed: dict[str, Job], request: StartRequest, now: datetime
    ) -> tuple[JobStatus, Job] | None:
        child = self._current(changed, request.job_id)
        if child is None or child.is_parent or not state_machine.start_applies(child, request.attempt):
            return None
        after = transitions.applied(child, transitions.start(request, now))
        changed[child.id] = after
        return child.status, after

    def release_child(self, job_id: str, attempt: int, why: str) -> Transition | None:
        now = utcnow()
        with self._write() as changed:
            child = self._db.jobs.get(job_id)
            if child is None or child.status is not JobStatus.RUNNING or child.attempt != attempt:
                return None
            changes = transitions.release(child, why, now)
            state_machine.check_transition(child.status, changes["status"])
            after = transitions.applied(child, changes)
            changed[child.id] = after
            parents = self._settle_parents(changed, [(child.status, after)], now)
            return Transition(after, parents[child.parent_id or ""])

    # -- cancel

    def cancel_job(self, job_id: str, reason: str) -> CancelOutcome:
        now = utcnow()
        with self._write() as changed:
            job = self._db.jobs.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            if job.status.is_terminal:
                raise JobAlreadyFinished(job_id, job.status.value)
            if job.is_parent:
                return self._cancel_parent(changed, job, reason, now)
            return self._cancel_child(changed, job, reason, now)

    def _cancel_parent(self, changed: dict[str, Job], parent: Job, reason: str, now: datetime) -> CancelOutcome:
        changed[parent.id] = transitions.applied(parent, transitions.request_parent_cancel(reason))
        children = self._children(parent.id)
        running = [self._request_cancel(changed, c) for c in children if c.status is JobStatus.RUNNING]
        cancelled = [
            self._cancel_pending(changed, c, reason, now) for c in children if c.status is JobStatus.PENDING
        ]
        moves = [(JobStatus.PENDING, child) for child in cancelled]
        parent_after = self._settle_parents(changed, moves, now, also=[parent.id])[parent.id]
        return CancelOutcome(job=parent_after, changed=[parent_after, *cancelled], to_interrupt=running)

    def _cancel_child(self, changed: dict[str, Job], child: Job, reason: str, now: datetime) -> CancelOutcome:
        assert child.parent_id is not None
        if child.status is JobStatus.RUNNING:
            asked = self._request_cancel(changed, child)
            return CancelOutcome(job=asked, changed=[asked], to_interrupt=[asked])
        cancelled = self._cancel_pending(changed, child, reason, now)
        parent_after = self._settle_parents(changed, [(JobStatus.PENDING, cancelled)], now)[child.parent_id]
        return CancelOutcome(job=cancelled, changed=[cancelled, parent_after])

    @staticmethod
    def _request_cancel(changed: dict[str, Job], child: Job) -> Job:
        """A running child keeps running until its worker reports; it is marked so it is not started again."""
        changed[child.id] = transitions.applied(child, transitions.request_cancel())
        return changed[child.id]

    @staticmethod
    def _cancel_pending(changed: dict[str, Job], child: Job, reason: str, now: datetime) -> Job:
        """PENDING -> CANCELLED (the caller moves the parent's counters); the child never runs."""
        changed[child.id] = transitions.applied(child, transitions.cancel_pending(reason, now))
        return changed[child.id]

    # -- parent bookkeeping

    def _settle_parents(
        self,
        changed: dict[str, Job],
        moves: Sequence[tuple[JobStatus, Job]],
        now: datetime,
        also: Sequence[str] = (),
    ) -> dict[str, Job]:
        """Move each parent's counters by its children's changes (status before, child after), then settle its
        status and error, as the SQL store does; the parents in ``also`` are settled even if no child moved."""
        deltas: dict[str, Counter[str]] = {parent_id: Counter() for parent_id in also}
        for before, after in moves:
            assert after.parent_id is not None
            delta = deltas.setdefault(after.parent_id, Counter())
            delta[state_machine.COUNTER_FOR_STATUS[before]] -= 1
            delta[state_machine.COUNTER_FOR_STATUS[after.status]] += 1
        settled: dict[str, Job] = {}
        for parent_id, delta in deltas.items():
            parent = self._current(changed, parent_id)
            assert parent is not None and parent.progress is not None
            settled[parent_id] = self._settled(changed, parent, delta, now)
        return settled

    def _settled(self, changed: dict[str, Job], parent: Job, delta: Counter[str], now: datetime) -> Job:
        assert parent.progress is not None
        progress = Progress(
            total=parent.progress.total,
            **{name: getattr(parent.progress, name) + delta[name] for name in transitions.PROGRESS_COUNTERS},
        )
        status = state_machine.parent_status(parent.status, progress, parent.cancel_requested)
        if progress == parent.progress and status is parent.status:
            return parent
        failed: list[Job] = []
        if transitions.finishes(parent, status):
            children = [self._current(changed, child_id) for child_id in self._db.children_of[parent.id]]
            failed = [child for child in children if child is not None and child.status is JobStatus.FAILED]
        after = transitions.applied(parent, transitions.settle(parent, progress, status, now, failed))
        changed[parent.id] = after
        return after

    # -- schedules (each method checks everything before it changes anything: all or nothing)

    def create_schedule(self, spec: ScheduleSpec, paused: bool) -> Schedule:
        with self._write():
            if spec.id in self._db.live_schedules:
                raise ScheduleExists(spec.id)
            now = utcnow()
            schedule = Schedule(key=str(uuid.uuid4()), spec=spec, paused=paused, created_at=now, updated_at=now)
            self._db.schedules[schedule.key] = schedule
            self._db.live_schedules[spec.id] = schedule.key
            return schedule

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        with self._db.lock:
            key = self._db.live_schedules.get(schedule_id)
            return self._db.schedules[key] if key is not None else None

    def list_schedules(self, limit: int, after_id: str | None) -> list[Schedule]:
        with self._db.lock:
            ids = sorted(i for i in self._db.live_schedules if after_id is None or i > after_id)[:limit]
            return [self._db.schedules[self._db.live_schedules[i]] for i in ids]

    def update_schedule(self, schedule_id: str, spec: ScheduleSpec, paused: bool) -> Schedule:
        with self._write():
            current = self._live_schedule(schedule_id)
            after = replace(current, spec=spec, paused=paused, version=current.version + 1, updated_at=utcnow())
            self._db.schedules[current.key] = after
            return after

    def delete_schedule(self, schedule_id: str) -> None:
        with self._write():
            current = self._live_schedule(schedule_id)
            self._db.schedules[current.key] = replace(current, version=current.version + 1, updated_at=utcnow())
            del self._db.live_schedules[schedule_id]

    def record_firings(self, plan: FiringPlan) -> FiringsOutcome:
        fired = [record for record in plan.records if record.outcome is FiringOutcome.FIRED]
        if len(fired) > 1 or (plan.fire is None) != (not fired):
            raise ValueError("a plan fires at most one slot, and creates a parent exactly when it fires")
        with self._write() as changed:
            current = self._db.schedules.get(plan.schedule_key)
            if current is None or self._db.live_schedules.get(current.id) != current.key:
                raise ScheduleChanged(f"schedule {plan.schedule_key} was deleted")
            if current.version != plan.version:
                raise ScheduleChanged(
                    f"schedule {current.id} changed (version {current.version}, planned on {plan.version})"
                )
            taken = {(f.schedule_key, f.scheduled_time) for _, f in self._db.firings}
            if any((current.key, record.scheduled_time) in taken for record in plan.records):
                raise SlotAlreadyRecorded(f"a slot of schedule {current.id} already has a firing")
            created = None
            if fired and plan.fire is not None:
                spec = replace(plan.fire, schedule_id=current.id, scheduled_time=fired[0].scheduled_time)
                created = self._new_maintenance(spec)
                changed.update((job.id, job) for job in (created.parent, *created.children))
                self._db.children_of[created.parent.id] = [child.id for child in created.children]
            now = utcnow()
            firings = [
                Firing(
                    schedule_key=current.key,
                    schedule_id=current.id,
                    scheduled_time=record.scheduled_time,
                    outcome=record.outcome,
                    recorded_at=now,
                    parent_id=created.parent.id if created and record.outcome is FiringOutcome.FIRED else None,
                    reason=record.reason,
                    missed_count=record.missed_count,
                )
                for record in plan.records
            ]
            for firing in firings:
                self._db.last_firing_seq += 1
                self._db.firings.append((self._db.last_firing_seq, firing))
            slots = [moment for moment in (current.last_slot, plan.last_slot) if moment is not None]
            after = replace(
                current,
                version=current.version + 1,
                updated_at=now,
                last_slot=max(slots, default=None),
                buffered_slot=plan.buffered_slot,
                last_parent_id=created.parent.id if created else current.last_parent_id,
            )
            self._db.schedules[current.key] = after
            return FiringsOutcome(firings, created, after)

    def list_firings(
        self, schedule_id: str, limit: int, before_seq: int | None
    ) -> tuple[list[Firing], int | None]:
        with self._db.lock:
            current = self._live_schedule(schedule_id)
            found = [
                (seq, firing)
                for seq, firing in reversed(self._db.firings)
                if firing.schedule_key == current.key and (before_seq is None or seq < before_seq)
            ]
        page = found[:limit]
        more = len(found) > limit and bool(page)
        return [firing for _, firing in page], (page[-1][0] if more else None)

    def _live_schedule(self, schedule_id: str) -> Schedule:
        key = self._db.live_schedules.get(schedule_id)
        if key is None:
            raise ScheduleNotFound(schedule_id)
        return self._db.schedules[key]

    def _current(self, changed: dict[str, Job], job_id: str) -> Job | None:
        """The job as this transaction sees it: its own change if it made one, else the stored row."""
        return changed.get(job_id) or self._db.jobs.get(job_id)


def _matches(job: Job, filter: JobFilter) -> bool:
    return (
        (filter.status is None or job.status is filter.status)
        and (not filter.type or job.type == filter.type)
        and (not filter.parent_id or job.parent_id == filter.parent_id)
        and (not filter.schedule_id or job.schedule_id == filter.schedule_id)
    )
