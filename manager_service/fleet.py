"""The fleet core: the manager's in-memory truth about workers and running children, as pure synchronous code.

No I/O, no clock, no asyncio, no gRPC, no store. Methods take events (a worker said hello, sent results or a
heartbeat, its stream ended; time passed; the store applied a batch, released a child, stored a cancel) and
return what to do: ``Send`` commands for worker streams, and the store changes to make (``Turn``, lapsed
``Lease``s). The async shell (``orchestrator.py``) owns the lock, the store threads, the timers and the sockets.

The rules:

* **Store first, then memory.** The core proposes store changes; memory moves only when the shell reports that
  the store applied them (``turn_applied``, ``released``, ``cancel_stored``). A change the store refused or
  never made leaves memory as it was.
* **One record of who holds what.** A ``Lease`` exists for every child the store has RUNNING: its attempt, the
  worker that holds it, its target. A target with a lease is busy (the dispatch queue's busy map is an index of
  the leases, kept in step by ``_hold``/``_unhold`` only). A worker's used slots are its leases plus the foreign
  attempts it still runs.
* **A lease ends only when the attempt's end is known or its time is up.** A result (applied or stale) ends it; a
  stream that ends does not: the worker may come back and list the child in its Hello (the lease is renewed) or
  re-send its result. A lease lapses after ``lease_timeout`` without a heartbeat naming it; when the worker came
  back without listing it, at its first heartbeat on that stream that does not name it either (the results it
  re-sends come before that heartbeat on the ordered stream), or ``reconnect_grace`` after the Hello at the latest.
  The store then re-queues the child with the next attempt. The old attempt's end is then still unknown: a worker
  that is alive but silent is told to stop, and the target's **resource lock** (held by the worker for the whole
  operation) keeps a new attempt waiting until the old one really ended. That lock, not the lease, is what keeps
  one operation per target.
* **Slots are never over-committed**: held leases + foreign attempts <= slots, per connected worker.
* **A result is applied at most once**: results are keyed by (job_id, attempt); the store fences each on the
  running attempt and its worker. Every result a worker sends is acknowledged once settled (applied or stale),
  so a worker that announced ``accepts_acks`` keeps it until then and re-sends it on its next stream.
* **A stored cancel reaches the holder**: the lease carries the cancel reason; it is sent when stored, and sent
  again whenever the holder (re)connects and lists the attempt, so neither a restart nor a lost message loses it.
* **No session outlives its stream**: a session is keyed by a stream id; events of an ended stream are ignored.
* **A maintenance window gates starts, never holds a target.** A pending child whose parent has a window waits
  OUTSIDE the dispatch queue; ``tick_windows(now)`` moves it in while its window allows a start
  (``window_rules.may_start``) and back out when it stops allowing one, so a waiting child neither starts nor
  blocks its target (per-target order holds among the children that may start). A one-off window whose start
  deadline passed (``closed_for_good``) lists its never-started children in ``closed_windows`` for the shell to
  cancel in the store. A running child whose window policy is CANCEL gets its opening's end in its assignment
  (the worker enforces it) and on its lease (``take_window_ends``: the shell cancels it as CancelJob would).
  ``window_wakeup`` is the next instant any of this changes, so the shell sleeps until then instead of polling.
* **A MODE_PLAN child is read-only** (``Job.is_plan``): its lease takes a worker slot but does not make its
  target busy, it is queued whatever its window says and gets no window end (see ``dispatch``).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dbmaint.operations import JobStatus
from manager_service import window_rules
from manager_service.dispatch import DispatchQueue, PlannedAssignment, QueuedChild, WorkerCapacity
from manager_service.domain import BatchOutcome, ChildOutcome, Job, StartRequest, Transition
from manager_service.errors import LimitReached, WorkerAlreadyConnected
from manager_service.workers import (
    AckCommand,
    AssignCommand,
    CancelCommand,
    DrainCommand,
    HelloInfo,
    RunKey,
    RunningReport,
    Send,
    WorkerSession,
)

NOT_ASSIGNED = "this attempt is no longer assigned to this worker"
RESTART_CANCEL = "cancel requested (stored before the manager restarted)"


@dataclass(frozen=True, slots=True)
class FleetSettings:
    lease_timeout: float = 30.0
    reconnect_grace: float = 10.0
    max_workers: int = 1_000


@dataclass(slots=True)
class Lease:
    """A RUNNING child, the worker that holds it, and when it is taken back unless renewed."""

    job_id: str
    attempt: int
    worker_id: str
    target: str
    expires_at: float
    # Why the attempt has not started its statement yet (the worker waits for the target's resource lock).
    waiting_reason: str = ""
    # Set once a cancel is stored: sent to the holder now and on every reconnect until the attempt ends.
    cancel_reason: str | None = None
    # The holder's stream that carried the assignment (or listed the attempt in its Hello); None: none did.
    stream: int | None = None
    # When its window's opening closes, if its policy there is CANCEL; cleared once handed to the shell.
    window_end: datetime | None = None
    # A MODE_PLAN child: it takes a slot but does not hold its target (``dispatch``).
    read_only: bool = False
    # The holder came back (a new stream, e.g. to a new leader) without listing it, and no heartbeat has named
    # it since: the assignment never reached it (the manager that stored it stopped first), or it ended and its
    # result is still on the way.
    unlisted: bool = False

    @property
    def key(self) -> RunKey:
        return (self.job_id, self.attempt)

    def lapse_reason(self, settings: FleetSettings) -> str:
        """Why the lease lapsed, for the log and the child's record."""
        worker = self.worker_id or "?"
        if self.unlisted:
            return (
                f"worker {worker} came back without it and sent no result for it:"
                " the assignment never reached it, or its result was lost"
            )
        return f"no heartbeat from worker {worker} for {settings.lease_timeout:g}s"


