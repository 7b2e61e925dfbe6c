"""Connected workers and what the manager tells them, as plain values. In memory only: a worker re-announces
itself on reconnect. No asyncio and no protobuf here: the fleet core creates these, the servicer translates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dbmaint.operations import Operation
from manager_service.domain import utcnow

RunKey = tuple[str, int]
"""A child attempt: (job_id, attempt)."""


@dataclass(frozen=True, slots=True)
class AssignCommand:
    job_id: str
    attempt: int
    target: str
    operation: Operation
    job_type: str
    config: dict[str, object]
    deadline: datetime
    parent_id: str
    # The closing time of the child's window opening when its end policy is CANCEL: the worker interrupts the
    # attempt then by itself. None: no window, or the window lets it finish.
    window_end: datetime | None = None


@dataclass(frozen=True, slots=True)
class CancelCommand:
    job_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class AckCommand:
    """The worker's result for this attempt is settled in the store (applied, or found stale): forget it."""

    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class DrainCommand:
    """Tell the worker to drain (an operator asked)."""

    reason: str


@dataclass(frozen=True, slots=True)
class CloseCommand:
    """End the stream cleanly (the manager is shutting down)."""

    reason: str


Command = AssignCommand | CancelCommand | AckCommand | DrainCommand | CloseCommand


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``command`` on stream ``stream`` (the shell routes it; a stream that ended drops it)."""

    stream: int
    command: Command


@dataclass(frozen=True, slots=True)
class RunningReport:
    """A child attempt a worker says it runs (Hello or Heartbeat), and why it waits, if it does."""

    job_id: str
    attempt: int
    waiting_reason: str = ""

    @property
    def key(self) -> RunKey:
        return (self.job_id, self.attempt)


@dataclass(frozen=True, slots=True)
class HelloInfo:
    worker_id: str
    targets: frozenset[str]
    slots: int
    running: tuple[RunningReport, ...] = ()
    peer: str = ""
    version: str = ""
    accepts_batches: bool = False
    accepts_acks: bool = False
    # The worker runs with fault injection: its operations are slowed on purpose (a test setup).
    faults_active: bool = False


@dataclass(eq=False)
class WorkerSession:
    """One connected worker stream. Which children it holds is not recorded here: the fleet core's leases are
    the one record of that (``FleetCore.held_by``)."""

    worker_id: str
    stream: int
    targets: frozenset[str]
    slots: int
    peer: str = ""
    # The worker reads AssignmentBatch: several assignments go out as one message.
    accepts_batches: bool = False
    # The worker keeps results until acknowledged: the manager sends ResultAck after each commit.
    accepts_acks: bool = False
    # The worker said its fault injection is active: shown by ListWorkers so that it cannot go unnoticed.
    faults_active: bool = False
    connected_at: datetime = field(default_factory=utcnow)
    last_seen_at: datetime = field(default_factory=utcnow)
    draining: bool = False
    # Attempts it runs that are not (or no longer) its own: each still takes a slot until it stops them.
    # Reported ones (it listed them) end when a heartbeat stops listing them or their result arrives; revoked
    # ones (their lease lapsed while it was connected) end only with their result or the stream: a heartbeat
    # may have crossed the assignment on the wire, so not being listed proves nothing.
    reported: set[RunKey] = field(default_factory=set)
    revoked: set[RunKey] = field(default_factory=set)

    @property
    def foreign(self) -> int:
        """How many slots attempts that are not its own take."""
        return len(self.reported | self.revoked)

    def holds_foreign(self, key: RunKey) -> bool:
        return key in self.reported or key in self.revoked

    def forget_foreign(self, key: RunKey) -> None:
        self.reported.discard(key)
        self.revoked.discard(key)

    def touch(self) -> None:
        self.last_seen_at = utcnow()


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A connected worker as operators see it (ListWorkers), and as the leader stores it for standbys (the
    ``workers`` table): a copy, taken when it was read."""

    worker_id: str
    targets: frozenset[str]
    slots: int
    running_job_ids: tuple[str, ...]
    last_heartbeat: datetime
    connected_at: datetime
    draining: bool = False
    peer: str = ""
    faults_active: bool = False


def view_of(session: WorkerSession, running_job_ids: list[str]) -> WorkerView:
    return WorkerView(
        worker_id=session.worker_id,
        targets=session.targets,
        slots=session.slots,
        running_job_ids=tuple(sorted(running_job_ids)),
        last_heartbeat=session.last_seen_at,
        connected_at=session.connected_at,
        draining=session.draining,
        peer=session.peer,
        faults_active=session.faults_active,
    )
