"""Validation of client requests and worker input. Pure: raises RequestInvalid naming the field, returns
plain values.

The rules for text that comes from outside the manager:

- **Ids are refused, never repaired.** A job id, a parent id, a worker id (in a Hello or a DrainWorker) and a
  request id with a control character (C0 including NUL, DEL, C1) or a lone surrogate are INVALID_ARGUMENT,
  naming the field and the character. Nothing with such an id can exist, and a NUL cannot even be sent to
  PostgreSQL as a query parameter. A worker's result for such a job id is ignored.
- **Free text is sanitized, never refused.** What a worker reports (a result's error, the report's engine and
  notes) and a client's cancel reason are stored and shown to operators: every control character except
  newline and tab becomes U+FFFD (NUL always does, so the store never sees one), and each is cut to a
  bounded length. A worker whose message is sanitized still gets its result applied. So is what only
  reaches the logs (a worker's version, a draining reason): no escape sequence reaches an operator's terminal.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from dbmaint.operations import (
    DEFAULT_OPERATIONS,
    MAX_PARALLEL,
    Operation,
    OperationReport,
    RunMode,
    TableReport,
    TableScope,
)
from dbmaint.thresholds import Thresholds
from manager_service.domain import MaintenanceSpec
from manager_service.errors import RequestInvalid

TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JOB_ID_MAX_LENGTH = 64
WORKER_ID_MAX_LENGTH = 255
# Bounds of the free text a worker reports (a whole report must fit one 16 MiB message anyway).
RESULT_ERROR_MAX_LENGTH = 4000
REPORT_ENGINE_MAX_LENGTH = 64
REPORT_NOTE_MAX_LENGTH = 2000
REPORT_MAX_NOTES = 1000
# Per-table reports: names are catalog identifiers (PostgreSQL: 63 bytes, MariaDB: 64 characters), reason codes
# and figure names short words; a report keeps at most this many tables (a target with more is rare and the
# notes still count them all).
REPORT_NAME_MAX_LENGTH = 128
REPORT_MAX_TABLES = 10000
REPORT_MAX_FIGURES = 64
CANCEL_REASON_MAX_LENGTH = 500  # a drain reason too
WAITING_REASON_MAX_LENGTH = 500  # why a running attempt waits (the target's resource lock)
WORKER_VERSION_MAX_LENGTH = 64
REPLACEMENT = "\ufffd"
# Control characters (C0, DEL, C1) and lone surrogates; newline and tab are kept in free text.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSAFE_IN_ID = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# "schema.table" of two 63-byte PostgreSQL (64-character MariaDB) identifiers.
CATALOG_NAME_MAX_LENGTH = 129
# Pages of a parent's children (GetJob; CreateMaintenance and the WatchJob snapshot answer with the default
# page). 5,000 children are about 2 MB of protobuf: under the 4 MiB default message limit of most clients.
DEFAULT_CHILDREN_PAGE_SIZE = 500
MAX_CHILDREN_PAGE_SIZE = 5_000


@dataclass(frozen=True, slots=True)
class Limits:
    max_targets: int = 1000
    max_children: int = 10_000
    max_attempts: int = 3
    max_scope_names: int = 100


def validate_maintenance(
    targets: Sequence[str],
    operations: Sequence[Operation],
    request_id: str,
    limits: Limits,
    schemas: Sequence[str] = (),
    tables: Sequence[str] = (),
    mode: RunMode = RunMode.ALL,
    thresholds: Mapping[str, float] | None = None,
) -> MaintenanceSpec:
    """A MaintenanceSpec from raw request values, or RequestInvalid naming the first wrong field. ``mode``: from
    ``validate_mode``; ``thresholds``: the request's, checked by ``validate_thresholds``."""
    if not targets:
        raise RequestInvalid("targets", "at least one target is required")
    if len(targets) > limits.max_targets:
        raise RequestInvalid("targets", f"{len(targets)} targets requested; the limit is {limits.max_targets}")
    seen: set[str] = set()
    for index, name in enumerate(targets):
        if not TARGET_NAME.fullmatch(name):
            raise RequestInvalid(
                f"targets[{index}]",
                f"invalid target name {name[:80]!r}: use 1-64 characters of [A-Za-z0-9_.-], "
                "starting with a letter or digit",
            )
        if name in seen:
            raise RequestInvalid(f"targets[{index}]", f"duplicate target {name!r}")
        seen.add(name)
    chosen = tuple(operations) or DEFAULT_OPERATIONS
    children = len(targets) * len(chosen)
    if children > limits.max_children:
        raise RequestInvalid(
            "operations",
            f"{len(targets)} targets x {len(chosen)} operations = {children} child jobs; the limit is "
            f"{limits.max_children}",
        )
    if request_id:
        _refuse_control_characters(request_id, "request_id")
    if request_id and not REQUEST_ID.fullmatch(request_id):
        raise RequestInvalid("request_id", "must be 1-128 characters of [A-Za-z0-9._:-]")
    return MaintenanceSpec(
        targets=tuple(targets),
        operations=chosen,
        request_id=request_id or None,
        max_attempts=limits.max_attempts,
        scope=TableScope(_catalog_names("schemas", schemas, limits), _catalog_names("tables", tables, limits)),
        mode=mode,
        thresholds=validate_thresholds(thresholds or {}, mode),
    )


