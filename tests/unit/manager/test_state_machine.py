"""Unit tests of manager_service.state_machine, checked against the rules of docs/protocol.md."""

from __future__ import annotations

import itertools

import pytest

from dbmaint.operations import JobStatus, Operation
from manager_service import state_machine as sm
from manager_service.domain import Progress
from tests.support.manager import child, parent

P, R, C, F, X = (
    JobStatus.PENDING,
    JobStatus.RUNNING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)

# The child life cycle as docs/protocol.md draws it, written out independently of the implementation.
DOCUMENTED = {
    (P, R),  # assign
    (P, X),  # cancel before it runs
    (R, C),  # result
    (R, F),  # result, or worker lost at max_attempts
    (R, X),  # result, or worker lost with a cancel request
    (R, P),  # worker lost: re-queued with attempt + 1
}
ALL_PAIRS = list(itertools.product(JobStatus, JobStatus))


def test_every_status_has_an_entry() -> None:
    assert set(sm.CHILD_TRANSITIONS) == set(JobStatus)
    assert len(ALL_PAIRS) == 25


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_transition_allowed_exactly_when_documented(current: JobStatus, target: JobStatus) -> None:
    allowed = (current, target) in DOCUMENTED
    assert sm.can_transition(current, target) is allowed
    if allowed:
        sm.check_transition(current, target)
    else:
        with pytest.raises(sm.InvalidTransition) as info:
            sm.check_transition(current, target)
        assert info.value.current is current and info.value.target is target
        assert str(current) in str(info.value) and str(target) in str(info.value)


@pytest.mark.parametrize("terminal", [C, F, X])
def test_terminal_status_has_no_way_out(terminal: JobStatus) -> None:
    assert terminal.is_terminal
    assert sm.CHILD_TRANSITIONS[terminal] == frozenset()
    assert not any(sm.can_transition(terminal, other) for other in JobStatus)


def test_result_statuses_are_the_terminal_ones() -> None:
    assert {C, F, X} == sm.RESULT_STATUSES


# -- result_applies (the fence)


def test_result_applies_to_running_attempt_of_holding_worker() -> None:
    assert sm.result_applies(child(R, attempt=2, worker_id="w1"), attempt=2, worker_id="w1")


@pytest.mark.parametrize("attempt", [1, 3, 0])
def test_result_for_stale_attempt_does_not_apply(attempt: int) -> None:
    assert not sm.result_applies(child(R, attempt=2, worker_id="w1"), attempt=attempt, worker_id="w1")


def test_result_from_other_worker_does_not_apply() -> None:
    assert not sm.result_applies(child(R, attempt=1, worker_id="w1"), attempt=1, worker_id="w2")


@pytest.mark.parametrize("status", [P, C, F, X])
def test_result_for_child_not_running_does_not_apply(status: JobStatus) -> None:
    assert not sm.result_applies(child(status, attempt=1, worker_id="w1"), attempt=1, worker_id="w1")


def test_start_applies_only_to_pending_matching_attempt_without_cancel() -> None:
    assert sm.start_applies(child(P, attempt=1), 1)
    assert not sm.start_applies(child(P, attempt=2), 1)
    assert not sm.start_applies(child(R, attempt=1), 1)
    assert not sm.start_applies(child(P, attempt=1, cancel_requested=True), 1)


# -- after_worker_lost


def test_worker_lost_requeues_with_next_attempt() -> None:
    decision = sm.after_worker_lost(child(R, attempt=1, max_attempts=3), "stream ended")
    assert decision.status is P
    assert decision.attempt == 2
    assert decision.error is None
    assert sm.can_transition(R, decision.status)


def test_worker_lost_below_max_requeues_even_on_last_but_one() -> None:
    decision = sm.after_worker_lost(child(R, attempt=2, max_attempts=3), "x")
    assert (decision.status, decision.attempt) == (P, 3)


def test_worker_lost_at_max_attempts_fails_naming_attempts() -> None:
    decision = sm.after_worker_lost(child(R, attempt=3, max_attempts=3), "no heartbeat")
    assert decision.status is F
    assert decision.attempt == 3
    assert decision.error is not None
    assert "3 of 3 attempts" in decision.error
    assert "no heartbeat" in decision.error


