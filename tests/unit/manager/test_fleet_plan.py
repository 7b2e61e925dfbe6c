"""The fleet core with MODE_PLAN children: read-only, they take a worker slot but never hold their target, so
one starts beside a running child of the same target and none blocks the next child there; they ignore
maintenance windows."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation
from manager_service import window_rules
from manager_service.dispatch import DispatchQueue, QueuedChild, WorkerCapacity
from manager_service.domain import BatchOutcome, ChildOutcome, Job, Transition
from manager_service.fleet import FleetCore, FleetSettings
from manager_service.workers import AssignCommand, HelloInfo

NOW = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(hours=6)
PLAN = {"mode": "plan"}


class Fleet:
    """A fleet core with one worker serving target "t", and a store that starts whatever it is asked to."""

    def __init__(self, slots: int) -> None:
        self.core = FleetCore(FleetSettings())
        self.children: dict[str, Job] = {}
        self.stream = self.core.open_stream()
        self.core.connect(self.stream, HelloInfo("w", frozenset({"t"}), slots), 0.0)

    def add(self, config: dict[str, Any], window: dict[str, Any] | None = None) -> Job:
        seq = len(self.children) + 1
        child = Job(
            id=f"c{seq}",
            seq=seq,
            type=CHILD_JOB_TYPE,
            status=JobStatus.PENDING,
            config=config,
            created_at=NOW,
            parent_id=f"p{seq}",
            target="t",
            operation=Operation.VACUUM,
            attempt=1,
            window=window,
        )
        self.children[child.id] = child
        self.core.enqueue(child, 0.0)
        return child

    def turn(self) -> tuple[list[str], list[AssignCommand]]:
        """Take a turn and start what it planned: (started ids, assignments)."""
        self.core.tick_windows(NOW)
        turn = self.core.take_turn()
        if turn is None:
            return [], []
        finished = [self._settle(outcome) for outcome in turn.outcomes]
        started = [self._start(plan.child.job_id) for plan in turn.planned]
        report = self.core.turn_applied(turn, BatchOutcome(finished, started), 0.0, DEADLINE)
        commands = [s.command for s in report.sends if isinstance(s.command, AssignCommand)]
        return [t.child.id for t in started], commands

    def finish(self, job_id: str) -> None:
        self.core.receive(self.stream, [ChildOutcome(job_id, 1, "w", JobStatus.COMPLETED)])

    def _settle(self, outcome: ChildOutcome) -> Transition:
        child = self.children[outcome.job_id] = replace(self.children[outcome.job_id], status=outcome.status)
        return Transition(child, child)

    def _start(self, job_id: str) -> Transition:
        child = self.children[job_id] = replace(
            self.children[job_id], status=JobStatus.RUNNING, worker_id="w", started_at=NOW
        )
        return Transition(child, child)


def test_a_plan_child_starts_while_another_child_holds_its_target() -> None:
    fleet = Fleet(slots=2)
    vacuum = fleet.add({})
    plan = fleet.add(PLAN)
    started, _ = fleet.turn()
    assert started == [vacuum.id, plan.id]
    assert fleet.core.queue.busy_with("t") == vacuum.id


def test_a_running_plan_child_does_not_block_the_next_child_of_its_target() -> None:
    fleet = Fleet(slots=2)
    plan = fleet.add(PLAN)
    vacuum = fleet.add({})
    assert fleet.turn()[0] == [plan.id, vacuum.id]
    assert fleet.core.queue.busy_with("t") == vacuum.id


def test_a_plan_child_still_takes_a_worker_slot() -> None:
    fleet = Fleet(slots=1)
    plan = fleet.add(PLAN)
    vacuum = fleet.add({})
    assert fleet.turn()[0] == [plan.id]
    assert "free slot" in fleet.core.waiting_reason(fleet.children[vacuum.id], NOW)
    fleet.finish(plan.id)
    assert fleet.turn()[0] == [vacuum.id]


def test_the_end_of_a_plan_child_does_not_free_the_target_another_child_holds() -> None:
    fleet = Fleet(slots=3)
    vacuum = fleet.add({})
    plan = fleet.add(PLAN)
    later = fleet.add({})
    assert fleet.turn()[0] == [vacuum.id, plan.id]
    fleet.finish(plan.id)
    assert fleet.turn()[0] == []  # the VACUUM still holds "t": the younger child waits
    assert fleet.core.queue.busy_with("t") == vacuum.id
    fleet.finish(vacuum.id)
    assert fleet.turn()[0] == [later.id]


def test_a_plan_child_ignores_its_maintenance_window() -> None:
    fleet = Fleet(slots=1)
    tomorrow = window_rules.window(
        NOW + timedelta(days=1), NOW + timedelta(days=2), "", None, "", timedelta(0), {}
    )
    plan = fleet.add(PLAN, window_rules.to_dict(tomorrow))
    started, [assignment] = fleet.turn()
    assert started == [plan.id]
    assert assignment.config == PLAN
    assert assignment.window_end is None


def test_a_plan_child_queued_again_after_its_first_attempt_is_planned_once() -> None:
    queue = DispatchQueue()
    first = QueuedChild(1, "c1", 1, "t", read_only=True)
    queue.push(first)
    queue.take(first)  # started; its heap entry stays behind until it reaches the top
    queue.push(QueuedChild(1, "c1", 2, "t", read_only=True))  # its lease lapsed: the next attempt
    workers = [WorkerCapacity("w0", frozenset({"t"}), 1), WorkerCapacity("w1", frozenset({"t"}), 1)]
    (planned,) = queue.plan(workers)
    assert (planned.child.job_id, planned.child.attempt) == ("c1", 2)
    assert queue.busy_with("t") is None
