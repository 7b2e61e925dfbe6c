"""The store interface the orchestrator depends on. Synchronous; the orchestrator runs it off the event loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dbmaint.operations import JobStatus
from manager_service.domain import (
    BatchOutcome,
    CancelOutcome,
    ChildOutcome,
    CreateOutcome,
    Firing,
    FiringPlan,
    FiringsOutcome,
    Job,
    JobChange,
    JobFilter,
    MaintenanceSpec,
    Schedule,
    ScheduleSpec,
    StartRequest,
    Transition,
)
from manager_service.workers import WorkerView

# How long ``job_changes`` rows are kept: the leader prunes older ones (``prune_changes``) every minute. A standby
# whose follower cannot read the store for longer than this may miss changes: it then tells its watchers to watch
# again (``standby.ChangeFollower``).
CHANGES_KEPT_FOR = 3600.0


@dataclass(frozen=True, slots=True)
class Page:
    jobs: list[Job]
    next_before_seq: int | None


@dataclass(frozen=True, slots=True)
class ChildrenPage:
    """One page of a parent's children in position order; ``more``: children (of the filter) follow it."""

    children: list[Job]
    more: bool


@dataclass(frozen=True, slots=True)
class LeaseState:
    """The store lease as one store object sees it. ``held``: this store's holder has it, at ``term``.
    Otherwise ``holder``/``address`` name who has it (empty: nobody). ``expires_in``: seconds left by the
    database's clock (None: never expires, as a SQLite store's lock file)."""

    held: bool
    holder: str
    address: str
    term: int
    expires_in: float | None

    @property
    def leader_hint(self) -> str:
        """The address clients should try instead: the holder's, while another holder has the lease and it has
        not lapsed; empty when that is not known."""
        lapsed = self.expires_in is not None and self.expires_in <= 0
        return self.address if self.holder and not self.held and not lapsed else ""

    def describe(self) -> str:
        if not self.holder:
            return "no manager holds the job store"
        where = f" at {self.address}" if self.address else ""
        return f"manager {self.holder}{where} holds the job store (term {self.term})"


class JobStore(Protocol):
    """Writes (create_maintenance, apply_batch, start_children, finish_child, release_child, cancel_job) are
    fenced once ``acquire_lease`` has succeeded: each checks the lease at its start and raises LeaseLost, having
    written nothing, when this store's holder and term no longer hold it."""

    def acquire_lease(self, holder: str, ttl: float, address: str = "") -> LeaseState:
        """Take the store's lease for ``ttl`` seconds if it is free, lapsed or already ours (the term grows by
        one), and fence every later write with it. Otherwise answer who holds it. A SQLite store takes an OS
        lock on a file next to the database for as long as it is open, or raises StoreInUse."""

    def renew_lease(self) -> LeaseState:
        """Extend the lease by its ttl from the database's now(). Raises LeaseLost if this holder and term do
        not have it any more."""

    def release_lease(self) -> None:
        """Give the lease up at once (clean shutdown): a standby takes over on its next poll."""

    def create_maintenance(self, spec: MaintenanceSpec) -> CreateOutcome:
        """Store the parent and all its children in ONE transaction. A known request_id returns the stored
        parent (created=False); the same key with other parameters raises RequestIdReused."""

    def get_job(self, job_id: str) -> Job | None: ...

    def get_children(self, parent_id: str) -> list[Job]: ...

    def children_page(
        self,
        parent_id: str,
        limit: int,
        after_position: int | None = None,
        statuses: Sequence[JobStatus] = (),
    ) -> ChildrenPage:
        """At most ``limit`` children of ``parent_id`` after ``after_position``, in position order, only those
        with one of ``statuses`` if any are given: read by keyset on (parent_id, position), one page of rows."""

    def list_jobs(self, filter: JobFilter, limit: int, before_seq: int | None) -> Page:
        """Newest first; ``before_seq`` continues a previous page."""

    def unfinished_children(self) -> list[Job]:
        """PENDING and RUNNING children in creation order: what the manager rebuilds its memory from."""

    def start_children(self, requests: Sequence[StartRequest]) -> list[Transition]:
        """PENDING -> RUNNING for each request whose attempt still matches (one transaction); the others are
        left out of the answer."""

    def apply_batch(self, outcomes: Sequence[ChildOutcome], starts: Sequence[StartRequest]) -> BatchOutcome:
        """Results, then starts, fenced like finish_child/start_children, in ONE transaction (group commit)."""

    def finish_child(self, outcome: ChildOutcome) -> Transition | None:
        """RUNNING -> COMPLETED/FAILED/CANCELLED if the attempt and worker match; None if stale."""

    def release_child(self, job_id: str, attempt: int, why: str) -> Transition | None:
        """The worker running this attempt was lost: re-queue (attempt + 1), or fail/cancel per the state
        machine. None if the attempt is no longer running."""

    def cancel_job(self, job_id: str, reason: str) -> CancelOutcome:
        """Cancel a parent (all its unfinished children) or a child. Raises JobNotFound or JobAlreadyFinished."""

    # -- what standbys read: the change feed and the connected workers

    def changes_after(self, after_seq: int, limit: int) -> list[JobChange]:
        """The first ``limit`` changes after ``after_seq``, in change_seq order: one per job and write transaction
        that inserted or changed it, the job as that transaction left it. Change_seq follows commit order: no
        change with a smaller one commits after a reader saw a bigger one."""

    def last_change_seq(self) -> int:
        """The newest change_seq (0: no change kept)."""

    def prune_changes(self, kept_for: float) -> int:
        """Delete the changes older than ``kept_for`` seconds (by the database's clock); fenced like every
        write. Answers how many went."""

    def replace_workers(self, connected: Sequence[WorkerView]) -> None:
        """Store ``connected`` as THE connected workers, stamped with this store's lease term (fenced like
        every write); the rows written before, of any term, go."""

    def list_workers(self) -> list[WorkerView]:
        """The workers the newest term stored, by worker id."""

    def pending_targets(self) -> list[str]:
        """The targets of PENDING children, sorted."""

    # -- schedules

    def create_schedule(self, spec: ScheduleSpec, paused: bool) -> Schedule:
        """Store a new schedule with a new key (a new history); ScheduleExists if a live one has this id."""

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The live schedule with this id."""

    def list_schedules(self, limit: int, after_id: str | None) -> list[Schedule]:
        """Live schedules by id, the first ``limit`` after ``after_id``."""

    def update_schedule(self, schedule_id: str, spec: ScheduleSpec, paused: bool) -> Schedule:
        """Replace a live schedule's spec and paused flag (its key, history and slots stay); ScheduleNotFound."""

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a live schedule (its firings and parents stay); ScheduleNotFound."""

    def record_firings(self, plan: FiringPlan) -> FiringsOutcome:
        """Write one scheduler step in ONE transaction (see FiringPlan): ScheduleChanged if the schedule is not
        at ``plan.version`` any more, SlotAlreadyRecorded if a slot has a row already; nothing written then."""

    def list_firings(
        self, schedule_id: str, limit: int, before_seq: int | None
    ) -> tuple[list[Firing], int | None]:
        """The live schedule's firings, newest recorded first, the first ``limit`` before ``before_seq``, and the
        seq to continue from (None: no more); ScheduleNotFound."""

    def close(self) -> None: ...