@dataclass(frozen=True, slots=True)
class Received:
    """A result as it arrived: on which stream, from which worker."""

    stream: int
    outcome: ChildOutcome

    @property
    def key(self) -> RunKey:
        return (self.outcome.job_id, self.outcome.attempt)


@dataclass(frozen=True, slots=True)
class Turn:
    """One group commit: results to apply and children to start, in one store transaction."""

    results: tuple[Received, ...]
    planned: tuple[PlannedAssignment, ...]

    @property
    def outcomes(self) -> list[ChildOutcome]:
        return [r.outcome for r in self.results]

    @property
    def starts(self) -> list[StartRequest]:
        return [StartRequest(p.child.job_id, p.child.attempt, p.worker_id) for p in self.planned]


@dataclass(slots=True)
class TurnReport:
    """What a turn changed in memory: the commands to send, and figures for logs and metrics."""

    sends: list[Send] = field(default_factory=list)
    # Results the store did not apply (stale, foreign, or for a child already finished).
    ignored: list[Received] = field(default_factory=list)
    # Seconds each started child waited since it became PENDING.
    waits: list[float] = field(default_factory=list)


@dataclass(slots=True)
class WindowedParent:
    """The pending children of one parent that has a maintenance window: those its window holds back
    (``waiting``, outside the dispatch queue) and those it lets start (``queued``, in the queue)."""

    window: window_rules.Window
    waiting: dict[str, QueuedChild] = field(default_factory=dict)
    queued: dict[str, QueuedChild] = field(default_factory=dict)
    # The window's answer at ``checked_at``, which holds until ``changes_at`` (None: it never changes again):
    # every turn asks, and for a recurring window each answer walks its cron.
    allows: bool = False
    checked_at: datetime | None = None
    changes_at: datetime | None = None

    def __bool__(self) -> bool:
        return bool(self.waiting or self.queued)

    def may_start(self, now: datetime) -> bool:
        """``window_rules.may_start`` at ``now``, recomputed only once the answer may have changed (or the clock
        went back)."""
        known = self.checked_at is not None and self.checked_at <= now
        if not (known and (self.changes_at is None or now < self.changes_at)):
            self.allows = window_rules.may_start(self.window, now)
            self.checked_at = now
            self.changes_at = window_rules.wakeup_after(self.window, now)
        return self.allows

    def next_change(self, now: datetime) -> datetime | None:
        """The next instant the window's answer may change (None: never)."""
        self.may_start(now)
        return self.changes_at


