"""Validation of client requests. Pure: raises InvalidArgument naming the field, returns plain values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dbmaint.operations import DEFAULT_OPERATIONS, Operation
from manager_service.domain import MaintenanceSpec
from manager_service.errors import InvalidArgument

TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JOB_ID_MAX_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Limits:
    max_targets: int = 1000
    max_children: int = 10_000
    max_attempts: int = 3


def validate_maintenance(
    targets: Sequence[str],
    operations: Sequence[Operation],
    request_id: str,
    limits: Limits,
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
    )


def validate_job_id(job_id: str, field: str = "id") -> str:
    if not job_id:
        raise InvalidArgument(field, "a job id is required")
    if len(job_id) > JOB_ID_MAX_LENGTH:
        raise InvalidArgument(field, f"a job id has at most {JOB_ID_MAX_LENGTH} characters")
    return job_id