_MODES = {
    "MODE_UNSPECIFIED": RunMode.ALL,
    "MODE_ALL": RunMode.ALL,
    "MODE_PLAN": RunMode.PLAN,
    "MODE_AUTO": RunMode.AUTO,
}


def validate_mode(mode: str) -> RunMode:
    """A request's mode (the Mode enum's name; UNSPECIFIED is ALL); an unknown value is refused."""
    if mode not in _MODES:
        raise RequestInvalid("mode", f"unknown mode {mode}")
    return _MODES[mode]


def validate_thresholds(thresholds: Mapping[str, float], mode: RunMode) -> dict[str, float]:
    """The request's thresholds (``dbmaint.thresholds``): known names, finite values >= 0, and only with a mode
    that observes (PLAN, AUTO): MODE_ALL compares nothing, so a threshold there is a mistake worth saying."""
    if not thresholds:
        return {}
    if mode is RunMode.ALL:
        raise RequestInvalid("thresholds", "thresholds apply to MODE_PLAN and MODE_AUTO only")
    for name in sorted(thresholds):
        try:
            Thresholds.from_mapping({name: thresholds[name]})
        except ValueError as exc:
            raise RequestInvalid(f"thresholds[{name[:80]!r}]", str(exc)) from None
    return {name: float(thresholds[name]) for name in sorted(thresholds)}


def validate_parallel(parallel: int) -> int:
    """How many tables each child may run at once: 0 (unset) means 1; 1..MAX_PARALLEL as given; anything else
    is refused."""
    if parallel == 0:
        return 1
    if not 1 <= parallel <= MAX_PARALLEL:
        raise RequestInvalid("parallel", f"{parallel} is not from 1 to {MAX_PARALLEL} (0 means 1)")
    return parallel


def _catalog_names(field: str, names: Sequence[str], limits: Limits) -> tuple[str, ...]:
    """Schema or table names: checked for shape only here; the worker matches them against the catalog (they
    are never spliced into SQL)."""
    if len(names) > limits.max_scope_names:
        raise RequestInvalid(field, f"{len(names)} names given; the limit is {limits.max_scope_names}")
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name or len(name) > CATALOG_NAME_MAX_LENGTH or not name.isprintable():
            raise RequestInvalid(
                f"{field}[{index}]",
                f"a name has 1-{CATALOG_NAME_MAX_LENGTH} printable characters, got {name[:80]!r}",
            )
        if name in seen:
            raise RequestInvalid(f"{field}[{index}]", f"duplicate name {name!r}")
        seen.add(name)
    return tuple(names)


