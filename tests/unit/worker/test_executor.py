from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import URL, make_url

from dbmaint.operations import (
    CHILD_JOB_TYPE,
    LEGACY_JOB_TYPE,
    PARENT_JOB_TYPE,
    JobStatus,
    Operation,
    OperationReport,
    TableAction,
    TableScope,
)
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.fake_manager_for_workers import assignment as pb_assignment
from tests.support.polling import eventually
from worker_service.cancel import CancelToken, OperationCancelled
from worker_service.engines.base import Observed, OperationFailed, RunStatus
from worker_service.engines.observe import TableObservation
from worker_service.executor import NO_FREE_SLOT, Assignment, Executor, run_assignment, validate_assignment
from worker_service.stream import assignment_from_proto, decode_config
from worker_service.targets import BoundTarget

SECRET_URL = "postgresql://admin:Sup3rSecret@db.internal:5432/app"


def make(**overrides: Any) -> Assignment:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "attempt": 1,
        "target": "orders",
        "operation": "vacuum",
        "job_type": CHILD_JOB_TYPE,
        "config": {"operation": "vacuum", "target": "orders"},
        "deadline": None,
        "parent_id": "parent-1",
    }
    fields.update(overrides)
    return Assignment(**fields)


SERVED = ("orders", "users")


def test_a_valid_assignment_passes() -> None:
    assert validate_assignment(make(), SERVED) is None
    assert validate_assignment(make(config={}), SERVED) is None  # missing keys are not a disagreement


def test_the_legacy_type_is_refused_by_name() -> None:
    problem = validate_assignment(make(job_type=LEGACY_JOB_TYPE), SERVED)
    assert problem is not None
    assert "'database_maintenance'" in problem and "legacy" in problem and CHILD_JOB_TYPE in problem


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"job_type": PARENT_JOB_TYPE}, "refusing job type 'database_maintenance_parent'"),
        ({"job_type": ""}, "refusing job type ''"),
        ({"job_type": "something_else"}, "refusing job type 'something_else'"),
        ({"job_id": ""}, "no job_id"),
        ({"attempt": 0}, "invalid attempt 0"),
        ({"operation": ""}, "assignment has no operation"),
        ({"operation": "#9"}, "unknown operation '#9'"),
        ({"operation": "defrag"}, "unknown operation 'defrag'"),
        ({"target": ""}, "assignment has no target"),
        ({"config": None}, "config is not a JSON object"),
        ({"config": {"operation": "analyze", "target": "orders"}}, "config operation 'analyze' does not match"),
        ({"config": {"operation": "vacuum", "target": "users"}}, "config target 'users' does not match"),
        (
            {"target": "billing", "config": {"target": "billing"}},
            "target 'billing' is not served by this worker (it serves: orders, users)",
        ),
    ],
)
def test_each_failure_names_the_problem(overrides: dict[str, Any], expected: str) -> None:
    problem = validate_assignment(make(**overrides), SERVED)
    assert problem is not None and expected in problem


def test_assignment_from_proto() -> None:
    deadline = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    plain = assignment_from_proto(pb_assignment("j", "orders", "analyze", attempt=3, deadline=deadline))
    assert plain == make(
        job_id="j", attempt=3, operation="analyze", config={"operation": "analyze", "target": "orders"},
        deadline=deadline,
    )  # fmt: skip
    unknown = pb.Assignment(job_id="j", attempt=1, operation=9, job_type=CHILD_JOB_TYPE, config="[1]")  # type: ignore[arg-type]
    plain = assignment_from_proto(unknown)
    assert (plain.operation, plain.config, plain.deadline) == ("#9", None, None)
    assert assignment_from_proto(pb.Assignment(job_id="j")).operation == ""


def test_decode_config() -> None:
    assert decode_config("") == {}
    assert decode_config('{"a": 1}') == {"a": 1}
    assert decode_config("{not json") is None
    assert decode_config('"a string"') is None


