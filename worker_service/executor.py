"""Assignments in, outcomes out: validation and running exactly one operation per slot thread.

Plain types only. ``validate_assignment`` and ``run_assignment`` are pure functions of their arguments (plus
the engine's side effects); ``Executor`` adds the slots: a thread pool of ``slots`` threads and the cancel
token of every running child. Nothing here raises for a bad assignment or a failing engine: every path ends in
an ``Outcome`` (COMPLETED, FAILED or CANCELLED) whose error names the problem, with URLs and passwords masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from dbmaint.operations import (
    CHILD_JOB_TYPE,
    LEGACY_JOB_TYPE,
    JobStatus,
    Operation,
    OperationReport,
    RunMode,
    TableScope,
    parallel_from_config,
)
from dbmaint.thresholds import thresholds_from_config
from dbmaint.windows import window_ended
from worker_service.cancel import (
    ALARMS,
    CancelToken,
    DeadlineExceeded,
    OperationCancelled,
    deadline_passed,
    seconds_left,
)
from worker_service.engines.auto import run_auto
from worker_service.engines.base import OperationFailed, ParallelEngine, RunStatus
from worker_service.engines.plan import run_plan
from worker_service.logs import job_context, redact
from worker_service.targets import BoundTarget

log = logging.getLogger(__name__)

RunKey = tuple[str, int]
"""A child attempt: (job_id, attempt)."""

NO_FREE_SLOT = "no free slot on this worker"


@dataclass(frozen=True, slots=True)
class Assignment:
    """One child attempt to run, as the manager assigned it (plain form of ``dbmaint.v1.Assignment``).

    ``operation`` is the operation's name ("vacuum"), empty when unspecified; ``config`` is the child's JSON
    config decoded, or None when it was not a JSON object.
    """

    job_id: str
    attempt: int
    target: str
    operation: str
    job_type: str
    config: Mapping[str, Any] | None
    deadline: datetime | None = None
    parent_id: str = ""
    # The end of the child's maintenance window when its policy there is CANCEL: the executor cancels the
    # attempt then, by itself (the manager may be away), with ``dbmaint.windows.window_ended``'s reason.
    window_end: datetime | None = None

    @property
    def key(self) -> RunKey:
        return (self.job_id, self.attempt)

    @property
    def log_extra(self) -> dict[str, Any]:
        return job_context(self.job_id, self.attempt, self.target, self.parent_id)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one child attempt: what goes back to the manager as a ``Result``."""

    job_id: str
    attempt: int
    status: JobStatus
    error: str = ""
    report: OperationReport | None = None

    @property
    def key(self) -> RunKey:
        return (self.job_id, self.attempt)


def failed(assignment: Assignment, error: str, report: OperationReport | None = None) -> Outcome:
    return Outcome(assignment.job_id, assignment.attempt, JobStatus.FAILED, error, report)


def validate_assignment(assignment: Assignment, served_targets: Collection[str]) -> str | None:
    """None if the worker can run it, else a message naming the problem (the child's FAILED error)."""
    job_type = assignment.job_type
    if job_type == LEGACY_JOB_TYPE:
        return (
            f"refusing job type {job_type!r}: it is the legacy single-process job type; "
            f"this worker only runs {CHILD_JOB_TYPE!r}"
        )
    if job_type != CHILD_JOB_TYPE:
        return f"refusing job type {job_type!r}: this worker only runs {CHILD_JOB_TYPE!r}"
    if not assignment.job_id:
        return "assignment has no job_id"
    if assignment.attempt < 1:
        return f"assignment has an invalid attempt {assignment.attempt} (expected >= 1)"
    if not assignment.operation:
        return "assignment has no operation"
    if assignment.operation not in {op.value for op in Operation}:
        return (
            f"unknown operation {assignment.operation!r} "
            f"(this worker knows {', '.join(op.value for op in Operation)})"
        )
    if not assignment.target:
        return "assignment has no target"
    config = assignment.config
    if config is None:
        return "assignment config is not a JSON object"
    for key, expected in (("operation", assignment.operation), ("target", assignment.target)):
        if key in config and config[key] != expected:
            return f"assignment config {key} {config[key]!r} does not match the assignment's {key} {expected!r}"
    try:
        TableScope.from_config(config)
        RunMode.from_config(config)
        parallel_from_config(config)
        thresholds_from_config(config)
    except ValueError as exc:
        return f"assignment config is invalid: {exc}"
    if assignment.target not in served_targets:
        served = ", ".join(sorted(served_targets)) or "none"
        return f"target {assignment.target!r} is not served by this worker (it serves: {served})"
    return None


