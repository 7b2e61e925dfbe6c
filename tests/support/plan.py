"""Running a child the way the worker does (``run_assignment``) on a real engine, in PLAN mode or not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import URL

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, OperationReport
from worker_service.cancel import CancelToken
from worker_service.engines.base import Engine, RunStatus
from worker_service.executor import Assignment, run_assignment, validate_assignment
from worker_service.targets import BoundTarget

TARGET = "target"
DEADLINE_SECONDS = 10.0


def run_child(engine: Engine, url: URL, operation: str, **config: Any) -> Any:
    """Validate and run one child of ``operation`` on ``url`` with ``config`` (e.g. ``mode="plan"``); the
    outcome's report, after checking the child COMPLETED. Its deadline is ``DEADLINE_SECONDS`` away, so a
    child that waits for a held lock FAILS instead of hanging the test."""
    assignment = Assignment(
        job_id="child-1",
        attempt=1,
        target=TARGET,
        operation=operation,
        job_type=CHILD_JOB_TYPE,
        config={"operation": operation, "target": TARGET, **config},
        deadline=datetime.now(UTC) + timedelta(seconds=DEADLINE_SECONDS),
    )
    assert validate_assignment(assignment, [TARGET]) is None
    outcome = run_assignment(assignment, BoundTarget(TARGET, url, engine), CancelToken(), RunStatus())
    assert outcome.status is JobStatus.COMPLETED, outcome.error
    assert isinstance(outcome.report, OperationReport)
    return outcome.report


def plan_of(engine: Engine, url: URL, operation: str = "vacuum", **config: Any) -> OperationReport:
    """A PLAN child's report (COMPLETED checked)."""
    report: OperationReport = run_child(engine, url, operation, mode="plan", **config)
    return report
