"""Operation names, job types and status names: the vocabulary both services and the CLI share.

Plain strings on purpose: the store, the state machine and the engines work on these, and protobuf enums are
translated at the edges (``dbmaint.wire``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
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


class TableAction(enum.StrEnum):
    """What was done, or proposed, for one table (``TableReport.action``)."""

    VACUUM = "vacuum"
    FREEZE = "freeze"
    ANALYZE = "analyze"
    REINDEX = "reindex"
    DROP_INVALID_INDEX = "drop_invalid_index"
    OPTIMIZE = "optimize"
    SKIP = "skip"


# MODE_AUTO: the proposals a child of each operation carries out (the others are another operation's business).
ACTIONS_OF: Mapping[Operation, frozenset[TableAction]] = {
    Operation.VACUUM: frozenset({TableAction.FREEZE, TableAction.VACUUM, TableAction.OPTIMIZE}),
    Operation.ANALYZE: frozenset({TableAction.ANALYZE}),
    Operation.REINDEX: frozenset({TableAction.REINDEX, TableAction.DROP_INVALID_INDEX}),
    Operation.OPTIMIZE: frozenset(
        {TableAction.FREEZE, TableAction.VACUUM, TableAction.OPTIMIZE, TableAction.ANALYZE}
    ),
}


class Reason(enum.StrEnum):
    """The stable reason codes of a ``TableReport``; scripts match on these strings, so never rename one."""

    DEAD_TUPLES = "dead_tuples"
    XID_AGE = "xid_age"
    MXID_AGE = "mxid_age"
    BLOAT_ESTIMATE = "bloat_estimate"
    INVALID_INDEX = "invalid_index"
    STALE_STATISTICS = "stale_statistics"
    DATA_FREE = "data_free"
    FREELIST = "freelist"
    BELOW_THRESHOLD = "below_threshold"
    RECENTLY_MAINTAINED = "recently_maintained"
    LOCKED = "locked"
    XMIN_HORIZON_HELD = "xmin_horizon_held"
    NO_SPACE_RETURNED = "no_space_returned"


@dataclass(frozen=True, slots=True)
class TableReport:
    """One table: the action taken or proposed, why (``Reason`` codes), and catalog figures by name with the
    unit in the name (``dead_tuples``, ``xid_age``, ``bloat_bytes``...), before and after when re-observed."""

    schema: str
    table: str
    action: TableAction | None = None
    reasons: tuple[str, ...] = ()
    evidence: Mapping[str, float] = field(default_factory=dict)
    before: Mapping[str, float] = field(default_factory=dict)
    after: Mapping[str, float] = field(default_factory=dict)
    duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "table": self.table,
            "action": self.action.value if self.action else None,
            "reasons": list(self.reasons),
            "evidence": dict(self.evidence),
            "before": dict(self.before),
            "after": dict(self.after),
            "duration_seconds": self.duration_seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableReport:
        """The report ``to_dict`` wrote; an action this version does not know reads as None (unspecified)."""
        action = str(data.get("action"))
        return cls(
            schema=str(data.get("schema", "")),
            table=str(data.get("table", "")),
            action=TableAction(action) if action in set(TableAction) else None,
            reasons=tuple(str(r) for r in data.get("reasons", ())),
            evidence=_figures(data.get("evidence")),
            before=_figures(data.get("before")),
            after=_figures(data.get("after")),
            duration_seconds=float(data.get("duration_seconds", 0.0)),
        )


def _figures(value: Any) -> dict[str, float]:
    return {str(name): float(number) for name, number in (value or {}).items()}


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
    # Per-table reports, most urgent first. Stored with the report; the manager shows them only in GetJob of a
    # child.
    tables: tuple[TableReport, ...] = ()

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
            "tables": [table.to_dict() for table in self.tables],
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
            tables=tuple(TableReport.from_dict(t) for t in data.get("tables", ())),
        )


class RunMode(enum.StrEnum):
    """How a child runs, from ``"mode"`` in its config (the proto's ``Mode``): ALL runs the statement on every
    table in scope (absent means ALL, so older configs read the same); PLAN observes and reports, changing
    nothing; AUTO observes, acts only where a threshold is crossed and observes again."""

    ALL = "all"
    PLAN = "plan"
    AUTO = "auto"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunMode:
        """The mode in a child's config; ValueError names a value this version does not run."""
        value = config.get("mode", cls.ALL.value)
        if value not in {mode.value for mode in cls}:
            raise ValueError(f"config 'mode' {value!r} is not one of {', '.join(mode.value for mode in cls)}")
        return cls(value)


# ``"parallel"`` in a child's config: how many tables it may run at once (absent: 1, serial).
MAX_PARALLEL = 8


def parallel_from_config(config: Mapping[str, Any]) -> int:
    """The child's ``"parallel"`` (absent: 1); ValueError unless an integer 1..MAX_PARALLEL."""
    value = config.get("parallel", 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARALLEL:
        raise ValueError(f"config 'parallel' {value!r} is not an integer from 1 to {MAX_PARALLEL}")
    return value


@dataclass(frozen=True, slots=True)
class TableScope:
    """Which tables an operation covers: all user tables (empty), or those of some schemas, or named tables.

    Travels in the child's config as ``"schemas"`` and ``"tables"``; names are matched against the target's
    catalog on the worker, never spliced into SQL.
    """

    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.schemas and not self.tables

    def to_config(self) -> dict[str, list[str]]:
        config: dict[str, list[str]] = {}
        if self.schemas:
            config["schemas"] = list(self.schemas)
        if self.tables:
            config["tables"] = list(self.tables)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TableScope:
        """The scope in a child's config; ValueError if ``schemas``/``tables`` are not lists of strings."""
        return cls(schemas=_names(config, "schemas"), tables=_names(config, "tables"))

    @staticmethod
    def split_table(name: str) -> tuple[str | None, str]:
        """``"schema.table"`` -> ("schema", "table"); ``"table"`` -> (None, "table"). The first dot splits."""
        schema, dot, table = name.partition(".")
        return (schema, table) if dot else (None, name)


def _names(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"config {key!r} must be a list of non-empty strings")
    return tuple(value)
