"""Plain types the store, the state machine and the orchestrator work on. No protobuf here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dbmaint.operations import JobStatus, Operation, OperationReport, TableScope


def utcnow() -> datetime:
    return datetime.now(UTC)


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

    @property
    def is_parent(self) -> bool:
        return self.parent_id is None


@dataclass(frozen=True, slots=True)
class MaintenanceSpec:
    """A validated request for maintenance: every target gets every operation, in this order."""

    targets: tuple[str, ...]
    operations: tuple[Operation, ...]
    request_id: str | None = None
    max_attempts: int = 3
    scope: TableScope = field(default_factory=TableScope)

    @property
    def fingerprint(self) -> str:
        """What must match when an idempotency key is reused."""
        return json.dumps(
            {"targets": self.targets, "operations": self.operations, **self.scope.to_config()}, sort_keys=True
        )


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