def test_worker_lost_with_cancel_request_cancels() -> None:
    for attempt in (1, 3):  # the cancel request wins over re-queue and over give-up
        decision = sm.after_worker_lost(child(R, attempt=attempt, max_attempts=3, cancel_requested=True), "gone")
        assert decision.status is X
        assert decision.attempt == attempt
        assert decision.error is not None and "cancel" in decision.error and "gone" in decision.error


# -- parent_status


def progress(pending: int = 0, running: int = 0, succeeded: int = 0, failed: int = 0, cancelled: int = 0):
    total = pending + running + succeeded + failed + cancelled
    return Progress(total, pending, running, succeeded, failed, cancelled)


@pytest.mark.parametrize(
    ("current", "counters", "cancel_requested", "expected"),
    [
        pytest.param(P, progress(pending=3), False, P, id="pending-only"),
        pytest.param(P, progress(pending=2, running=1), False, R, id="one-running"),
        pytest.param(P, progress(pending=1, succeeded=2), False, R, id="some-succeeded-some-pending"),
        pytest.param(P, progress(pending=1, failed=1), False, R, id="some-failed-some-pending"),
        pytest.param(R, progress(pending=3), False, R, id="running-stays-after-requeue"),
        pytest.param(R, progress(running=1, succeeded=2), False, R, id="running-with-one-left"),
        pytest.param(R, progress(succeeded=3), False, C, id="all-succeeded"),
        pytest.param(R, progress(succeeded=2, failed=1), False, F, id="one-failed"),
        pytest.param(R, progress(failed=1, cancelled=2), False, F, id="failed-beats-cancelled"),
        pytest.param(R, progress(succeeded=2, cancelled=1), False, X, id="cancelled-child"),
        pytest.param(P, progress(cancelled=3), False, X, id="all-cancelled-before-start"),
        pytest.param(R, progress(succeeded=3), True, X, id="cancel-requested-wins-over-completed"),
        pytest.param(R, progress(failed=3), True, X, id="cancel-requested-wins-over-failed"),
        pytest.param(R, progress(running=1, cancelled=2), True, R, id="cancel-requested-waits-for-running"),
        pytest.param(P, progress(pending=1), True, P, id="cancel-requested-waits-for-pending"),
    ],
)
def test_parent_status(current, counters, cancel_requested, expected) -> None:
    assert sm.parent_status(current, counters, cancel_requested) is expected


@pytest.mark.parametrize("terminal", [C, F, X])
@pytest.mark.parametrize(
    "counters",
    [progress(pending=2), progress(running=1), progress(succeeded=2), progress(failed=1), progress(cancelled=1)],
    ids=["pending", "running", "succeeded", "failed", "cancelled"],
)
@pytest.mark.parametrize("cancel_requested", [False, True])
def test_terminal_parent_never_changes(terminal, counters, cancel_requested) -> None:
    assert sm.parent_status(terminal, counters, cancel_requested) is terminal


# -- parent_error


def test_parent_error_names_failed_children() -> None:
    failed = [
        child(F, target="orders", operation=Operation.VACUUM, error="disk full", job_id="c1"),
        child(F, target="users", operation=Operation.REINDEX, error=None, job_id="c2"),
    ]
    error = sm.parent_error(F, failed, cancel_reason=None)
    assert error is not None
    assert error.startswith("2 child job(s) failed")
    assert "orders/vacuum (disk full)" in error
    assert "users/reindex (failed)" in error


def test_parent_error_for_cancelled_is_the_reason() -> None:
    assert sm.parent_error(X, [], "operator asked") == "operator asked"
    assert sm.parent_error(X, [], None) == "cancelled"


def test_parent_error_for_completed_is_none() -> None:
    assert sm.parent_error(C, [], "ignored") is None


def test_counter_for_every_status() -> None:
    assert set(sm.COUNTER_FOR_STATUS) == set(JobStatus)
    fields = set(Progress.__dataclass_fields__) - {"total"}
    assert set(sm.COUNTER_FOR_STATUS.values()) == fields


def test_parent_helper_is_a_parent() -> None:
    assert parent().is_parent and not child().is_parent
