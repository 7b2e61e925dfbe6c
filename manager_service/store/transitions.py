"""Every change of a stored job, described once.

A transition is a ``Changes``: the Job fields it sets and their new values. ``applied`` gives the Job after it,
``column_values`` the values its UPDATE writes; the store derives both from the same ``Changes``, so the Job it
answers with and the row it stores cannot disagree. Every transition also bumps ``version`` by one (``applied``
here, ``version + 1`` in the UPDATE) and stamps ``updated_at``, which the Job does not carry. Each function below
is one transition; the store adds the fence (the status and attempt the row must still have) and the commit
token. Pure: no database here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from dbmaint.operations import JobStatus
from manager_service import state_machine
from manager_service.domain import ChildOutcome, Job, Progress, StartRequest

Changes = Mapping[str, Any]

# The columns that hold a parent's Progress (``total`` never changes after the insert).
PROGRESS_COUNTERS = ("pending", "running", "succeeded", "failed", "cancelled")


def finish(outcome: ChildOutcome, now: datetime) -> Changes:
    """A running child's result: its status (COMPLETED, FAILED or CANCELLED), error and report."""
    return {"status": outcome.status, "error": outcome.error, "report": outcome.report, "finished_at": now}


def start(request: StartRequest, now: datetime) -> Changes:
    """A pending child runs on ``request.worker_id``; the error of a lost earlier attempt is cleared."""
    return {"status": JobStatus.RUNNING, "worker_id": request.worker_id, "started_at": now, "error": None}


def release(child: Job, why: str, now: datetime) -> Changes:
    """A running child whose worker was lost: re-queued at its next attempt, or CANCELLED or FAILED as
    ``state_machine.after_worker_lost`` decides."""
    decision = state_machine.after_worker_lost(child, why)
    requeued = decision.status is JobStatus.PENDING
    return {
        "status": decision.status,
        "attempt": decision.attempt,
        "error": f"attempt {child.attempt} lost: {why}; re-queued" if requeued else decision.error,
        "started_at": None if requeued else child.started_at,
        "finished_at": None if requeued else now,
    }


def request_cancel() -> Changes:
    """A running child is to be interrupted on its worker; its result ends it."""
    return {"cancel_requested": True}


def request_parent_cancel(reason: str) -> Changes:
    """A parent is being cancelled: ``reason`` becomes its error."""
    return {"cancel_requested": True, "error": reason}


def cancel_pending(reason: str, now: datetime) -> Changes:
    """A pending child is cancelled before it ever runs."""
    return {"status": JobStatus.CANCELLED, "cancel_requested": True, "error": reason, "finished_at": now}


def finishes(parent: Job, status: JobStatus) -> bool:
    """Does settling ``parent`` at ``status`` end it (then its error is rebuilt from its failed children)?"""
    return status.is_terminal and not parent.status.is_terminal


def settle(parent: Job, progress: Progress, status: JobStatus, now: datetime, failed: Sequence[Job]) -> Changes:
    """A parent's new counters and the status they give; its start time when it first runs, its end time and
    error when it finishes (``failed``: its failed children, read only then)."""
    ending = finishes(parent, status)
    return {
        "progress": progress,
        "status": status,
        "started_at": now if status is JobStatus.RUNNING and parent.started_at is None else parent.started_at,
        "finished_at": now if ending else parent.finished_at,
        "error": state_machine.parent_error(status, failed, parent.error) if ending else parent.error,
    }


def applied(job: Job, changes: Changes) -> Job:
    """``job`` after ``changes``."""
    return replace(job, **changes, version=job.version + 1)


def column_values(changes: Changes) -> dict[str, Any]:
    """The column values an UPDATE writes for ``changes`` (the inverse of reading a row into a Job)."""
    values: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "progress":
            values.update((name, getattr(value, name)) for name in PROGRESS_COUNTERS)
        elif field == "report":
            values["result"] = json.dumps(value.to_dict()) if value is not None else None
        elif isinstance(value, JobStatus):
            values[field] = value.value
        else:
            values[field] = value
    return values