def stored_window(data: Mapping[str, Any]) -> window_rules.Window:
    """The window of a job as stored (``window_rules.to_dict``). Cached: reading one validates it again, which
    for a cron means walking many of its times, and every child of a parent carries the same window."""
    return _window_from_json(json.dumps(data, sort_keys=True))


@functools.lru_cache(maxsize=1024)
def _window_from_json(text: str) -> window_rules.Window:
    return window_rules.from_dict(json.loads(text))


def window_end_of(child: Job, started_at: datetime | None) -> datetime | None:
    """The end of the window opening ``child`` started in (at ``started_at``), if its policy there is CANCEL:
    the worker interrupts it then. None without a window, with a FINISH policy, or outside any opening."""
    if child.window is None or child.operation is None or started_at is None or child.is_plan:
        return None
    window = stored_window(child.window)
    if window_rules.end_policy(window, child.operation) is not window_rules.EndPolicy.CANCEL:
        return None
    opening = window_rules.current_opening(window, started_at)
    return opening.closes if opening is not None else None


class FleetCore:
    """Sessions, leases, the dispatch queue and pending cancels. See the module docstring for the rules."""

    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        self.queue = DispatchQueue()
        self.leases: dict[str, Lease] = {}
        # Index of ``leases`` by worker: maintained by _hold/_unhold only.
        self._held_by: dict[str, set[str]] = {}
        self.sessions: dict[str, WorkerSession] = {}
        self._streams: dict[int, WorkerSession] = {}
        self._next_stream = 0
        # Results waiting for the next turn, one per (stream, job_id, attempt).
        self._inbox: dict[tuple[int, str, int], Received] = {}
        self._pending_since: dict[str, float] = {}
        # Pending children of parents with a window, by parent id; and the parent of each of them.
        self._windowed: dict[str, WindowedParent] = {}
        self._windowed_parent_of: dict[str, str] = {}
        # A window or a window end joined since the shell last asked: its next wakeup may be earlier now.
        self._window_instants_moved = False

    # -- queries

    def held_by(self, worker_id: str) -> list[Lease]:
        return [self.leases[job_id] for job_id in sorted(self._held_by.get(worker_id, ()))]

    def used_slots(self, session: WorkerSession) -> int:
        return len(self._held_by.get(session.worker_id, ())) + session.foreign

    def session_of(self, stream: int) -> WorkerSession | None:
        return self._streams.get(stream)

    @property
    def inbox_size(self) -> int:
        return len(self._inbox)

    def pending_since(self, job_id: str) -> float | None:
        """When ``job_id`` last became PENDING (the ``now`` it was queued with); None if it is not pending."""
        return self._pending_since.get(job_id)

    def waiting_reason(self, child: Job, now: datetime | None = None) -> str:
        """Why a pending child has not started yet (or a running one has not started its statement), in words an
        operator can act on. ``now`` (wall clock) dates a wait for the child's window."""
        if child.target is None:
            return ""
        if child.status is JobStatus.RUNNING:
            lease = self.leases.get(child.id)
            return lease.waiting_reason if lease is not None and lease.attempt == child.attempt else ""
        if child.status is not JobStatus.PENDING:
            return ""
        held_back = self._held_back_by(child.id)
        if held_back is not None:
            # Empty when the window has just opened (the next turn queues it): then the usual reasons apply.
            reason = "waiting for its maintenance window"
            if now is not None:
                reason = window_rules.waiting_reason(held_back, now)
            if reason:
                return reason
        serving = [s for s in self.sessions.values() if child.target in s.targets]
        if not serving:
            return f"no connected worker serves target {child.target!r}"
        if all(s.draining for s in serving):
            return f"every worker serving target {child.target!r} is draining"
        if child.is_plan:  # read-only: neither a busy target nor the target's queue holds it back
            return f"waiting for a free slot on a worker serving {child.target!r}"
        busy_with = self.queue.busy_with(child.target)
        if busy_with is not None:
            return f"target {child.target!r} is busy with job {busy_with}"
        head = self.queue.head(child.target)
        if head is not None and head.job_id != child.id:
            return f"queued behind job {head.job_id} on target {child.target!r}"
        return f"waiting for a free slot on a worker serving {child.target!r}"

    def unserved_targets(self) -> list[str]:
        served = {t for s in self.sessions.values() if not s.draining for t in s.targets}
        return sorted(t for t in self.queue.pending_targets() if t not in served)

    # -- rebuilding and new children

    def rebuild(self, children: Iterable[Job], now: float) -> None:
        """Load the store's unfinished children (after a start or a restart): pending ones are queued, running
        ones get a fresh lease for the worker that holds them, with their stored cancel request."""
        for child in children:
            assert child.target is not None
            if child.status is JobStatus.PENDING:
                self.enqueue(child, now)
            elif child.status is JobStatus.RUNNING:
                lease = Lease(
                    child.id,
                    child.attempt,
                    child.worker_id or "",
                    child.target,
                    now + self.settings.lease_timeout,
                    cancel_reason=RESTART_CANCEL if child.cancel_requested else None,
                    window_end=window_end_of(child, child.started_at),
                    read_only=child.is_plan,
                )
                self._hold(lease)
                self._window_instants_moved |= lease.window_end is not None

    def enqueue(self, child: Job, now: float) -> None:
        """Queue a pending child; one whose parent has a window waits outside the queue until ``tick_windows``
        finds its window open."""
        assert child.target is not None
        queued = QueuedChild(child.seq, child.id, child.attempt, child.target, read_only=child.is_plan)
        self._pending_since.setdefault(child.id, now)
        if child.window is None or child.is_plan:  # a read-only child ignores its window
            self.queue.push(queued)
            return
        parent_id = child.parent_id or ""
        parent = self._windowed.get(parent_id)
        if parent is None:
            parent = self._windowed[parent_id] = WindowedParent(stored_window(child.window))
            self._window_instants_moved = True
        if child.id in parent.queued:
            self.queue.discard(child.id)
            del parent.queued[child.id]
        parent.waiting[child.id] = queued
        self._windowed_parent_of[child.id] = parent_id

    # -- maintenance windows

    def tick_windows(self, now: datetime) -> None:
        """Move each windowed parent's pending children into the dispatch queue while its window allows a start
        at ``now`` (wall clock), and out of it while it does not. Call before every turn."""
        for parent in self._windowed.values():
            if parent.may_start(now):
                for job_id, queued in parent.waiting.items():
                    self.queue.push(queued)
                    parent.queued[job_id] = queued
                parent.waiting.clear()
            else:
                for job_id, queued in parent.queued.items():
                    self.queue.discard(job_id)
                    parent.waiting[job_id] = queued
                parent.queued.clear()

    def closed_windows(self, now: datetime) -> list[str]:
        """The pending children whose one-off window can no longer let them start: the shell cancels them
        ("maintenance window ended before it could start"); ``cancel_stored`` then forgets them. Recurring
        windows never close for good: their children wait for the next opening."""
        return [
            job_id
            for parent in self._windowed.values()
            if window_rules.closed_for_good(parent.window, now)
            for job_id in (*parent.waiting, *parent.queued)
        ]

    def take_window_ends(self, now: datetime) -> list[tuple[str, datetime]]:
        """Running children (job id, window end) whose window's end (policy CANCEL) has come: the shell cancels
        each through the CancelJob path (the worker also enforces it by itself). Each is handed over once."""
        due: list[tuple[str, datetime]] = []
        for lease in self.leases.values():
            if lease.window_end is not None and lease.window_end <= now:
                due.append((lease.job_id, lease.window_end))
                lease.window_end = None
        return due

    def window_instants_moved(self) -> bool:
        """Whether a windowed parent or a running child's window end joined since the last call (then the
        shell's next wakeup may be earlier than it planned). However the children came: a create, a schedule's
        firing, a rebuild, a re-queue."""
        moved, self._window_instants_moved = self._window_instants_moved, False
        return moved

    def window_wakeup(self, now: datetime) -> datetime | None:
        """The next instant after ``now`` at which a window opens, stops allowing starts or ends a running child:
        the shell wakes up then (None: no window is waited on)."""
        instants = [parent.next_change(now) for parent in self._windowed.values()]
        instants += [lease.window_end for lease in self.leases.values()]
        return min((instant for instant in instants if instant is not None), default=None)

    def _held_back_by(self, job_id: str) -> window_rules.Window | None:
        """The window that keeps ``job_id`` out of the dispatch queue now, if one does."""
        parent = self._windowed.get(self._windowed_parent_of.get(job_id, ""))
        return parent.window if parent is not None and job_id in parent.waiting else None

    def _forget_windowed(self, job_id: str) -> None:
        """``job_id`` is no longer pending (started or cancelled): its window no longer concerns it."""
        parent_id = self._windowed_parent_of.pop(job_id, None)
        parent = self._windowed.get(parent_id) if parent_id is not None else None
        if parent is None:
            return
        parent.waiting.pop(job_id, None)
        parent.queued.pop(job_id, None)
        if not parent:
            del self._windowed[parent_id or ""]

    # -- worker streams

    def open_stream(self) -> int:
        """A new stream id; the session it will carry is created by ``connect``."""
        self._next_stream += 1
        return self._next_stream

    def connect(self, stream: int, hello: HelloInfo, now: float) -> list[Send]:
        """A worker said Hello on ``stream``. It keeps the leases it lists (renewed, cancels re-sent); a lease it
        does not list gets ``reconnect_grace`` for its result to arrive; an attempt it lists that is not its own
        is foreign: it takes a slot and is told to stop."""
        if hello.worker_id in self.sessions:
            raise WorkerAlreadyConnected(hello.worker_id)
        if len(self.sessions) >= self.settings.max_workers:
            raise LimitReached(f"{self.settings.max_workers} workers are connected; no more are taken")
        session = WorkerSession(
            hello.worker_id,
            stream,
            hello.targets,
            hello.slots,
            peer=hello.peer,
            accepts_batches=hello.accepts_batches,
            accepts_acks=hello.accepts_acks,
            faults_active=hello.faults_active,
        )
        self.sessions[hello.worker_id] = session
        self._streams[stream] = session
        listed = {report.key: report for report in hello.running}
        sends: list[Send] = []
        for lease in self.held_by(hello.worker_id):
            if lease.cancel_reason is not None:  # every stored cancel, listed or not: a lost one costs a VACUUM
                sends.append(Send(stream, CancelCommand(lease.job_id, lease.attempt, lease.cancel_reason)))
            report = listed.pop(lease.key, None)
            if report is not None:
                lease.stream = stream
                lease.expires_at = now + self.settings.lease_timeout
                lease.waiting_reason = report.waiting_reason
                lease.unlisted = False
            else:
                # Not running there any more: its result may still be on the way (re-sent after Hello).
                lease.expires_at = min(lease.expires_at, now + self.settings.reconnect_grace)
                lease.unlisted = True
        for key in listed:
            session.reported.add(key)
            sends.append(Send(stream, CancelCommand(key[0], key[1], NOT_ASSIGNED)))
        return sends

    def disconnect(self, stream: int) -> WorkerSession | None:
        """The stream ended. The session goes; the worker's leases stay until they lapse or it comes back."""
        session = self._streams.pop(stream, None)
        if session is not None and self.sessions.get(session.worker_id) is session:
            del self.sessions[session.worker_id]
        return session

    def heartbeat(self, stream: int, running: Sequence[RunningReport], now: float) -> None:
        """Renew the leases the worker holds at the listed attempts. A heartbeat never ends a lease nor a revoked
        attempt: it may have been sent before their assignment arrived. Reported attempts it no longer lists have
        stopped."""
        session = self._streams.get(stream)
        if session is None:
            return
        session.touch()
        listed = set()
        for report in running:
            listed.add(report.key)
            lease = self.leases.get(report.job_id)
            if lease is not None and lease.worker_id == session.worker_id and lease.attempt == report.attempt:
                lease.expires_at = now + self.settings.lease_timeout
                lease.waiting_reason = report.waiting_reason
                lease.unlisted = False
        for lease in self.held_by(session.worker_id):
            if lease.unlisted and lease.key not in listed:
                # Missing from its Hello and from this heartbeat, with no result before it on the stream: it
                # does not run there. Its slot is not held for the rest of the grace.
                lease.expires_at = min(lease.expires_at, now)
        if session.reported:
            session.reported &= listed

    def draining(self, stream: int) -> WorkerSession | None:
        """The worker says it drains: it gets no new work."""
        session = self._streams.get(stream)
        if session is not None:
            session.draining = True
        return session

    def drain(self, worker_id: str, reason: str) -> list[Send]:
        """An operator asks a connected worker to drain: no new work from now on (before it even answers)."""
        session = self.sessions[worker_id]
        if session.draining:
            return []
        session.draining = True
        return [Send(session.stream, DrainCommand(reason))]

    def receive(self, stream: int, outcomes: Iterable[ChildOutcome]) -> None:
        """Results from the worker on ``stream``, for the next turn. A result already waiting is not queued twice
        (a duplicate in one batch frees one slot)."""
        if stream not in self._streams:
            return
        for outcome in outcomes:
            self._inbox.setdefault((stream, outcome.job_id, outcome.attempt), Received(stream, outcome))

    # -- turns (group commits)

    def take_turn(self, *, starts: bool = True) -> Turn | None:
        """The next group commit: every waiting result, and the children that can start once they are applied
        (their targets and slots are free then). None if there is nothing to do. The results leave the inbox;
        give them back with ``turn_failed`` if the store did not take them."""
        results = tuple(self._inbox.values())
        self._inbox.clear()
        released: set[str] = set()
        freed: Counter[str] = Counter()
        for received in results:
            session = self._streams.get(received.stream)
            worker_id = received.outcome.worker_id
            lease = self.leases.get(received.outcome.job_id)
            if lease is not None and lease.key == received.key and lease.worker_id == worker_id:
                if not lease.read_only:  # a read-only child never held its target
                    released.add(lease.target)
                freed[worker_id] += 1
            elif session is not None and session.holds_foreign(received.key):
                freed[worker_id] += 1
        planned = tuple(self._plan(frozenset(released), freed)) if starts else ()
        if not results and not planned:
            return None
        return Turn(results, planned)

    def turn_failed(self, turn: Turn) -> None:
        """The store did not apply ``turn``: its results wait for the next one (newer copies win)."""
        for received in turn.results:
            self._inbox.setdefault((received.stream, *received.key), received)

    def turn_applied(self, turn: Turn, batch: BatchOutcome, now: float, deadline: datetime) -> TurnReport:
        """The store applied ``turn``: results end their leases and are acknowledged; started children get a
        lease and their assignment."""
        report = TurnReport()
        applied = {t.child.id: t for t in batch.finished}
        for received in turn.results:
            self._settle_result(received, applied.get(received.outcome.job_id), report)
        started = {t.child.id: t for t in batch.started}
        for plan in turn.planned:
            self._start(plan, started.get(plan.child.job_id), now, deadline, report)
        return report

    def _settle_result(self, received: Received, applied: Transition | None, report: TurnReport) -> None:
        outcome = received.outcome
        session = self._streams.get(received.stream)
        if session is not None:
            session.forget_foreign(received.key)
            if session.accepts_acks:
                report.sends.append(Send(received.stream, AckCommand(outcome.job_id, outcome.attempt)))
        lease = self.leases.get(outcome.job_id)
        if lease is not None and lease.key == received.key and lease.worker_id == outcome.worker_id:
            # The attempt ended (applied, or the store had moved on): either way it holds nothing any more.
            self._unhold(lease)
        if applied is None or applied.child.attempt != outcome.attempt:
            report.ignored.append(received)

    def _start(
        self,
        plan: PlannedAssignment,
        started: Transition | None,
        now: float,
        deadline: datetime,
        report: TurnReport,
    ) -> None:
        child = plan.child
        since = self._pending_since.pop(child.job_id, None)
        self._forget_windowed(child.job_id)
        if started is None:
            self.queue.discard(child.job_id)  # cancelled or changed meanwhile
            return
        if since is not None:
            report.waits.append(max(0.0, now - since))
        self.queue.discard(child.job_id)
        job = started.child
        window_end = window_end_of(job, job.started_at)
        lease = Lease(child.job_id, child.attempt, plan.worker_id, child.target, now + self.settings.lease_timeout)
        lease.window_end = window_end
        lease.read_only = child.read_only
        self._window_instants_moved |= window_end is not None
        self._hold(lease)
        session = self.sessions.get(plan.worker_id)
        if session is None:
            return  # gone during the write: the lease lapses unless it comes back and reports the child
        lease.stream = session.stream
        assert job.operation is not None and job.parent_id is not None
        command = AssignCommand(
            job_id=job.id,
            attempt=job.attempt,
            target=child.target,
            operation=job.operation,
            job_type=job.type,
            config=job.config,
            deadline=deadline,
            parent_id=job.parent_id,
            window_end=window_end,
        )
        report.sends.append(Send(session.stream, command))

    def _plan(self, released: frozenset[str], freed: Counter[str]) -> list[PlannedAssignment]:
        capacities = [
            WorkerCapacity(
                s.worker_id,
                s.targets,
                max(0, s.slots - self.used_slots(s) + freed[s.worker_id]),
                s.draining,
            )
            for s in self.sessions.values()
        ]
        return self.queue.plan(capacities, released=released)

    # -- leases

    def lapsed(self, now: float) -> list[Lease]:
        """Leases whose time is up: the shell asks the store to release each (``released`` then)."""
        return [lease for lease in self.leases.values() if lease.expires_at <= now]

    def released(self, lease: Lease, transition: Transition | None, now: float) -> list[Send]:
        """The store released ``lease``'s attempt (re-queued, failed or cancelled it; None: it had already
        ended). A holder still connected on the stream that carried the attempt is told to stop, and the attempt
        keeps its slot until its result says it has. (On a later stream the worker would have listed it in its
        Hello had it run it: then there is nothing to stop.)"""
        if self.leases.get(lease.job_id) is not lease:
            return []
        self._unhold(lease)
        sends: list[Send] = []
        session = self.sessions.get(lease.worker_id)
        if session is not None and session.stream == lease.stream:
            session.revoked.add(lease.key)
            sends.append(Send(session.stream, CancelCommand(lease.job_id, lease.attempt, "lease lapsed")))
        if transition is not None and transition.child.status is JobStatus.PENDING:
            self.enqueue(transition.child, now)
        return sends

    # -- cancels

    def cancel_stored(self, changed: Iterable[Job], to_interrupt: Iterable[Job], reason: str) -> list[Send]:
        """The store recorded a cancel: pending children it cancelled leave the queue; running ones carry the
        reason on their lease, sent to the holder now if it is connected, else when it comes back."""
        for job in changed:
            if not job.is_parent and job.status is JobStatus.CANCELLED:
                self.queue.discard(job.id)
                self._pending_since.pop(job.id, None)
                self._forget_windowed(job.id)
        sends: list[Send] = []
        for job in to_interrupt:
            lease = self.leases.get(job.id)
            if lease is None or lease.attempt != job.attempt:
                continue
            lease.cancel_reason = reason
            session = self.sessions.get(lease.worker_id)
            if session is not None:
                sends.append(Send(session.stream, CancelCommand(lease.job_id, lease.attempt, reason)))
        return sends

    # -- the one place leases and the busy index change together

    def _hold(self, lease: Lease) -> None:
        self.leases[lease.job_id] = lease
        self._held_by.setdefault(lease.worker_id, set()).add(lease.job_id)
        if not lease.read_only:
            self.queue.mark_busy(lease.target, lease.job_id)

    def _unhold(self, lease: Lease) -> None:
        if self.leases.get(lease.job_id) is lease:
            del self.leases[lease.job_id]
        held = self._held_by.get(lease.worker_id)
        if held is not None:
            held.discard(lease.job_id)
            if not held:
                del self._held_by[lease.worker_id]
        if not lease.read_only:
            self.queue.release(lease.target, lease.job_id)
