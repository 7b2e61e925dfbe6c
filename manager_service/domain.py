"""Plain types the store, the state machine and the orchestrator work on. No protobuf here."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dbmaint.operations import JobStatus, Operation, OperationReport, RunMode, TableScope
from dbmaint.thresholds import THRESHOLDS_KEY

# The config key of a job's mode (the contract with the worker: absent means MODE_ALL).
MODE_KEY = "mode"
PLAN_MODE = RunMode.PLAN.value
# The config key of a child's table parallelism (``dbmaint.operations.parallel_from_config``).
PARALLEL_KEY = "parallel"


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_plan_config(config: Mapping[str, Any] | None) -> bool:
    """Whether a job's config (or a schedule's stored maintenance) asks for MODE_PLAN."""
    return config is not None and config.get(MODE_KEY) == PLAN_MODE


@dataclass(frozen=True, slots=True)
class Progress:
    """Counters of a parent's children by status."""

    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def unfinished(self) -> int:
        return self.pending + self.running


@dataclass(frozen=True, slots=True)
class Job:
    """A parent or a child job as stored. ``version`` grows by one with every stored change."""

    id: str
    seq: int
    type: str
    status: JobStatus
    config: dict[str, Any]
    created_at: datetime
    version: int = 1
    parent_id: str | None = None
    target: str | None = None
    operation: Operation | None = None
    position: int = 0
    attempt: int = 0
    max_attempts: int = 0
    worker_id: str | None = None
    error: str | None = None
    report: OperationReport | None = None
    request_id: str | None = None
    cancel_requested: bool = False
    progress: Progress | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    schedule_id: str | None = None
    scheduled_time: datetime | None = None
    window: Mapping[str, Any] | None = None

    @property
    def is_parent(self) -> bool:
        return self.parent_id is None

    @property
    def is_plan(self) -> bool:
        """A MODE_PLAN job: read-only, so it holds no target, ignores windows and is no schedule overlap."""
        return is_plan_config(self.config)


def job_to_dict(job: Job) -> dict[str, Any]:
    """``job`` as JSON-ready values (the snapshot a ``job_changes`` row keeps); ``job_from_dict`` reads it back."""
    return {
        "id": job.id,
        "seq": job.seq,
        "type": job.type,
        "status": job.status.value,
        "config": job.config,
        "created_at": job.created_at.isoformat(),
        "version": job.version,
        "parent_id": job.parent_id,
        "target": job.target,
        "operation": job.operation.value if job.operation is not None else None,
        "position": job.position,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "worker_id": job.worker_id,
        "error": job.error,
        "report": job.report.to_dict() if job.report is not None else None,
        "request_id": job.request_id,
        "cancel_requested": job.cancel_requested,
        "progress": _progress_to_dict(job.progress),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "schedule_id": job.schedule_id,
        "scheduled_time": _iso(job.scheduled_time),
        "window": dict(job.window) if job.window is not None else None,
    }


def job_from_dict(data: Mapping[str, Any]) -> Job:
    progress = data["progress"]
    return Job(
        id=data["id"],
        seq=data["seq"],
        type=data["type"],
        status=JobStatus(data["status"]),
        config=data["config"],
        created_at=datetime.fromisoformat(data["created_at"]),
        version=data["version"],
        parent_id=data["parent_id"],
        target=data["target"],
        operation=Operation(data["operation"]) if data["operation"] else None,
        position=data["position"],
        attempt=data["attempt"],
        max_attempts=data["max_attempts"],
        worker_id=data["worker_id"],
        error=data["error"],
        report=OperationReport.from_dict(data["report"]) if data["report"] is not None else None,
        request_id=data["request_id"],
        cancel_requested=data["cancel_requested"],
        progress=Progress(**progress) if progress is not None else None,
        started_at=_instant(data["started_at"]),
        finished_at=_instant(data["finished_at"]),
        schedule_id=data["schedule_id"],
        scheduled_time=_instant(data["scheduled_time"]),
        window=data["window"],
    )


def _progress_to_dict(progress: Progress | None) -> dict[str, int] | None:
    if progress is None:
        return None
    return {
        "total": progress.total,
        "pending": progress.pending,
        "running": progress.running,
        "succeeded": progress.succeeded,
        "failed": progress.failed,
        "cancelled": progress.cancelled,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True, slots=True)
