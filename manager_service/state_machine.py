"""Transition rules for children and parents. Pure policy: no I/O, no clock, no protobuf.

The store asks these functions what a change should be and applies it in one transaction; the unit tests
walk every transition here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dbmaint.operations import JobStatus
from manager_service.domain import Job, Progress


class InvalidTransition(Exception):
    def __init__(self, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"a child cannot go from {current} to {target}")
        self.current = current
        self.target = target


# Every allowed child transition. A terminal status has no way out: it is never overwritten.
CHILD_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PENDING}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

RESULT_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in CHILD_TRANSITIONS[current]


def check_transition(current: JobStatus, target: JobStatus) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(current, target)


def result_applies(child: Job, attempt: int, worker_id: str) -> bool:
    """A result counts only for the running attempt, from the worker that holds it (the fence)."""
    return child.status is JobStatus.RUNNING and child.attempt == attempt and child.worker_id == worker_id


def start_applies(child: Job, attempt: int) -> bool:
    return child.status is JobStatus.PENDING and child.attempt == attempt and not child.cancel_requested


@dataclass(frozen=True, slots=True)
class LostDecision:
    """What happens to a running child whose worker was lost."""

    status: JobStatus
    attempt: int
    error: str | None


def after_worker_lost(child: Job, why: str) -> LostDecision:
    """Re-queue with the next attempt, unless the child was being cancelled or has used all its attempts."""
    if child.cancel_requested:
        return LostDecision(JobStatus.CANCELLED, child.attempt, f"cancelled; its worker was lost ({why})")
    if child.attempt >= child.max_attempts:
        return LostDecision(
            JobStatus.FAILED,
            child.attempt,
            f"gave up after {child.attempt} of {child.max_attempts} attempts: worker lost ({why})",
        )
    return LostDecision(JobStatus.PENDING, child.attempt + 1, None)


# Which counter of the parent holds a child in each status.
COUNTER_FOR_STATUS: dict[JobStatus, str] = {
    JobStatus.PENDING: "pending",
    JobStatus.RUNNING: "running",
    JobStatus.COMPLETED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


def parent_status(current: JobStatus, progress: Progress, cancel_requested: bool) -> JobStatus:
    """The parent's status given its counters.

    PENDING until a child starts; RUNNING from then on; once every child is terminal: CANCELLED if the parent
    was cancelled, else FAILED if any child failed, else CANCELLED if any child was cancelled, else COMPLETED.
    A terminal parent stays as it is.
    """
    if current.is_terminal:
        return current
    if progress.unfinished == 0:
        if cancel_requested:
            return JobStatus.CANCELLED
        if progress.failed:
            return JobStatus.FAILED
        if progress.cancelled:
            return JobStatus.CANCELLED
        return JobStatus.COMPLETED
    if current is JobStatus.RUNNING or progress.running or progress.succeeded or progress.failed:
        return JobStatus.RUNNING
    return JobStatus.PENDING


def parent_error(status: JobStatus, failed_children: Iterable[Job], cancel_reason: str | None) -> str | None:
    """The error a finished parent carries: the failed children by target and operation, or the cancel reason."""
    if status is JobStatus.FAILED:
        names = [f"{c.target}/{c.operation} ({c.error or 'failed'})" for c in failed_children]
        return f"{len(names)} child job(s) failed: " + "; ".join(names)
    if status is JobStatus.CANCELLED:
        return cancel_reason or "cancelled"
    return None
