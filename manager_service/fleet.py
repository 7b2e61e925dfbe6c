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
* **A lease ends only when the attempt's end is known or its time is up.** A result (applied or stale) ends it;
  a stream that ends does not: the worker may come back and list the child in its Hello (the lease is renewed)
  or re-send its result. A lease lapses after ``lease_timeout`` without a heartbeat naming it (shortened to
  ``reconnect_grace`` when the worker came back without listing it); the store then re-queues the child with
  the next attempt. The old attempt's end is then still unknown: a worker that is alive but silent is told to
  stop, and the target's **resource lock** (held by the worker for the whole operation) keeps a new attempt
  waiting until the old one really ended. That lock, not the lease, is what keeps one operation per target.
* **Slots are never over-committed**: held leases + foreign attempts <= slots, per connected worker.
* **A result is applied at most once**: results are keyed by (job_id, attempt); the store fences each on the
  running attempt and its worker. Every result a worker sends is acknowledged once settled (applied or stale),
  so a worker that announced ``accepts_acks`` keeps it until then and re-sends it on its next stream.
* **A stored cancel reaches the holder**: the lease carries the cancel reason; it is sent when stored, and sent
  again whenever the holder (re)connects and lists the attempt, so neither a restart nor a lost message loses it.
* **No session outlives its stream**: a session is keyed by a stream id; events of an ended stream are ignored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from dbmaint.operations import JobStatus
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

    @property
    def key(self) -> RunKey:
        return (self.job_id, self.attempt)


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

    def waiting_reason(self, child: Job) -> str:
        """Why a pending child has not started yet (or a running one has not started its statement), in words an
        operator can act on."""
        if child.target is None:
            return ""
        if child.status is JobStatus.RUNNING:
            lease = self.leases.get(child.id)
            return lease.waiting_reason if lease is not None and lease.attempt == child.attempt else ""
        if child.status is not JobStatus.PENDING:
            return ""
        serving = [s for s in self.sessions.values() if child.target in s.targets]
        if not serving:
            return f"no connected worker serves target {child.target!r}"
        if all(s.draining for s in serving):
            return f"every worker serving target {child.target!r} is draining"
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
                )
                self._hold(lease)

    def enqueue(self, child: Job, now: float) -> None:
        assert child.target is not None
        self.queue.push(QueuedChild(child.seq, child.id, child.attempt, child.target))
        self._pending_since.setdefault(child.id, now)

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
            else:
                # Not running there any more: its result may still be on the way (re-sent after Hello).
                lease.expires_at = min(lease.expires_at, now + self.settings.reconnect_grace)
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
        if started is None:
            self.queue.discard(child.job_id)  # cancelled or changed meanwhile
            return
        if since is not None:
            report.waits.append(max(0.0, now - since))
        self.queue.discard(child.job_id)
        lease = Lease(child.job_id, child.attempt, plan.worker_id, child.target, now + self.settings.lease_timeout)
        self._hold(lease)
        session = self.sessions.get(plan.worker_id)
        if session is None:
            return  # gone during the write: the lease lapses unless it comes back and reports the child
        lease.stream = session.stream
        job = started.child
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
        self.queue.mark_busy(lease.target, lease.job_id)

    def _unhold(self, lease: Lease) -> None:
        if self.leases.get(lease.job_id) is lease:
            del self.leases[lease.job_id]
        held = self._held_by.get(lease.worker_id)
        if held is not None:
            held.discard(lease.job_id)
            if not held:
                del self._held_by[lease.worker_id]
        self.queue.release(lease.target, lease.job_id)
