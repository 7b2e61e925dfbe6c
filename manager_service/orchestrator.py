"""The manager's core: it owns the in-memory view (queues, leases, sessions) and drives every state change
through the store, which stays the source of truth.

Concurrency: everything here runs on one asyncio loop. Store calls run on a single writer thread (writes are
serialized, which is what SQLite needs anyway) and a small pool of reader threads. Changes that touch both the
store and the in-memory view hold ``_lock`` so the two never disagree.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ParamSpec, TypeVar

from dbmaint.operations import JobStatus
from manager_service.dispatch import DispatchQueue, PlannedAssignment, QueuedChild
from manager_service.domain import (
    ChildOutcome,
    CreateOutcome,
    Job,
    JobFilter,
    MaintenanceSpec,
    StartRequest,
    Transition,
    utcnow,
)
from manager_service.errors import (
    AlreadyExists,
    NotFound,
    ResourceExhausted,
    StoreUnavailable,
    Unavailable,
    WorkerNotFound,
)
from manager_service.events import EventBus
from manager_service.metrics import FleetView, ManagerMetrics
from manager_service.store.base import JobStore, Page
from manager_service.workers import (
    AssignCommand,
    CancelCommand,
    CloseCommand,
    DrainCommand,
    HelloInfo,
    WorkerSession,
)

log = logging.getLogger(__name__)

# How long the dispatcher waits before trying again when the job store is unavailable.
STORE_RETRY_SECONDS = 1.0

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class OrchestratorSettings:
    lease_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    operation_timeout: float = 6 * 3600.0
    max_watch_backlog: int = 10_000
    # Concurrent streams: each holds memory and a task; past these, new ones get RESOURCE_EXHAUSTED.
    max_workers: int = 1_000
    max_watchers: int = 1_000

    @property
    def reconnect_grace(self) -> float:
        """How long a reconnecting worker has to report a child it did not list in its Hello."""
        return min(self.lease_timeout, 2 * self.heartbeat_interval)


@dataclass(slots=True)
class Lease:
    """A running child, the worker that holds it, and when it is taken back unless renewed."""

    job_id: str
    attempt: int
    worker_id: str
    target: str
    expires_at: float = field(default=0.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    job: Job
    children: list[Job]


def job_extra(child: Job, worker_id: str, attempt: int | None = None) -> dict[str, object]:
    """The job fields of a log line about ``child`` (its own keys in JSON logs)."""
    return {
        "job_id": child.id,
        "parent_id": child.parent_id,
        "attempt": child.attempt if attempt is None else attempt,
        "worker_id": worker_id,
        "target": child.target,
    }


class Orchestrator:
    def __init__(
        self, store: JobStore, settings: OrchestratorSettings, metrics: ManagerMetrics | None = None
    ) -> None:
        self._store = store
        self.settings = settings
        self.metrics = metrics or ManagerMetrics()
        # When each pending child became PENDING (created or re-queued): the assignment-wait histogram.
        self._pending_since: dict[str, float] = {}
        self.manager_id = uuid.uuid4().hex[:12]
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="store-reader")
        self._lock = asyncio.Lock()
        self._queue = DispatchQueue()
        self._leases: dict[str, Lease] = {}
        self._workers: dict[str, WorkerSession] = {}
        self._events = EventBus(settings.max_watch_backlog)
        self._wake = asyncio.Event()
        # Results received and not yet applied: the committer takes them all on its next turn.
        self._inbox: list[tuple[WorkerSession, ChildOutcome]] = []
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._shutdown_done = False
        # Completed with an exception when a side task dies: the server stops rather than limp on.
        self.fatal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.metrics.watch_fleet(self._fleet_view)

    # -- life cycle

    async def start(self) -> None:
        await self._rebuild()
        for name, factory in (("committer", self._commit_loop), ("lease-checker", self._lease_loop)):
            task = asyncio.create_task(factory(), name=name)
            task.add_done_callback(self._on_side_task_done)
            self._tasks.append(task)
        self._wake.set()

    def _on_side_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closing:
            return
        error = task.exception() or RuntimeError(f"side task {task.get_name()} stopped")
        log.critical("side task %s died: %r; stopping the manager", task.get_name(), error)
        if not self.fatal.done():
            self.fatal.set_exception(error)

    async def _rebuild(self) -> None:
        """Load every unfinished child from the store: nothing in flight is forgotten by a restart."""
        children = await self._read(self._store.unfinished_children)
        deadline = time.monotonic() + self.settings.lease_timeout
        for child in children:
            assert child.target is not None
            if child.status is JobStatus.PENDING:
                self._enqueue(QueuedChild(child.seq, child.id, child.attempt, child.target))
            else:
                self._queue.mark_busy(child.target, child.id)
                self._leases[child.id] = Lease(
                    child.id, child.attempt, child.worker_id or "", child.target, deadline
                )
        log.info(
            "rebuilt from the store: %d pending and %d running children",
            len(self._queue),
            len(self._leases),
        )

    async def shutdown(self) -> None:
        """Stop dispatching, end worker streams cleanly and watchers with UNAVAILABLE. Idempotent. Running
        children stay RUNNING in the store: their workers keep going and report after the restart."""
        if self._shutdown_done:
            return
        self._shutdown_done = True
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in self._workers.values():
            session.send(CloseCommand("manager shutting down"))
        self._events.close_all("manager shutting down; watch again when it is back")

    def close_store(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._store.close()

    # -- store access off the loop

    async def _write(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._writer, lambda: fn(*args, **kwargs))

    async def _read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._readers, lambda: fn(*args, **kwargs))

    # -- client requests

    async def create(self, spec: MaintenanceSpec) -> CreateOutcome:
        self._refuse_if_closing()
        outcome = await self._write(self._store.create_maintenance, spec)
        if outcome.created:
            async with self._lock:
                for child in outcome.children:
                    assert child.target is not None
                    self._enqueue(QueuedChild(child.seq, child.id, child.attempt, child.target))
            self.metrics.created(
                [(outcome.parent.type, ""), *((c.type, str(c.operation or "")) for c in outcome.children)]
            )
            self._wake.set()
            log.info(
                "created parent %s: %d targets x %d operations = %d children",
                outcome.parent.id,
                len(spec.targets),
                len(spec.operations),
                len(outcome.children),
            )
        return outcome

    async def get(self, job_id: str, with_children: bool = True) -> Snapshot:
        job = await self._read(self._store.get_job, job_id)
        if job is None:
            raise NotFound(job_id)
        children = await self._read(self._store.get_children, job.id) if job.is_parent and with_children else []
        return Snapshot(job, children)

    async def list_jobs(self, filter: JobFilter, limit: int, before_seq: int | None) -> Page:
        return await self._read(self._store.list_jobs, filter, limit, before_seq)

    async def cancel(self, job_id: str, reason: str) -> Job:
        self._refuse_if_closing()
        async with self._lock:
            outcome = await self._write(self._store.cancel_job, job_id, reason)
            for job in outcome.changed:
                if not job.is_parent and job.status is JobStatus.CANCELLED:
                    self._queue.discard(job.id)
                    self._pending_since.pop(job.id, None)
                if job.status.is_terminal:
                    self.metrics.finished(job.type, job.status.value, str(job.operation or ""))
            for child in outcome.to_interrupt:
                self._interrupt(child.id, child.attempt, reason)
        self._events.publish([*outcome.changed, *outcome.to_interrupt])
        log.info(
            "cancel of %s: %d stopped, %d interrupted", job_id, len(outcome.changed), len(outcome.to_interrupt)
        )
        return outcome.job

    def _interrupt(self, job_id: str, attempt: int, reason: str) -> None:
        lease = self._leases.get(job_id)
        session = self._workers.get(lease.worker_id) if lease else None
        if session is not None:
            session.send(CancelCommand(job_id, attempt, reason))

    async def watch(self, job_id: str, with_children: bool = True) -> AsyncIterator[Snapshot | Job]:
        """A snapshot, then every change of the job (and of its children, unless ``with_children`` is False),
        until the job is terminal."""
        self._refuse_if_closing()
        if self._events.watchers >= self.settings.max_watchers:
            raise ResourceExhausted(f"{self.settings.max_watchers} watches are open; try again later")
        subscription = self._events.subscribe(job_id, with_children)
        try:
            snapshot = await self.get(job_id, with_children)
            yield snapshot
            if snapshot.job.status.is_terminal:
                return
            seen = {j.id: j.version for j in (snapshot.job, *snapshot.children)}
            while True:
                changed = await subscription.next()
                if seen.get(changed.id, 0) >= changed.version:
                    continue  # already in the snapshot or a later event
                seen[changed.id] = changed.version
                yield changed
                if changed.id == job_id and changed.status.is_terminal:
                    return
        finally:
            self._events.unsubscribe(subscription)

    def _enqueue(self, child: QueuedChild) -> None:
        self._queue.push(child)
        self._pending_since[child.job_id] = time.monotonic()

    def _fleet_view(self) -> FleetView:
        """For the metrics scrape, on the HTTP thread: copies taken under the GIL, never a live iteration."""
        sessions = list(self._workers.values())
        return FleetView(
            workers=len(sessions),
            draining_workers=sum(1 for s in sessions if s.draining),
            slots_total=sum(s.slots for s in sessions),
            slots_busy=sum(len(s.assigned) + len(s.foreign) for s in sessions),
            queue_depth=self._queue.depths(),
        )

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise Unavailable("the manager is shutting down")

    # -- what operators see

    def sessions(self) -> list[WorkerSession]:
        return list(self._workers.values())

    def unserved_targets(self) -> list[str]:
        served = {t for s in self._workers.values() if not s.draining for t in s.targets}
        return sorted(t for t in self._queue.pending_targets() if t not in served)

    def waiting_reason(self, child: Job) -> str:
        """Why a pending child has not started yet, in words an operator can act on."""
        if child.status is not JobStatus.PENDING or child.target is None:
            return ""
        serving = [s for s in self._workers.values() if child.target in s.targets]
        if not serving:
            return f"no connected worker serves target {child.target!r}"
        if all(s.draining for s in serving):
            return f"every worker serving target {child.target!r} is draining"
        busy_with = self._queue.busy_with(child.target)
        if busy_with is not None:
            return f"target {child.target!r} is busy with job {busy_with}"
        head = self._queue.head(child.target)
        if head is not None and head.job_id != child.id:
            return f"queued behind job {head.job_id} on target {child.target!r}"
        return f"waiting for a free slot on a worker serving {child.target!r}"

    # -- worker stream events

    async def connect_worker(self, hello: HelloInfo) -> WorkerSession:
        self._refuse_if_closing()
        async with self._lock:
            if hello.worker_id in self._workers:
                raise AlreadyExists(f"worker {hello.worker_id!r} is already connected; worker ids must be unique")
            if len(self._workers) >= self.settings.max_workers:
                raise ResourceExhausted(f"{self.settings.max_workers} workers are connected; no more are taken")
            session = WorkerSession(
                hello.worker_id, hello.targets, hello.slots, peer=hello.peer, accepts_batches=hello.accepts_batches
            )
            listed = dict(hello.running)
            now = time.monotonic()
            for lease in self._leases.values():
                if lease.worker_id != hello.worker_id:
                    continue
                if listed.get(lease.job_id) == lease.attempt:
                    lease.expires_at = now + self.settings.lease_timeout
                    session.assigned[lease.job_id] = lease.attempt
                else:
                    # Not running there any more: its result may still be on the way (re-sent after Hello).
                    lease.expires_at = min(lease.expires_at, now + self.settings.reconnect_grace)
            for job_id, attempt in hello.running:
                if session.assigned.get(job_id) != attempt:
                    session.foreign.add((job_id, attempt))
                    session.send(
                        CancelCommand(job_id, attempt, "this attempt is no longer assigned to this worker")
                    )
            self._workers[hello.worker_id] = session
        log.info(
            "worker %s connected from %s: targets %s, %d slots, kept %d running children",
            hello.worker_id,
            hello.peer,
            ", ".join(sorted(hello.targets)),
            hello.slots,
            len(session.assigned),
        )
        self._wake.set()
        return session

    async def disconnect_worker(self, session: WorkerSession, why: str) -> None:
        async with self._lock:
            if self._workers.get(session.worker_id) is session:
                del self._workers[session.worker_id]
            if self._closing:
                return  # a restart adopts them: the workers keep running and report to the next manager
            held: list[Lease] = []
            try:
                await self._apply_waiting_results()
                held = [lease for lease in self._leases.values() if lease.worker_id == session.worker_id]
                for lease in held:
                    await self._release_lease(lease, f"worker {session.worker_id} disconnected: {why}")
            except StoreUnavailable as error:
                log.warning(
                    "worker %s disconnected but %s; its leases lapse and re-queue later", session.worker_id, error
                )
        log.info("worker %s disconnected (%s); re-queued %d running children", session.worker_id, why, len(held))
        self._wake.set()

    def heartbeat(self, session: WorkerSession, running: Sequence[tuple[str, int]]) -> None:
        session.touch()
        now = time.monotonic()
        for job_id, attempt in running:
            lease = self._leases.get(job_id)
            if lease is not None and lease.worker_id == session.worker_id and lease.attempt == attempt:
                lease.expires_at = now + self.settings.lease_timeout
        if session.foreign:
            still_running = set(running)
            before = len(session.foreign)
            session.foreign &= still_running
            if len(session.foreign) != before:
                self._wake.set()

    def drain_worker(self, worker_id: str, reason: str) -> WorkerSession:
        """Ask a connected worker to drain. It gets no new work from now on (before it even answers)."""
        self._refuse_if_closing()
        session = self._workers.get(worker_id)
        if session is None:
            raise WorkerNotFound(worker_id)
        if not session.draining:
            session.draining = True
            session.send(DrainCommand(reason))
            log.info("asked worker %s to drain (%s)", worker_id, reason)
        return session

    def mark_draining(self, session: WorkerSession, reason: str) -> None:
        session.draining = True
        log.info("worker %s is draining (%s); no new work goes to it", session.worker_id, reason)

    def submit_result(self, session: WorkerSession, outcome: ChildOutcome) -> None:
        """Queue a worker's result for the next group commit, where it is applied at most once: stale attempts
        and other workers' children are ignored there."""
        session.touch()
        self._inbox.append((session, outcome))
        self._wake.set()

    # -- side tasks

    async def _commit_loop(self) -> None:
        """Group commit: each turn applies every result that arrived and starts every child that can start, in
        one store transaction, then sends the assignments. Results arriving meanwhile wait for the next turn."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    await self._commit_once()
            except StoreUnavailable as error:
                # Nothing was changed (memory moves only after the store did): try again shortly.
                log.warning("dispatch paused: %s; retrying in %.0fs", error, STORE_RETRY_SECONDS)
                await asyncio.sleep(STORE_RETRY_SECONDS)
                self._wake.set()

    async def _commit_once(self) -> None:
        results, self._inbox = self._inbox, []
        planned = self._plan_after(results)
        if not results and not planned:
            return
        starts = [StartRequest(p.child.job_id, p.child.attempt, p.worker_id) for p in planned]
        try:
            batch = await self._write(self._store.apply_batch, [outcome for _, outcome in results], starts)
        except BaseException:
            self._inbox[:0] = results  # retried on the next turn
            raise
        self._record_results(results, batch.finished)
        self._record_starts(planned, batch.started)
        self._events.publish(j for t in (*batch.finished, *batch.started) for j in (t.child, t.parent))

    def _plan_after(self, results: list[tuple[WorkerSession, ChildOutcome]]) -> list[PlannedAssignment]:
        """The dispatch plan as it will stand once ``results`` are applied: their targets and slots are free."""
        released: set[str] = set()
        freed: Counter[str] = Counter()
        for session, outcome in results:
            lease = self._leases.get(outcome.job_id)
            if lease is not None and lease.attempt == outcome.attempt and lease.worker_id == session.worker_id:
                released.add(lease.target)
            if session.holds(outcome.job_id, outcome.attempt):
                freed[session.worker_id] += 1
        capacities = []
        for session in self._workers.values():
            capacity = session.capacity()
            capacity.free_slots += freed[session.worker_id]
            capacities.append(capacity)
        return self._queue.plan(capacities, released=released)

    def _record_results(
        self, results: list[tuple[WorkerSession, ChildOutcome]], applied: list[Transition]
    ) -> None:
        by_id = {t.child.id: t for t in applied}
        finished_parents: set[str] = set()
        for session, outcome in results:
            session.forget(outcome.job_id, outcome.attempt)
            transition = by_id.get(outcome.job_id)
            if transition is None or transition.child.attempt != outcome.attempt:
                log.info(
                    "ignored a result for job %s attempt %d from worker %s: not the running attempt it holds",
                    outcome.job_id,
                    outcome.attempt,
                    session.worker_id,
                )
                continue
            lease = self._leases.pop(outcome.job_id, None)
            if lease is not None:
                self._queue.release(lease.target, lease.job_id)
            self._count_finished(transition, finished_parents)
            # A completed child is routine (DEBUG; the worker logs it at INFO); anything else is worth a line.
            child = transition.child
            level = logging.DEBUG if child.status is JobStatus.COMPLETED else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "job %s (parent %s, %s/%s) attempt %d on worker %s: %s%s",
                    child.id,
                    child.parent_id,
                    child.target,
                    child.operation,
                    child.attempt,
                    session.worker_id,
                    child.status.value,
                    f": {child.error}" if child.error else "",
                    extra=job_extra(child, session.worker_id),
                )

    def _count_finished(self, transition: Transition, finished_parents: set[str]) -> None:
        """Count what ``transition`` finished; a parent once (and logged), however many children ended it."""
        child, parent = transition.child, transition.parent
        if child.status.is_terminal:
            self.metrics.finished(child.type, child.status.value, str(child.operation or ""))
        if parent.status.is_terminal and parent.id not in finished_parents:
            finished_parents.add(parent.id)  # several children of one batch share the parent that ended
            self.metrics.finished(parent.type, parent.status.value, "")
            log.info("parent %s finished: %s", parent.id, parent.status.value, extra={"job_id": parent.id})

    def _record_starts(self, planned: list[PlannedAssignment], started: list[Transition]) -> None:
        transitions = {t.child.id: t for t in started}
        deadline = utcnow() + timedelta(seconds=self.settings.operation_timeout)
        now = time.monotonic()
        expires = now + self.settings.lease_timeout
        for plan in planned:
            child = plan.child
            transition = transitions.get(child.job_id)
            since = self._pending_since.pop(child.job_id, None)
            if transition is None:
                self._queue.discard(child.job_id)  # cancelled or changed meanwhile
                continue
            if since is not None:
                self.metrics.assignment_wait.observe(max(0.0, now - since))
            self._queue.take(child)
            self._leases[child.job_id] = Lease(child.job_id, child.attempt, plan.worker_id, child.target, expires)
            session = self._workers.get(plan.worker_id)
            if session is None:
                continue  # gone during the write: its disconnect re-queues the lease
            session.assigned[child.job_id] = child.attempt
            job = transition.child
            assert job.operation is not None and job.parent_id is not None
            session.send(
                AssignCommand(
                    job_id=job.id,
                    attempt=job.attempt,
                    target=child.target,
                    operation=job.operation,
                    job_type=job.type,
                    config=job.config,
                    deadline=deadline,
                    parent_id=job.parent_id,
                )
            )

    async def _lease_loop(self) -> None:
        tick = max(0.05, min(1.0, self.settings.lease_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            expired = [lease for lease in self._leases.values() if lease.expires_at <= now]
            if not expired:
                continue
            try:
                await self._release_expired(expired)
            except StoreUnavailable as error:
                log.warning("lease check paused: %s; retrying", error)
            self._wake.set()

    async def _apply_waiting_results(self) -> None:
        """Before taking leases back, apply the results that already arrived and wait for the committer: a
        delivered result must count, not have its child re-queued and run again. Caller holds ``_lock``."""
        if self._inbox:
            await self._commit_once()

    async def _release_expired(self, expired: list[Lease]) -> None:
        async with self._lock:
            await self._apply_waiting_results()
            for lease in expired:
                if self._leases.get(lease.job_id) is lease and lease.expires_at <= time.monotonic():
                    await self._release_lease(
                        lease,
                        f"no heartbeat from worker {lease.worker_id or '?'} for {self.settings.lease_timeout:g}s",
                    )

    async def _release_lease(self, lease: Lease, why: str) -> None:
        """The worker holding ``lease`` is lost: re-queue the child (or fail/cancel it), free its target.
        Caller holds ``_lock``. The store changes first: if it is unavailable, memory is left as it was."""
        transition = await self._write(self._store.release_child, lease.job_id, lease.attempt, why)
        self._leases.pop(lease.job_id, None)
        self._queue.release(lease.target, lease.job_id)
        session = self._workers.get(lease.worker_id)
        if session is not None and session.assigned.pop(lease.job_id, None) is not None:
            # Still connected but silent: ask it to stop; the slot stays taken until it says it has.
            session.foreign.add((lease.job_id, lease.attempt))
            session.send(CancelCommand(lease.job_id, lease.attempt, f"lease lapsed: {why}"))
        if transition is None:
            return
        self.metrics.attempts_lost.inc()
        self._count_finished(transition, set())
        child = transition.child
        if child.status is JobStatus.PENDING:
            self._enqueue(QueuedChild(child.seq, child.id, child.attempt, lease.target))
        log.warning(
            "job %s (parent %s, %s/%s) attempt %d lost (%s): now %s%s",
            child.id,
            child.parent_id,
            child.target,
            child.operation,
            lease.attempt,
            why,
            child.status.value,
            f" attempt {child.attempt}" if child.status is JobStatus.PENDING else "",
            extra=job_extra(child, lease.worker_id, attempt=lease.attempt),
        )
        self._events.publish([child, transition.parent])