class JobChange:
    """One stored change of a job (a row of ``job_changes``): the job as one write transaction left it.
    ``change_seq`` orders all changes of the store; ``snapshot`` is ``job_to_dict`` as JSON text, decoded only
    when someone wants the job (``job``)."""

    change_seq: int
    job_id: str
    parent_id: str | None
    version: int
    at: datetime
    snapshot: str

    def job(self) -> Job:
        return job_from_dict(json.loads(self.snapshot))


@dataclass(frozen=True, slots=True)
class MaintenanceSpec:
    """A validated request for maintenance: every target gets every operation, in this order."""

    targets: tuple[str, ...]
    operations: tuple[Operation, ...]
    request_id: str | None = None
    max_attempts: int = 3
    scope: TableScope = field(default_factory=TableScope)
    # MODE_PLAN: the children observe and report, change nothing (read-only: see ``dispatch``); MODE_AUTO: they
    # act only where a threshold is crossed (they hold their target like MODE_ALL).
    mode: RunMode = RunMode.ALL
    # MODE_PLAN/MODE_AUTO: the thresholds the request set (``dbmaint.thresholds``; the others keep defaults).
    thresholds: Mapping[str, float] = field(default_factory=dict)
    # How many tables each child may run at once (``"parallel"`` in the config when above 1).
    parallel: int = 1
    # The window its children may start in (``window_rules.to_dict``), and for a schedule's firing, the
    # schedule's id and the slot; all stored on the parent and on each child.
    window: Mapping[str, Any] | None = None
    schedule_id: str | None = None
    scheduled_time: datetime | None = None

    @property
    def plan(self) -> bool:
        """A MODE_PLAN request: read-only children."""
        return self.mode is RunMode.PLAN

    @property
    def fingerprint(self) -> str:
        """What must match when an idempotency key is reused (the window too, when there is one: a request
        without one keeps the fingerprint it always had)."""
        window = {"window": dict(self.window)} if self.window is not None else {}
        return json.dumps(
            {"targets": self.targets, "operations": self.operations, **self.child_config(), **window},
            sort_keys=True,
        )

    def child_config(self) -> dict[str, Any]:
        """What the parent's and every child's config carry besides the target and operation: the table scope,
        ``"mode": "plan"``/``"auto"`` (absent: MODE_ALL, so older configs read the same), the thresholds the
        request set, and ``"parallel": N`` when N > 1 (absent: 1, so a serial request keeps the fingerprint it
        always had)."""
        return {
            **self.scope.to_config(),
            **({MODE_KEY: self.mode.value} if self.mode is not RunMode.ALL else {}),
            **({THRESHOLDS_KEY: dict(sorted(self.thresholds.items()))} if self.thresholds else {}),
            **({PARALLEL_KEY: self.parallel} if self.parallel > 1 else {}),
        }


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """A new parent with ALL its children, in position order (the manager queues them); or, for a repeated
    request_id (``created`` False), the stored parent with the first page of its children and ``more_children``
    when more follow."""

    parent: Job
    children: list[Job]
    created: bool
    more_children: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    """A child's stored change and its parent after the same transaction."""

    child: Job
    parent: Job


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one group commit changed: results applied and children started (the others were stale)."""

    finished: list[Transition]
    started: list[Transition]


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """What a cancel request changed: the job itself, children cancelled without running, and running
    children that now carry a cancel request and must be interrupted on their worker."""

    job: Job
    changed: list[Job] = field(default_factory=list)
    to_interrupt: list[Job] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobFilter:
    status: JobStatus | None = None
    type: str | None = None
    parent_id: str | None = None
    schedule_id: str | None = None


@dataclass(frozen=True, slots=True)
class StartRequest:
    """Assign child ``job_id`` at ``attempt`` to ``worker_id``."""

    job_id: str
    attempt: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """A worker's report for one child attempt."""

    job_id: str
    attempt: int
    worker_id: str
    status: JobStatus
    error: str | None = None
    report: OperationReport | None = None


