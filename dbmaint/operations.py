"""Operation names, job types and status names: the vocabulary both services and the CLI share.

Plain strings on purpose: the store, the state machine and the engines work on these, and protobuf enums are
translated at the edges (``dbmaint.wire``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

PARENT_JOB_TYPE = "database_maintenance_parent"
CHILD_JOB_TYPE = "database_maintenance_operation"
# The type of the old single-process design. It is never created or executed; workers refuse it by name.
LEGACY_JOB_TYPE = "database_maintenance"
JOB_TYPES = (PARENT_JOB_TYPE, CHILD_JOB_TYPE)


class Operation(enum.StrEnum):
    """A maintenance operation; a child runs exactly one."""

    VACUUM = "vacuum"
    ANALYZE = "analyze"
    REINDEX = "reindex"
    OPTIMIZE = "optimize"


# What an empty `operations` list in a request means.
DEFAULT_OPERATIONS = (Operation.VACUUM, Operation.ANALYZE, Operation.REINDEX)


class JobStatus(enum.StrEnum):
    """The life-cycle status of a job; the last three are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class OperationReport:
    """What one operation did on one target, as the worker measured it."""

    engine: str
    duration_seconds: float = 0.0
    bytes_before: int = 0
    bytes_after: int = 0
    objects_processed: int = 0
    objects_skipped: int = 0
    notes: tuple[str, ...] = ()

    @property
    def bytes_reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "duration_seconds": self.duration_seconds,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "objects_processed": self.objects_processed,
            "objects_skipped": self.objects_skipped,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperationReport:
        return cls(
            engine=str(data.get("engine", "")),
            duration_seconds=float(data.get("duration_seconds", 0.0)),
            bytes_before=int(data.get("bytes_before", 0)),
            bytes_after=int(data.get("bytes_after", 0)),
            objects_processed=int(data.get("objects_processed", 0)),
            objects_skipped=int(data.get("objects_skipped", 0)),
            notes=tuple(str(n) for n in data.get("notes", ())),
        )