def validate_children_page_size(size: int, field: str = "children_page_size") -> int:
    """The number of children a page holds: 0 is the default page, anything outside 0-5000 is refused."""
    if size < 0 or size > MAX_CHILDREN_PAGE_SIZE:
        raise RequestInvalid(
            field, f"must be between 1 and {MAX_CHILDREN_PAGE_SIZE} (0: the default {DEFAULT_CHILDREN_PAGE_SIZE})"
        )
    return size or DEFAULT_CHILDREN_PAGE_SIZE


def validate_job_id(job_id: str, field: str = "id") -> str:
    if not job_id:
        raise RequestInvalid(field, "a job id is required")
    if len(job_id) > JOB_ID_MAX_LENGTH:
        raise RequestInvalid(field, f"a job id has at most {JOB_ID_MAX_LENGTH} characters")
    _refuse_control_characters(job_id, field)
    return job_id


def is_job_id(value: str) -> bool:
    """Whether ``value`` could be a job id (for worker input, which is ignored rather than refused)."""
    return 0 < len(value) <= JOB_ID_MAX_LENGTH and _UNSAFE_IN_ID.search(value) is None


def validate_worker_id(worker_id: str, field: str) -> str:
    if not worker_id or len(worker_id) > WORKER_ID_MAX_LENGTH:
        raise RequestInvalid(field, f"1-{WORKER_ID_MAX_LENGTH} characters required")
    _refuse_control_characters(worker_id, field)
    return worker_id


def _refuse_control_characters(value: str, field: str) -> None:
    found = _UNSAFE_IN_ID.search(value)
    if found is not None:
        character = found.group()
        name = unicodedata.name(character, "") or ("lone surrogate" if character >= "\ud800" else "control")
        raise RequestInvalid(
            field,
            f"control character U+{ord(character):04X} ({name}) at position {found.start()}: "
            "ids have printable characters only",
        )


def sanitize_text(value: str, limit: int) -> str:
    """``value`` with every control character but newline and tab (and any lone surrogate) replaced by U+FFFD,
    cut to ``limit`` characters: fit to store and to show, whatever a worker or a client sent."""
    return _UNSAFE.sub(REPLACEMENT, value[:limit])


def sanitize_report(report: OperationReport) -> OperationReport:
    """A worker's report with its engine, notes and table reports sanitized and bounded (at most REPORT_MAX_NOTES
    notes, REPORT_MAX_TABLES tables of REPORT_MAX_FIGURES figures per map)."""
    engine = sanitize_text(report.engine, REPORT_ENGINE_MAX_LENGTH)
    notes = tuple(sanitize_text(note, REPORT_NOTE_MAX_LENGTH) for note in report.notes[:REPORT_MAX_NOTES])
    tables = tuple(_sanitize_table(table) for table in report.tables[:REPORT_MAX_TABLES])
    if engine == report.engine and notes == report.notes and tables == report.tables:
        return report
    return replace(report, engine=engine, notes=notes, tables=tables)


def _sanitize_table(table: TableReport) -> TableReport:
    def name(text: str) -> str:
        return sanitize_text(text, REPORT_NAME_MAX_LENGTH)

    def figures(values: Mapping[str, float]) -> dict[str, float]:
        # NaN and infinities are not JSON: the store (a JSON column on PostgreSQL) would refuse the report.
        kept = [(key, value) for key, value in values.items() if math.isfinite(value)]
        return {name(key): value for key, value in kept[:REPORT_MAX_FIGURES]}

    return replace(
        table,
        schema=name(table.schema),
        table=name(table.table),
        reasons=tuple(name(reason) for reason in table.reasons[:REPORT_MAX_FIGURES]),
        evidence=figures(table.evidence),
        before=figures(table.before),
        after=figures(table.after),
    )