def run_assignment(
    assignment: Assignment, target: BoundTarget, cancel: CancelToken, status: RunStatus | None = None
) -> Outcome:
    """Run a validated assignment on the calling thread. Never raises: every failure is a FAILED outcome.
    ``status`` hears of a wait for the target's resource lock (waiting uses no attempt: it is not an outcome)."""
    operation = Operation(assignment.operation)
    deadline = assignment.deadline
    if cancel.cancelled:
        return Outcome(assignment.job_id, assignment.attempt, JobStatus.CANCELLED, cancel.reason)
    if deadline_passed(deadline):
        assert deadline is not None
        return failed(assignment, f"deadline exceeded before the operation started ({deadline.isoformat()})")
    started = time.monotonic()
    try:
        config = assignment.config or {}
        scope = TableScope.from_config(config)
        # The one place the mode branches: a PLAN only observes (no resource lock, no statement, no status); an
        # AUTO observes, runs where a threshold is crossed and observes again.
        mode = RunMode.from_config(config)
        parallel = parallel_from_config(config)
        if mode is RunMode.PLAN:
            report = run_plan(target.engine, target.url, cancel, deadline, scope, thresholds_from_config(config))
        elif mode is RunMode.AUTO:
            thresholds = thresholds_from_config(config)
            engine_parallel = parallel if isinstance(target.engine, ParallelEngine) else 1
            report = run_auto(
                target.engine, operation, target.url, cancel, deadline, scope, status, engine_parallel, thresholds
            )
        else:
            report = _run(target, operation, cancel, deadline, scope, status, parallel)
    except OperationCancelled as exc:
        return Outcome(assignment.job_id, assignment.attempt, JobStatus.CANCELLED, exc.reason)
    except DeadlineExceeded as exc:
        elapsed = time.monotonic() - started
        return failed(assignment, f"{operation.value} on {target.name}: {exc}, interrupted after {elapsed:.1f}s")
    except OperationFailed as exc:
        return failed(assignment, redact(str(exc), [target.url]), exc.report)
    except Exception as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", [target.url])
        log.error(
            "engine %s raised an unexpected error:\n%s",
            target.engine.name,
            redact("".join(traceback.format_exception(exc)), [target.url]),
            extra=assignment.log_extra,
        )
        return failed(assignment, f"{target.engine.name} {operation.value} on {target.name} failed: {detail}")
    return Outcome(assignment.job_id, assignment.attempt, JobStatus.COMPLETED, "", report)


def _run(
    target: BoundTarget,
    operation: Operation,
    cancel: CancelToken,
    deadline: datetime | None,
    scope: TableScope,
    status: RunStatus | None,
    parallel: int,
) -> OperationReport:
    """The engine's run, with ``parallel`` tables at once where the engine can (``ParallelEngine``); an engine
    that cannot runs serially and the report says so."""
    engine = target.engine
    if parallel > 1 and isinstance(engine, ParallelEngine):
        return engine.run_parallel(operation, target.url, cancel, deadline, scope, status, parallel)
    report = engine.run(operation, target.url, cancel, deadline, scope, status=status)
    if parallel == 1:
        return report
    note = f"parallel {parallel} asked: the {engine.name} engine runs one table at a time"
    return replace(report, notes=(note, *report.notes))


