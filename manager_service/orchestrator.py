"""The async shell around the fleet core (``fleet.py``): it owns the lock, the store threads, the commit loop,
the lease timer and each worker stream's outbox, and does what the core decides.

Concurrency: everything here runs on one asyncio loop. Store calls run on a single writer thread (writes are
serialized, which is what SQLite needs anyway) and a small pool of reader threads. Every store write and the
core update that follows it happen under ``_lock``, so the core never sees a change the store did not make,
and a cancel can never overtake the start it must interrupt. Worker events that need no write (hello,
heartbeat, results arriving, a stream ending) go straight to the core: they are synchronous and never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DataError

from dbmaint.operations import JobStatus
from dbmaint.windows import WINDOW_ENDED_BEFORE_START, window_ended
from manager_service import window_rules
from manager_service.domain import (
    BatchOutcome,
    ChildOutcome,
    CreateOutcome,
    Job,
    JobChange,
    JobFilter,
    MaintenanceSpec,
    Transition,
    utcnow,
)
from manager_service.errors import (
    CommitOutcomeUnknown,
    JobAlreadyFinished,
    JobNotFound,
    LeaseLost,
    ShuttingDown,
    StoreUnavailable,
    WorkerNotFound,
)
from manager_service.events import EventBus, wait_set
from manager_service.fleet import FleetCore, FleetSettings, Lease, Turn, TurnReport, stored_window
from manager_service.metrics import FleetView, ManagerMetrics
from manager_service.reads import Snapshot, stored_snapshot, watch_job
from manager_service.scheduler import ScheduleShell
from manager_service.store.base import CHANGES_KEPT_FOR, JobStore, Page
from manager_service.validation import DEFAULT_CHILDREN_PAGE_SIZE
from manager_service.workers import (
    AssignCommand,
    CloseCommand,
    Command,
    HelloInfo,
    RunningReport,
    Send,
    WorkerSession,
    WorkerView,
    view_of,
)

log = logging.getLogger(__name__)

# How long the dispatcher waits before trying again when the job store is unavailable.
STORE_RETRY_SECONDS = 1.0
# Errors after which this manager must not act on the store any more: another manager holds it, or a commit's
# outcome is unknown (memory may disagree with the store). The side task dies; the server steps down.
STOP_ACTING = (LeaseLost, CommitOutcomeUnknown)

# How long after a window instant (an opening, a window end) the window keeper wakes: the instant has passed then.
WINDOW_MARGIN = 0.01

# Result arrival times kept per stream for the dispatch-gap metric (more than any worker has slots).
MAX_RESULT_ARRIVALS = 10_000

# The connected workers are stored for standbys (``JobStore.replace_workers``) at once after a connect, a
# disconnect or a drain, and at least this often (their last heartbeat); old ``job_changes`` are pruned this often.
WORKERS_STORED_EVERY = 3.0
CHANGES_PRUNED_EVERY = 60.0

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

    @property
    def fleet(self) -> FleetSettings:
        return FleetSettings(self.lease_timeout, self.reconnect_grace, self.max_workers)


__all__ = ["Orchestrator", "OrchestratorSettings", "Snapshot"]


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
        self.manager_id = uuid.uuid4().hex[:12]
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="store-reader")
        self._lock = asyncio.Lock()
        self._core = FleetCore(settings.fleet)
        self._outboxes: dict[int, asyncio.Queue[Command]] = {}
        # Dispatch-gap metric only: per stream, when each result not yet followed by an assignment arrived; per
        # target with queued work, when the last result that frees it arrived.
        self._result_arrivals: dict[int, deque[float]] = {}
        self._target_freed_at: dict[str, float] = {}
        self._events = EventBus(settings.max_watch_backlog)
        self._wake = asyncio.Event()
        # Set when the next window instant may have moved (a windowed parent queued, a windowed child started).
        self._windows_changed = asyncio.Event()
        # Set when the stored workers are out of date (a connect, a disconnect, a drain).
        self._workers_changed = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._shutdown_done = False
        # Completed with an exception when a side task dies: the server stops rather than limp on.
        self.fatal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.metrics.watch_fleet(self._fleet_view)
        # Schedules: their requests, and the loop that fires them (a side task, so only a leader fires).
        self.schedules = ScheduleShell(
            store, self._write, self._read, self._queue_created, self._cancel_replaced, self.metrics
        )

    # -- life cycle

    async def start(self) -> None:
        """Load every unfinished child from the store: nothing in flight is forgotten by a restart."""
        children = await self._read(self._store.unfinished_children)
        self._core.rebuild(children, time.monotonic())
        log.info(
            "rebuilt from the store: %d pending and %d running children",
            len(self._core.queue),
            len(self._core.leases),
        )
        side_tasks = (
            ("committer", self._commit_loop),
            ("lease-checker", self._lease_loop),
            ("window-keeper", self._window_loop),
            ("scheduler", self.schedules.run),
            ("store-keeper", self._keep_store),
        )
        for name, factory in side_tasks:
            task = asyncio.create_task(factory(), name=name)
            task.add_done_callback(self._on_side_task_done)
            self._tasks.append(task)
        self._wake.set()

    def _on_side_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closing:
            return
        error = task.exception() or RuntimeError(f"side task {task.get_name()} stopped")
        if isinstance(error, STOP_ACTING):
            log.warning("%s: this manager stops acting on the store", error)
        else:
            log.critical("side task %s died: %r; stopping the manager", task.get_name(), error)
        if not self.fatal.done():
            self.fatal.set_exception(error)

    async def shutdown(self, *, settle: bool = True) -> None:
        """Stop dispatching, settle the results already received, then end worker streams cleanly and watchers
        with UNAVAILABLE. Idempotent. Running children stay RUNNING in the store: their workers keep going and
        report after the restart. No start is committed whose assignment is not queued for sending: the turn in
        flight finishes (its assignments go out before the Close), and no turn after it starts anything.

        Without ``settle`` (a step-down: the term's store is fenced and commits nothing more) nothing waits for the
        store: the results received stay with the workers, which re-send them to the next leader, and a write
        stuck on a dead link (a black hole swallows it without an error) cannot keep the workers attached to a
        manager that no longer leads. The tasks are cancelled; what they had in flight is fenced by the store."""
        if self._shutdown_done:
            return
        self._shutdown_done = True
        self._closing = True
        if settle:
            async with self._lock:
                await self._stop_tasks()
                try:
                    await self._commit_once(starts=False)
                except (StoreUnavailable, LeaseLost) as error:
                    log.warning(
                        "could not apply the last results before stopping: %s; workers re-send them", error
                    )
        else:
            await self._stop_tasks()
        for stream in list(self._outboxes):
            self._route([Send(stream, CloseCommand("manager shutting down"))])
        self._events.close_all("manager shutting down; watch again when it is back")

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def close_store(self, *, wait: bool = True) -> None:
        """Close the store once its calls in flight ended (``wait``), or at once: a call stuck on a dead link
        then hands its connection back to the closed store when it ends, which closes it."""
        self._writer.shutdown(wait=wait)
        self._readers.shutdown(wait=wait)
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
            self._queue_created(outcome)
        return outcome

    def _queue_created(self, outcome: CreateOutcome) -> None:
        """Queue the children of a parent just stored (by CreateMaintenance or a schedule's firing)."""
        now = time.monotonic()
        for child in outcome.children:
            self._core.enqueue(child, now)
        self.metrics.created(
            [(outcome.parent.type, ""), *((c.type, str(c.operation or "")) for c in outcome.children)]
        )
        self._wake.set()
        targets = {child.target for child in outcome.children}
        log.info(
            "created parent %s: %d targets x %d operations = %d children",
            outcome.parent.id,
            len(targets),
            len(outcome.children) // max(1, len(targets)),
            len(outcome.children),
            extra={"job_id": outcome.parent.id, "schedule_id": outcome.parent.schedule_id},
        )

    async def get(
        self,
        job_id: str,
        with_children: bool = True,
        *,
        page_size: int = DEFAULT_CHILDREN_PAGE_SIZE,
        after_position: int | None = None,
        statuses: Sequence[JobStatus] = (),
    ) -> Snapshot:
        return await stored_snapshot(
            self._read, self._store, job_id, with_children, page_size, after_position, statuses
        )

    async def list_jobs(self, filter: JobFilter, limit: int, before_seq: int | None) -> Page:
        return await self._read(self._store.list_jobs, filter, limit, before_seq)

    async def cancel(self, job_id: str, reason: str, *, spare_finishing: bool = False) -> Job:
        """Cancel a job (CancelJob). ``spare_finishing`` (a schedule's CANCEL_OTHER): running children whose
        window end policy is FINISH (by default, REINDEX: interrupting it leaves invalid indexes) are left to
        run to their end; they are marked cancel-requested, so nothing starts them again."""
        self._refuse_if_closing()
        async with self._lock:
            outcome = await self._write(self._store.cancel_job, job_id, reason)
            interrupt = outcome.to_interrupt
            if spare_finishing:
                interrupt = [child for child in interrupt if not _finishes_at_window_end(child)]
            self._route(self._core.cancel_stored(outcome.changed, interrupt, reason))
        for job in outcome.changed:
            if job.status.is_terminal:
                self.metrics.finished(job.type, job.status.value, str(job.operation or ""))
        self._events.publish([*outcome.changed, *outcome.to_interrupt])
        log.info(
            "cancel of %s: %d stopped, %d interrupted", job_id, len(outcome.changed), len(outcome.to_interrupt)
        )
        return outcome.job

    async def _cancel_replaced(self, job_id: str, reason: str) -> Job:
        """A schedule's CANCEL_OTHER: cancel the parent its new firing replaces, sparing what must finish."""
        return await self.cancel(job_id, reason, spare_finishing=True)

    async def watch(self, job_id: str, with_children: bool = True) -> AsyncIterator[Snapshot | Job]:
        """A snapshot, then every change of the job (and of its children, unless ``with_children`` is False),
        until the job is terminal."""
        self._refuse_if_closing()
        events = watch_job(
            self._events,
            self.settings.max_watchers,
            lambda: self.get(job_id, with_children),
            job_id,
            with_children,
        )
        async for event in events:
            yield event

    def _fleet_view(self) -> FleetView:
        """For the metrics scrape, on the HTTP thread: copies taken under the GIL, never a live iteration."""
        sessions = list(self._core.sessions.values())
        return FleetView(
            workers=len(sessions),
            draining_workers=sum(1 for s in sessions if s.draining),
            slots_total=sum(s.slots for s in sessions),
            slots_busy=sum(self._core.used_slots(s) for s in sessions),
            queue_depth=self._core.queue.depths(),
        )

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise ShuttingDown("the manager is shutting down")

    # -- what operators see

    def worker_view(self, session: WorkerSession) -> WorkerView:
        return view_of(session, [lease.job_id for lease in self._core.held_by(session.worker_id)])

    def worker_views(self) -> list[WorkerView]:
        return [self.worker_view(session) for session in self._core.sessions.values()]

    async def workers(self) -> list[WorkerView]:
        return self.worker_views()

    async def unserved_targets(self) -> list[str]:
        return self._core.unserved_targets()

    async def changes_after(self, after_seq: int, limit: int) -> list[JobChange]:
        """The store's change feed (the web console's event stream reads it, on leader and standby alike)."""
        return await self._read(self._store.changes_after, after_seq, limit)

    async def last_change_seq(self) -> int:
        return await self._read(self._store.last_change_seq)

    def waiting_reason(self, child: Job) -> str:
        return self._core.waiting_reason(child, utcnow())

    # -- worker streams: sending

    def open_stream(self) -> tuple[int, asyncio.Queue[Command]]:
        """A new stream id and its outbox. The caller must ``disconnect_worker`` it, whatever happens."""
        stream = self._core.open_stream()
        outbox: asyncio.Queue[Command] = asyncio.Queue()
        self._outboxes[stream] = outbox
        return stream, outbox

    def _route(self, sends: Iterable[Send]) -> None:
        for send in sends:
            outbox = self._outboxes.get(send.stream)
            if outbox is not None:  # a stream that ended takes nothing: what it would have said is re-derived
                outbox.put_nowait(send.command)

    # -- worker streams: events

    def connect_worker(self, stream: int, hello: HelloInfo) -> WorkerSession:
        self._refuse_if_closing()
        self._route(self._core.connect(stream, hello, time.monotonic()))
        session = self._core.session_of(stream)
        assert session is not None
        log.info(
            "worker %s connected from %s: targets %s, %d slots, kept %d running children",
            hello.worker_id,
            hello.peer,
            ", ".join(sorted(hello.targets)),
            hello.slots,
            len(self._core.held_by(hello.worker_id)),
        )
        self._workers_changed.set()
        if hello.faults_active:
            log.warning(
                "worker %s runs with FAULT INJECTION active: its operations are slowed on purpose "
                "(DBMAINT_FAULTS); never in production",
                hello.worker_id,
            )
        self._wake.set()
        return session

    def disconnect_worker(self, stream: int, why: str) -> None:
        """The stream ended (however it ended). Its leases stay until they lapse or the worker comes back."""
        self._outboxes.pop(stream, None)
        self._result_arrivals.pop(stream, None)
        session = self._core.disconnect(stream)
        if session is None:
            return
        self._workers_changed.set()
        held = len(self._core.held_by(session.worker_id))
        log.info(
            "worker %s disconnected (%s)%s",
            session.worker_id,
            why,
            f"; its {held} running children keep their leases until they lapse" if held else "",
        )
        self._wake.set()

    def heartbeat(self, stream: int, running: Sequence[RunningReport]) -> None:
        self._core.heartbeat(stream, running, time.monotonic())

    def drain_worker(self, worker_id: str, reason: str) -> WorkerSession:
        """Ask a connected worker to drain. It gets no new work from now on (before it even answers)."""
        self._refuse_if_closing()
        session = self._core.sessions.get(worker_id)
        if session is None:
            raise WorkerNotFound(worker_id)
        sends = self._core.drain(worker_id, reason)
        self._workers_changed.set()
        if sends:
            self._route(sends)
            log.info("asked worker %s to drain (%s)", worker_id, reason)
        return session

    def mark_draining(self, stream: int, reason: str) -> None:
        session = self._core.draining(stream)
        if session is not None:
            self._workers_changed.set()
            log.info("worker %s is draining (%s); no new work goes to it", session.worker_id, reason)

    def submit_results(self, stream: int, outcomes: Iterable[ChildOutcome]) -> None:
        """Queue a worker's results for the next group commit, where each is applied at most once: stale
        attempts and other workers' children are ignored there (and acknowledged all the same)."""
        session = self._core.session_of(stream)
        if session is not None:
            session.touch()
            outcomes = list(outcomes)
            self._note_arrivals(stream, outcomes, time.monotonic())
        self._core.receive(stream, outcomes)
        self._wake.set()

    # -- side tasks

    async def _commit_loop(self) -> None:
        """Group commit: each turn applies every result that arrived and starts every child that can start, in
        one store transaction, then sends the assignments and acknowledgements. Results arriving meanwhile
        wait for the next turn."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    await self._commit_once(starts=not self._closing)
            except STOP_ACTING:
                raise  # the store is another manager's now, or memory may disagree with it: the server steps down
            except StoreUnavailable as error:
                # Nothing was changed (memory moves only after the store did): try again shortly.
                log.warning("dispatch paused: %s; retrying in %.0fs", error, STORE_RETRY_SECONDS)
                await asyncio.sleep(STORE_RETRY_SECONDS)
                self._wake.set()

    async def _commit_once(self, *, starts: bool = True) -> None:
        """One turn. Caller holds ``_lock``."""
        self._core.tick_windows(utcnow())
        turn = self._core.take_turn(starts=starts)
        self._tell_window_keeper()
        if turn is None:
            return
        try:
            batch = await self._write(self._store.apply_batch, turn.outcomes, turn.starts)
        except DataError as error:
            log.warning("the store refused a value of this turn (%s); applying its parts one by one", error.orig)
            batch = await self._apply_isolating(turn)
        except BaseException:
            self._core.turn_failed(turn)  # retried on the next turn
            raise
        deadline = utcnow() + timedelta(seconds=self.settings.operation_timeout)
        queued_at = {p.child.job_id: self._core.pending_since(p.child.job_id) for p in turn.planned}
        report = self._core.turn_applied(turn, batch, time.monotonic(), deadline)
        self._route(report.sends)
        self._tell_window_keeper()
        self._observe_dispatch_gaps(report.sends, queued_at, time.monotonic())
        self._record_turn(turn, batch.finished, report)
        self._events.publish(j for t in (*batch.finished, *batch.started) for j in (t.child, t.parent))

    async def _apply_isolating(self, turn: Turn) -> BatchOutcome:
        """A turn the store refused as a whole (one value it cannot hold; nothing was written): the starts alone,
        then each result alone. A result the store still refuses fails its child with a fixed error instead, so
        one bad value costs its own child, never the manager nor the rest of the turn."""
        started = (await self._write(self._store.apply_batch, [], turn.starts)).started if turn.starts else []
        finished: list[Transition] = []
        for outcome in turn.outcomes:
            try:
                batch = await self._write(self._store.apply_batch, [outcome], [])
            except DataError as error:
                first_line = str(error.orig).splitlines()[0] if str(error.orig) else type(error.orig).__name__
                replacement = replace(
                    outcome,
                    status=JobStatus.FAILED,
                    error=f"the manager could not store this result: {first_line[:300]}",
                    report=None,
                )
                log.warning("job %s attempt %d: %s", outcome.job_id, outcome.attempt, replacement.error)
                batch = await self._write(self._store.apply_batch, [replacement], [])
            finished.extend(batch.finished)
        return BatchOutcome(finished, started)

    def _note_arrivals(self, stream: int, outcomes: Sequence[ChildOutcome], now: float) -> None:
        """For the dispatch gap: when these results arrived on ``stream``, and that they free their targets (those
        with queued work) from ``now``."""
        arrivals = self._result_arrivals.setdefault(stream, deque(maxlen=MAX_RESULT_ARRIVALS))
        arrivals.extend([now] * len(outcomes))
        for outcome in outcomes:
            lease = self._core.leases.get(outcome.job_id)
            if lease is not None and self._core.queue.head(lease.target) is not None:
                self._target_freed_at[lease.target] = now

    def _observe_dispatch_gaps(self, sends: Sequence[Send], queued_at: dict[str, float | None], at: float) -> None:
        """``dbmaint_dispatch_gap_seconds``: each assignment sent to a stream is paired with the oldest result that
        arrived on it and was not paired yet (a result frees a slot, an assignment fills one). The gap, from that
        arrival to ``at`` (the assignment queued for sending), is observed only when the assigned child could
        already run when the result arrived: it was queued, and the last result freeing its target (if any came
        after it was queued) had arrived. Work was waiting, so the gap is the manager's. Otherwise the pairing
        is dropped unobserved (the worker was idle for want of runnable work). Assignments with no result to
        pair (a fresh worker, a new parent filling free slots) are not observed."""
        for send in sends:
            command = send.command
            if not isinstance(command, AssignCommand):
                continue
            freed = self._target_freed_at.pop(command.target, None)
            arrivals = self._result_arrivals.get(send.stream)
            if not arrivals:
                continue
            arrived = arrivals.popleft()
            since = queued_at.get(command.job_id)
            if since is not None and (since if freed is None else max(since, freed)) <= arrived:
                self.metrics.dispatch_gap.observe(max(0.0, at - arrived))

    def _record_turn(self, turn: Turn, finished: list[Transition], report: TurnReport) -> None:
        for wait in report.waits:
            self.metrics.assignment_wait.observe(wait)
        for received in report.ignored:
            outcome = received.outcome
            log.info(
                "ignored a result for job %s attempt %d from worker %s: not the running attempt it holds",
                outcome.job_id,
                outcome.attempt,
                outcome.worker_id,
            )
        finished_parents: set[str] = set()
        for transition in finished:
            self._count_finished(transition, finished_parents)
            # A completed child is routine (DEBUG; the worker logs it at INFO); anything else is worth a line.
            child = transition.child
            level = logging.DEBUG if child.status is JobStatus.COMPLETED else logging.INFO
            if log.isEnabledFor(level):
                worker_id = child.worker_id or "?"
                log.log(
                    level,
                    "job %s (parent %s, %s/%s) attempt %d on worker %s: %s%s",
                    child.id,
                    child.parent_id,
                    child.target,
                    child.operation,
                    child.attempt,
                    worker_id,
                    child.status.value,
                    f": {child.error}" if child.error else "",
                    extra=job_extra(child, worker_id),
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

    async def _lease_loop(self) -> None:
        tick = max(0.05, min(1.0, self.settings.lease_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            if not self._core.lapsed(time.monotonic()):
                continue
            try:
                await self._release_lapsed()
            except STOP_ACTING:
                raise
            except StoreUnavailable as error:
                log.warning("lease check paused: %s; retrying", error)
            self._wake.set()

    async def _release_lapsed(self) -> None:
        """Take back every lapsed lease. Results that already arrived are applied first: a delivered result
        must count, not have its child re-queued and run again."""
        async with self._lock:
            if self._core.inbox_size:
                await self._commit_once()
            for lease in self._core.lapsed(time.monotonic()):
                await self._release(lease, lease.lapse_reason(self._core.settings))

    async def _release(self, lease: Lease, why: str) -> None:
        """The attempt of ``lease`` is lost: the store re-queues the child (or fails/cancels it) first; then
        memory follows. Caller holds ``_lock``."""
        transition = await self._write(self._store.release_child, lease.job_id, lease.attempt, why)
        self._route(self._core.released(lease, transition, time.monotonic()))
        if transition is None:
            return
        self.metrics.attempts_lost.inc()
        self._count_finished(transition, set())
        child = transition.child
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

    async def _keep_store(self) -> None:
        """What standbys read: store the connected workers when they change and every WORKERS_STORED_EVERY
        seconds (their last heartbeat), and prune the change feed every CHANGES_PRUNED_EVERY seconds. Both go
        through the writer, fenced by the lease like every write."""
        pruned_at = time.monotonic()
        stored_none = False  # the store holds no worker of this term: nothing to refresh while none connects
        while True:
            await wait_set(self._workers_changed, WORKERS_STORED_EVERY)
            self._workers_changed.clear()
            try:
                connected = self.worker_views()
                if connected or not stored_none:
                    await self._write(self._store.replace_workers, connected)
                    stored_none = not connected
                if time.monotonic() - pruned_at >= CHANGES_PRUNED_EVERY:
                    pruned_at = time.monotonic()
                    pruned = await self._write(self._store.prune_changes, CHANGES_KEPT_FOR)
                    if pruned:
                        log.debug("pruned %d job changes older than %.0fs", pruned, CHANGES_KEPT_FOR)
            except STOP_ACTING:
                raise
            except StoreUnavailable as error:
                log.warning("storing the connected workers paused: %s; retrying", error)

    # -- maintenance windows

    def _tell_window_keeper(self) -> None:
        """Wake the window keeper if a window instant joined (it then plans its next wakeup again)."""
        if self._core.window_instants_moved():
            self._windows_changed.set()

    async def _window_loop(self) -> None:
        """Sleep until the next window instant (an opening, a start deadline, a running child's window end) or
        until one may have moved, then act on what is due and let the committer start what may start now."""
        while True:
            self._windows_changed.clear()
            wakeup = self._core.window_wakeup(utcnow())
            # A hair late rather than early: at the instant itself the window has changed already.
            timeout = None if wakeup is None else max(0.0, (wakeup - utcnow()).total_seconds()) + WINDOW_MARGIN
            await wait_set(self._windows_changed, timeout)
            try:
                await self._keep_windows()
            except STOP_ACTING:
                raise
            except StoreUnavailable as error:
                log.warning("window check paused: %s; retrying in %.0fs", error, STORE_RETRY_SECONDS)
                await asyncio.sleep(STORE_RETRY_SECONDS)
                self._windows_changed.set()
            self._wake.set()

    async def _keep_windows(self) -> None:
        """Cancel the children a one-off window can no longer start, and interrupt (as CancelJob does) the running
        ones whose window ended with policy CANCEL: their worker does it too, this covers an older worker."""
        now = utcnow()
        for job_id in self._core.closed_windows(now):
            # One child per lock: a closed window of 10,000 children must not stall dispatch meanwhile (they
            # cannot start in between: their window no longer lets them into the queue).
            async with self._lock:
                if self._core.pending_since(job_id) is not None:  # not cancelled by someone else meanwhile
                    await self._cancel_never_started(job_id)
        for job_id, end in self._core.take_window_ends(now):
            # It may have ended on its own meanwhile (its worker enforced the end), or the manager stops.
            with contextlib.suppress(JobNotFound, JobAlreadyFinished, ShuttingDown):
                await self.cancel(job_id, window_ended(end))

    async def _cancel_never_started(self, job_id: str) -> None:
        """A pending child whose one-off window closed before it could start ends CANCELLED. Caller holds
        ``_lock``."""
        try:
            outcome = await self._write(self._store.cancel_job, job_id, WINDOW_ENDED_BEFORE_START)
        except (JobNotFound, JobAlreadyFinished) as error:
            log.warning("could not cancel job %s at its window's end: %s", job_id, error)
            return
        self._route(self._core.cancel_stored(outcome.changed, outcome.to_interrupt, WINDOW_ENDED_BEFORE_START))
        for job in outcome.changed:
            if job.status.is_terminal:
                self.metrics.finished(job.type, job.status.value, str(job.operation or ""))
        self._events.publish([*outcome.changed, *outcome.to_interrupt])
        log.info("job %s: %s", job_id, WINDOW_ENDED_BEFORE_START, extra={"job_id": job_id})


def _finishes_at_window_end(child: Job) -> bool:
    """Is ``child``'s end policy FINISH: its window's for its operation, or the operation's default?"""
    if child.operation is None:
        return False
    if child.window is not None:
        policy = window_rules.end_policy(stored_window(child.window), child.operation)
        return policy is window_rules.EndPolicy.FINISH
    return window_rules.DEFAULT_END_POLICY[child.operation] is window_rules.EndPolicy.FINISH