class FiringOutcome(enum.StrEnum):
    """What became of one slot of a schedule."""

    FIRED = "fired"
    SKIPPED_OVERLAP = "skipped_overlap"
    SKIPPED_PAUSED = "skipped_paused"
    MISSED = "missed"
    OUTSIDE_RANGE = "outside_range"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A validated schedule as the user asked for it; kept as JSON (``to_dict``/``from_dict``). Exactly one of
    ``cron`` (normalized) and ``every_seconds``; ``catchup_seconds`` None means the default of the cadence."""

    id: str
    maintenance: MaintenanceSpec
    cron: str | None = None
    every_seconds: float | None = None
    time_zone: str = ""
    overlap: str = "skip"
    catchup_seconds: float | None = None
    jitter_seconds: float = 0.0
    start_at: datetime | None = None
    end_at: datetime | None = None
    window: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        maintenance = self.maintenance
        return {
            "id": self.id,
            "cron": self.cron,
            "every_seconds": self.every_seconds,
            "time_zone": self.time_zone,
            "targets": list(maintenance.targets),
            "operations": [operation.value for operation in maintenance.operations],
            "max_attempts": maintenance.max_attempts,
            **maintenance.child_config(),
            "overlap": self.overlap,
            "catchup_seconds": self.catchup_seconds,
            "jitter_seconds": self.jitter_seconds,
            "start_at": self.start_at.isoformat() if self.start_at else None,
            "end_at": self.end_at.isoformat() if self.end_at else None,
            "window": dict(self.window) if self.window is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleSpec:
        maintenance = MaintenanceSpec(
            targets=tuple(data["targets"]),
            operations=tuple(Operation(name) for name in data["operations"]),
            max_attempts=int(data.get("max_attempts", 3)),
            scope=TableScope.from_config(data),
            mode=RunMode(data.get(MODE_KEY) or RunMode.ALL.value),
            thresholds=dict(data.get(THRESHOLDS_KEY, {})),
            parallel=int(data.get(PARALLEL_KEY, 1)),
        )
        return cls(
            id=data["id"],
            maintenance=maintenance,
            cron=data.get("cron"),
            every_seconds=data.get("every_seconds"),
            time_zone=data.get("time_zone", ""),
            overlap=data.get("overlap", "skip"),
            catchup_seconds=data.get("catchup_seconds"),
            jitter_seconds=float(data.get("jitter_seconds", 0.0)),
            start_at=_instant(data.get("start_at")),
            end_at=_instant(data.get("end_at")),
            window=data.get("window"),
        )


def _instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule. ``key`` is its identity (firings hang on it; a re-created id gets a new key);
    ``last_slot`` the latest slot that has a firing row (the scheduler resumes after it); ``buffered_slot`` the
    slot BUFFER_ONE keeps for when the previous parent ends. ``version`` grows with every stored change."""

    key: str
    spec: ScheduleSpec
    paused: bool
    created_at: datetime
    updated_at: datetime
    version: int = 1
    last_slot: datetime | None = None
    buffered_slot: datetime | None = None
    last_parent_id: str | None = None

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True, slots=True)
class FiringRecord:
    """A firing row to write: the slot, what became of it, and (a gap of MISSED slots) how many slots it stands
    for, up to ``through``, the last of them."""

    scheduled_time: datetime
    outcome: FiringOutcome
    reason: str | None = None
    missed_count: int = 1
    through: datetime | None = None

    @property
    def last_covered(self) -> datetime:
        return self.through or self.scheduled_time


@dataclass(frozen=True, slots=True)
class Firing:
    """A stored firing row."""

    schedule_key: str
    schedule_id: str
    scheduled_time: datetime
    outcome: FiringOutcome
    recorded_at: datetime
    parent_id: str | None = None
    reason: str | None = None
    missed_count: int = 1


@dataclass(frozen=True, slots=True)
class FiringPlan:
    """What one scheduler step writes for one schedule, in ONE transaction: the firing rows (unique per slot),
    the parent of the FIRED one (``fire``: the maintenance, created as by CreateMaintenance, carrying the
    schedule's id and the slot), the schedule's new ``last_slot`` (never moved back) and ``buffered_slot``. It
    applies only to the schedule at ``version``: a schedule changed meanwhile (paused, edited, deleted) raises
    ScheduleChanged, and a slot that already has a row raises SlotAlreadyRecorded; either way nothing is
    written."""

    schedule_key: str
    version: int
    records: tuple[FiringRecord, ...]
    fire: MaintenanceSpec | None = None
    last_slot: datetime | None = None
    buffered_slot: datetime | None = None


@dataclass(frozen=True, slots=True)
class FiringsOutcome:
    """The rows a plan wrote, the parent it created (if it fired) and the schedule after it."""

    firings: list[Firing]
    created: CreateOutcome | None
    schedule: Schedule
