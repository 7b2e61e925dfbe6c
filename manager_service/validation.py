"""Validation of client requests. Pure: raises InvalidArgument naming the field, returns plain values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dbmaint.operations import DEFAULT_OPERATIONS, Operation, TableScope
from manager_service.domain import MaintenanceSpec
from manager_service.errors import InvalidArgument

TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JOB_ID_MAX_LENGTH = 64
# "schema.table" of two 63-byte PostgreSQL (64-character MariaDB) identifiers.
CATALOG_NAME_MAX_LENGTH = 129


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
) -> MaintenanceSpec:
    """A MaintenanceSpec from raw request values, or InvalidArgument naming the first wrong field."""
    if not targets:
        raise InvalidArgument("targets", "at least one target is required")
    if len(targets) > limits.max_targets:
        raise InvalidArgument("targets", f"{len(targets)} targets requested; the limit is {limits.max_targets}")
    seen: set[str] = set()
    for index, name in enumerate(targets):
        if not TARGET_NAME.fullmatch(name):
            raise InvalidArgument(
                f"targets[{index}]",
                f"invalid target name {name[:80]!r}: use 1-64 characters of [A-Za-z0-9_.-], "
                "starting with a letter or digit",
            )
        if name in seen:
            raise InvalidArgument(f"targets[{index}]", f"duplicate target {name!r}")
        seen.add(name)
    chosen = tuple(operations) or DEFAULT_OPERATIONS
    children = len(targets) * len(chosen)
    if children > limits.max_children:
        raise InvalidArgument(
            "operations",
            f"{len(targets)} targets x {len(chosen)} operations = {children} child jobs; the limit is "
            f"{limits.max_children}",
        )
    if request_id and not REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument("request_id", "must be 1-128 characters of [A-Za-z0-9._:-]")
    return MaintenanceSpec(
        targets=tuple(targets),
        operations=chosen,
        request_id=request_id or None,
        max_attempts=limits.max_attempts,
        scope=TableScope(_catalog_names("schemas", schemas, limits), _catalog_names("tables", tables, limits)),
    )


def _catalog_names(field: str, names: Sequence[str], limits: Limits) -> tuple[str, ...]:
    """Schema or table names: checked for shape only here; the worker matches them against the catalog (they
    are never spliced into SQL)."""
    if len(names) > limits.max_scope_names:
        raise InvalidArgument(field, f"{len(names)} names given; the limit is {limits.max_scope_names}")
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name or len(name) > CATALOG_NAME_MAX_LENGTH or not name.isprintable():
            raise InvalidArgument(
                f"{field}[{index}]",
                f"a name has 1-{CATALOG_NAME_MAX_LENGTH} printable characters, got {name[:80]!r}",
            )
        if name in seen:
            raise InvalidArgument(f"{field}[{index}]", f"duplicate name {name!r}")
        seen.add(name)
    return tuple(names)


def validate_job_id(job_id: str, field: str = "id") -> str:
    if not job_id:
        raise InvalidArgument(field, "a job id is required")
    if len(job_id) > JOB_ID_MAX_LENGTH:
        raise InvalidArgument(field, f"a job id has at most {JOB_ID_MAX_LENGTH} characters")
    return job_id