class FakeEngine:
    name = "fake"
    dialect = "postgresql"

    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour
        self.started = threading.Event()
        self.release = threading.Event()
        self.scopes: list[TableScope] = []
        self.plans: list[TableScope] = []
        # What observe answers: first call, then every later one.
        self.observations: list[list[TableObservation]] = [[]]

    def check_url(self, url: URL) -> None:
        pass

    def run(
        self,
        operation: Operation,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope = TableScope(),  # noqa: B008 - immutable
        status: RunStatus | None = None,
    ) -> OperationReport:
        self.started.set()
        self.scopes.append(scope)
        return self.behaviour(operation, url, cancel, deadline, self)  # type: ignore[no-any-return]

    def observe(
        self,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> Observed:
        self.plans.append(scope)
        answer = self.observations[min(len(self.plans), len(self.observations)) - 1]
        return Observed(answer, 1000 * len(self.plans))


def target_with(behaviour: Any) -> BoundTarget:
    return BoundTarget(name="orders", url=make_url(SECRET_URL), engine=FakeEngine(behaviour))


def test_an_engine_exception_is_a_failure_with_the_url_masked() -> None:
    def explode(*_: Any) -> OperationReport:
        raise ConnectionError(f"could not connect to {SECRET_URL} (password Sup3rSecret rejected)")

    outcome = run_assignment(make(), target_with(explode), CancelToken())
    assert outcome.status is JobStatus.FAILED
    assert "fake vacuum on orders failed: ConnectionError" in outcome.error
    assert "Sup3rSecret" not in outcome.error
    assert "postgresql://admin:***@db.internal:5432/app" in outcome.error


def test_the_scope_in_the_config_reaches_the_engine() -> None:
    target = target_with(lambda *_: OperationReport(engine="fake"))
    config = {"operation": "vacuum", "target": "orders", "schemas": ["sales"], "tables": ["sales.orders"]}
    outcome = run_assignment(make(config=config), target, CancelToken())
    assert outcome.status is JobStatus.COMPLETED
    assert isinstance(target.engine, FakeEngine)
    assert target.engine.scopes == [TableScope(schemas=("sales",), tables=("sales.orders",))]


def test_a_plan_assignment_asks_the_engine_for_a_plan_and_runs_nothing() -> None:
    target = target_with(lambda *_: pytest.fail("a plan must not run the operation"))
    config = {"operation": "vacuum", "target": "orders", "mode": "plan", "tables": ["sales.orders"]}
    outcome = run_assignment(make(config=config), target, CancelToken())
    assert outcome.status is JobStatus.COMPLETED
    assert outcome.report is not None and outcome.report.notes == ("plan: 0 table(s) observed, nothing changed",)
    assert outcome.report.bytes_before == 1000
    assert isinstance(target.engine, FakeEngine)
    assert (target.engine.plans, target.engine.scopes) == ([TableScope(tables=("sales.orders",))], [])


def test_an_assignment_whose_mode_is_all_runs_the_operation() -> None:
    target = target_with(lambda *_: OperationReport(engine="fake", objects_processed=1))
    outcome = run_assignment(make(config={"mode": "all"}), target, CancelToken())
    assert outcome.report is not None and outcome.report.objects_processed == 1
    assert isinstance(target.engine, FakeEngine) and target.engine.plans == []


def dead(table: str, dead_tuples: float, action: TableAction = TableAction.VACUUM) -> TableObservation:
    reasons = ("dead_tuples",) if action is TableAction.VACUUM else ("below_threshold",)
    return TableObservation("main", table, action, reasons, {"dead_tuples": dead_tuples})


def test_an_auto_assignment_runs_the_operation_on_the_tables_over_their_thresholds_only() -> None:
    target = target_with(lambda *_: OperationReport(engine="fake", objects_processed=1, notes=("ran",)))
    assert isinstance(target.engine, FakeEngine)
    target.engine.observations = [
        [dead("bloated", 5000), dead("clean", 3, TableAction.SKIP)],
        [dead("bloated", 0, TableAction.SKIP)],
    ]
    config = {"operation": "vacuum", "target": "orders", "mode": "auto", "thresholds": {"vacuum_threshold": 10}}
    outcome = run_assignment(make(config=config), target, CancelToken())
    assert outcome.status is JobStatus.COMPLETED and outcome.report is not None
    assert target.engine.scopes == [TableScope(tables=("main.bloated",))]
    assert target.engine.plans == [TableScope(), TableScope(tables=("main.bloated",))]
    bloated, clean = outcome.report.tables
    assert (bloated.table, bloated.action, bloated.before, bloated.after) == (
        "bloated",
        TableAction.VACUUM,
        {"dead_tuples": 5000},
        {"dead_tuples": 0},
    )
    assert (clean.table, clean.action, clean.reasons) == ("clean", TableAction.SKIP, ("below_threshold",))
    assert outcome.report.notes[:2] == (
        "auto: 2 table(s) observed, 1 acted on, 1 skipped",
        "auto: vacuum main.bloated (dead_tuples)",
    )
    assert (outcome.report.bytes_before, outcome.report.bytes_after) == (1000, 2000)


def test_an_auto_assignment_with_nothing_over_a_threshold_runs_no_statement() -> None:
    target = target_with(lambda *_: pytest.fail("nothing to act on: no statement"))
    assert isinstance(target.engine, FakeEngine)
    target.engine.observations = [[dead("clean", 3, TableAction.SKIP)]]
    outcome = run_assignment(make(config={"operation": "vacuum", "mode": "auto"}), target, CancelToken())
    assert outcome.status is JobStatus.COMPLETED and outcome.report is not None
    assert "auto: nothing over the thresholds: no statement run" in outcome.report.notes
    assert target.engine.plans == [TableScope()]


@pytest.mark.parametrize("mode", ["PLAN", "Auto", 1])
def test_a_mode_this_worker_does_not_run_is_refused(mode: object) -> None:
    problem = validate_assignment(make(config={"operation": "vacuum", "mode": mode}), SERVED)
    assert problem is not None and "assignment config is invalid: config 'mode'" in problem


@pytest.mark.parametrize("bad", [{"tables": "orders"}, {"schemas": [1]}, {"tables": [""]}])
def test_a_malformed_scope_is_refused(bad: dict[str, Any]) -> None:
    problem = validate_assignment(make(config={"operation": "vacuum", **bad}), SERVED)
    assert problem is not None and "must be a list of non-empty strings" in problem


def test_an_engine_that_runs_one_table_at_a_time_runs_a_parallel_child_serially_and_says_so() -> None:
    target = target_with(lambda *_: OperationReport(engine="fake", notes=("table t: VACUUM",)))
    outcome = run_assignment(make(config={"parallel": 4}), target, CancelToken())
    assert outcome.status is JobStatus.COMPLETED and outcome.report is not None
    serial = "parallel 4 asked: the fake engine runs one table at a time"
    assert outcome.report.notes == (serial, "table t: VACUUM")


@pytest.mark.parametrize("parallel", [0, 9, "4", True])
def test_a_parallel_outside_one_to_eight_is_refused(parallel: object) -> None:
    problem = validate_assignment(make(config={"operation": "vacuum", "parallel": parallel}), SERVED)
    assert problem is not None and "config 'parallel'" in problem and "from 1 to 8" in problem


def test_operation_failed_keeps_its_message_and_report() -> None:
    report = OperationReport(engine="fake", bytes_before=10)

    def fail(*_: Any) -> OperationReport:
        raise OperationFailed("table locked", report)

    outcome = run_assignment(make(), target_with(fail), CancelToken())
    assert (outcome.status, outcome.error, outcome.report) == (JobStatus.FAILED, "table locked", report)


def test_cancelled_and_deadline_outcomes() -> None:
    def cancelled(*_: Any) -> OperationReport:
        raise OperationCancelled("user asked")

    outcome = run_assignment(make(), target_with(cancelled), CancelToken())
    assert (outcome.status, outcome.error) == (JobStatus.CANCELLED, "user asked")

    token = CancelToken()
    token.cancel("before start")
    outcome = run_assignment(make(), target_with(cancelled), token)
    assert (outcome.status, outcome.error) == (JobStatus.CANCELLED, "before start")

    past = datetime.now(UTC) - timedelta(seconds=1)
    outcome = run_assignment(make(deadline=past), target_with(cancelled), CancelToken())
    assert outcome.status is JobStatus.FAILED and "deadline exceeded before the operation started" in outcome.error


async def test_executor_slots_cancel_and_no_free_slot() -> None:
    def block(op: Operation, url: URL, cancel: CancelToken, deadline: Any, engine: FakeEngine) -> OperationReport:
        cancel.wait(5)
        raise OperationCancelled(cancel.reason)

    target = target_with(block)

    executor = Executor({"orders": target}, slots=1)
    try:
        first = executor.start(make())
        assert executor.running() == [("job-1", 1)] and executor.free_slots == 0
        second = executor.start(make(job_id="job-2"))
        assert second.done() and second.result().status is JobStatus.FAILED
        assert second.result().error == NO_FREE_SLOT
        refused = executor.start(make(job_id="job-3", job_type=LEGACY_JOB_TYPE))
        assert refused.done() and "legacy" in refused.result().error
        with pytest.raises(ValueError):
            executor.start(make())
        assert executor.cancel(("job-1", 2), "wrong attempt") is False
        assert executor.cancel(("job-1", 1), "stop it") is True
        outcome = await asyncio.wait_for(first, 5)
        assert (outcome.status, outcome.error) == (JobStatus.CANCELLED, "stop it")
        # The done callback that frees the slot runs on a later loop iteration: wait for it, bounded.
        await eventually(lambda: executor.free_slots == 1, timeout=2, message="the slot was never freed")
        assert executor.running() == []
    finally:
        executor.close()


def test_deadlines_out_of_datetime_range_do_not_break_the_conversion() -> None:
    far_future = pb.Assignment(job_id="j", attempt=1)
    far_future.deadline.seconds = 10**12
    assert assignment_from_proto(far_future).deadline is None
    far_past = pb.Assignment(job_id="j", attempt=1)
    far_past.deadline.seconds = -(10**12)
    deadline = assignment_from_proto(far_past).deadline
    assert deadline is not None and deadline.year == 1


def test_the_window_end_of_an_assignment_survives_the_conversion() -> None:
    end = datetime(2030, 1, 2, 4, 0, tzinfo=UTC)
    message = pb_assignment("j", "orders", "vacuum")
    assert assignment_from_proto(message).window_end is None
    message.window_end.FromDatetime(end)
    assert assignment_from_proto(message).window_end == end


async def test_an_assignment_whose_window_already_ended_is_cancelled_without_running() -> None:
    ran: list[Operation] = []

    def record(op: Operation, url: URL, cancel: CancelToken, deadline: Any, engine: FakeEngine) -> OperationReport:
        ran.append(op)
        return OperationReport(engine="fake")

    executor = Executor({"orders": target_with(record)}, slots=1)
    try:
        ended = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
        outcome = await asyncio.wait_for(executor.start(make(window_end=ended)), 5)
        assert (outcome.status, outcome.error) == (
            JobStatus.CANCELLED,
            "maintenance window ended at 2026-12-01T03:00:00Z",
        )
        assert ran == []
    finally:
        executor.close()