class Executor:
    """Runs at most ``slots`` assignments at once, each on its own pool thread, and can cancel them.

    Each running attempt has a ``RunStatus``: ``waiting_reasons`` says which attempts wait and why, and the
    callback given to ``watch_status`` is called (on the slot thread) whenever one starts or stops waiting.
    """

    def __init__(
        self,
        targets: Mapping[str, BoundTarget],
        slots: int,
        run: Callable[[Assignment, BoundTarget, CancelToken, RunStatus], Outcome] = run_assignment,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._targets = dict(targets)
        self._slots = slots
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="dbmaint-op")
        self._running: dict[RunKey, CancelToken] = {}
        self._status: dict[RunKey, RunStatus] = {}
        # Disarms the window-end alarm of each running attempt that has one.
        self._window_alarms: dict[RunKey, Callable[[], None]] = {}
        self._status_changed: Callable[[], object] | None = None

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def free_slots(self) -> int:
        return self._slots - len(self._running)

    @property
    def served_targets(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def running(self) -> list[RunKey]:
        """The attempts running now, oldest first."""
        return list(self._running)

    def waiting_reasons(self) -> dict[RunKey, str]:
        """The running attempts that wait (for their target's resource lock), with the reason."""
        reasons = {key: status.waiting_reason for key, status in list(self._status.items())}
        return {key: reason for key, reason in reasons.items() if reason}

    def watch_status(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (from a slot thread: it must be thread-safe) when an attempt starts or stops
        waiting."""
        self._status_changed = callback

    def _on_status(self, assignment: Assignment, reason: str) -> None:
        if reason:
            log.info("%s", reason, extra=assignment.log_extra)
        else:
            log.info("no longer waiting: %s runs", assignment.operation, extra=assignment.log_extra)
        callback = self._status_changed
        if callback is not None:
            with contextlib.suppress(RuntimeError):  # the worker's loop is closed: nobody to tell, still running
                callback()

    def is_running(self, key: RunKey) -> bool:
        return key in self._running

    def start(self, assignment: Assignment) -> asyncio.Future[Outcome]:
        """Validate and start (call on the event loop). The slot is taken before this returns.

        An invalid assignment, or one with no free slot, gets an already-resolved FAILED outcome. Starting an
        attempt that already runs is a caller bug (ValueError): a FAILED result would end the running attempt.
        """
        loop = asyncio.get_running_loop()
        if assignment.key in self._running:
            raise ValueError(f"attempt {assignment.attempt} of job {assignment.job_id} is already running")
        problem = validate_assignment(assignment, self._targets.keys())
        if problem is None and self.free_slots < 1:
            problem = NO_FREE_SLOT
        if problem is not None:
            done: asyncio.Future[Outcome] = loop.create_future()
            done.set_result(failed(assignment, problem))
            return done
        key = assignment.key
        token = CancelToken()
        status = RunStatus(assignment.target, lambda reason: self._on_status(assignment, reason))
        self._running[key] = token
        self._status[key] = status
        self._arm_window_end(assignment, token)
        target = self._targets[assignment.target]
        future = loop.run_in_executor(self._pool, self._run, assignment, target, token, status)
        future.add_done_callback(lambda _: self._finished(key))
        return future

    def _arm_window_end(self, assignment: Assignment, token: CancelToken) -> None:
        """Cancel the attempt at its window's end, on the alarm thread (one for all). An end already past
        cancels it at once: it ends CANCELLED without starting its statement."""
        end = assignment.window_end
        left = seconds_left(end)
        if end is None or left is None:
            return
        reason = window_ended(end)
        if left <= 0:
            token.cancel(reason)  # now, not on the alarm thread: the statement must not start first
            return

        def window_ends() -> None:
            token.cancel(reason)

        self._window_alarms[assignment.key] = ALARMS.schedule(left, window_ends)

    def _finished(self, key: RunKey) -> None:
        self._running.pop(key, None)
        self._status.pop(key, None)
        disarm = self._window_alarms.pop(key, None)
        if disarm is not None:
            disarm()

    def cancel(self, key: RunKey, reason: str) -> bool:
        """Cancel a running attempt; False if it is not running here (finished, or another attempt)."""
        token = self._running.get(key)
        return token is not None and token.cancel(reason)

    def cancel_all(self, reason: str) -> int:
        return sum(token.cancel(reason) for token in list(self._running.values()))

    def close(self) -> None:
        """Stop the pool (does not wait: cancel running operations first)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
