"""The fleet core with maintenance windows: a child waits outside the dispatch queue until its window lets it
start, never holding its target meanwhile; a one-off window that closed lists its never-started children for
cancelling; a recurring one keeps them for its next opening; a CANCEL policy puts the opening's end on the
assignment and the lease."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation
from manager_service import window_rules
from manager_service.domain import BatchOutcome, ChildOutcome, Job, Transition
from manager_service.fleet import FleetCore, FleetSettings, WindowedParent
from manager_service.workers import AssignCommand, HelloInfo

NOW = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
OPENS = NOW + timedelta(hours=1)
CLOSES = NOW + timedelta(hours=3)
DEADLINE = NOW + timedelta(hours=6)


def one_off(start: datetime = OPENS, end: datetime = CLOSES, cutoff: timedelta = timedelta(0)) -> dict[str, Any]:
    return window_rules.to_dict(window_rules.window(start, end, "", None, "", cutoff, {}))


def daily_at_two() -> dict[str, Any]:
    daily = window_rules.window(None, None, "0 2 * * *", timedelta(hours=1), "", timedelta(0), {})
    return window_rules.to_dict(daily)


class Fleet:
    """A fleet core with one worker serving target "t", and a store that starts whatever it is asked to."""

    def __init__(self, slots: int = 2) -> None:
        self.core = FleetCore(FleetSettings())
        self.children: dict[str, Job] = {}
        self.stream = self.core.open_stream()
        self.core.connect(self.stream, HelloInfo("w", frozenset({"t"}), slots), 0.0)

    def add(self, parent_id: str, window: dict[str, Any] | None, operation: Operation = Operation.VACUUM) -> Job:
        seq = len(self.children) + 1
        child = Job(
            id=f"c{seq}",
            seq=seq,
            type=CHILD_JOB_TYPE,
            status=JobStatus.PENDING,
            config={},
            created_at=NOW,
            parent_id=parent_id,
            target="t",
            operation=operation,
            attempt=1,
            window=window,
        )
        self.children[child.id] = child
        self.core.enqueue(child, 0.0)
        return child

    def turn(self, now: datetime) -> tuple[list[str], list[AssignCommand]]:
        """Tick the windows at ``now``, take a turn and start what it planned: (started ids, assignments)."""
        self.core.tick_windows(now)
        turn = self.core.take_turn()
        if turn is None:
            return [], []
        finished = [self._settle(outcome) for outcome in turn.outcomes]
        started = [self._start(plan.child.job_id, now) for plan in turn.planned]
        report = self.core.turn_applied(turn, BatchOutcome(finished, started), 0.0, DEADLINE)
        commands = [s.command for s in report.sends if isinstance(s.command, AssignCommand)]
        return [t.child.id for t in started], commands

    def finish(self, job_id: str) -> None:
        """The worker reports ``job_id`` completed (applied on the next turn)."""
        self.core.receive(self.stream, [ChildOutcome(job_id, 1, "w", JobStatus.COMPLETED)])

    def _settle(self, outcome: ChildOutcome) -> Transition:
        child = self.children[outcome.job_id] = replace(self.children[outcome.job_id], status=outcome.status)
        return Transition(child, child)

    def _start(self, job_id: str, now: datetime) -> Transition:
        child = self.children[job_id] = replace(
            self.children[job_id], status=JobStatus.RUNNING, worker_id="w", started_at=now
        )
        return Transition(child, child)

    def cancel(self, job_id: str) -> None:
        child = self.children[job_id] = replace(self.children[job_id], status=JobStatus.CANCELLED)
        self.core.cancel_stored([child], [], "cancelled")


def test_a_child_outside_its_window_neither_starts_nor_holds_its_target() -> None:
    fleet = Fleet(slots=1)
    waiting = fleet.add("p1", one_off())
    other = fleet.add("p2", None)  # younger, another parent, same target, no window
    started, _ = fleet.turn(NOW)
    assert started == [other.id]
    reason = fleet.core.waiting_reason(fleet.children[waiting.id], NOW)
    assert "maintenance window" in reason and "opens" in reason
    assert fleet.core.queue.busy_with("t") == other.id


def test_the_waiting_child_starts_at_its_opening_with_the_window_end_on_its_assignment() -> None:
    fleet = Fleet()
    child = fleet.add("p1", one_off())
    assert fleet.turn(OPENS - timedelta(seconds=1)) == ([], [])
    assert fleet.core.window_wakeup(OPENS - timedelta(seconds=1)) == OPENS
    started, [assignment] = fleet.turn(OPENS)
    assert started == [child.id]
    assert assignment.window_end == CLOSES  # vacuum: CANCEL at the end by default
    assert fleet.core.leases[child.id].window_end == CLOSES
    assert fleet.core.waiting_reason(fleet.children[child.id], OPENS) == ""


def test_a_reindex_started_in_its_window_is_let_finish() -> None:
    fleet = Fleet()
    fleet.add("p1", one_off(), Operation.REINDEX)
    _, [assignment] = fleet.turn(OPENS)
    assert assignment.window_end is None
    assert fleet.core.take_window_ends(CLOSES + timedelta(hours=1)) == []


def test_per_target_order_holds_among_the_children_that_may_start() -> None:
    fleet = Fleet(slots=1)
    first = fleet.add("p1", one_off())
    second = fleet.add("p2", None)
    third = fleet.add("p2", None)
    assert fleet.turn(NOW)[0] == [second.id]
    fleet.finish(second.id)
    # At the opening the windowed child is older than the third: it goes first.
    assert fleet.turn(OPENS)[0] == [first.id]
    assert third.id in fleet.core.queue


def test_the_end_of_a_running_childs_window_is_handed_over_once() -> None:
    fleet = Fleet()
    child = fleet.add("p1", one_off())
    fleet.turn(OPENS)
    assert fleet.core.window_wakeup(OPENS + timedelta(minutes=1)) == CLOSES
    assert fleet.core.take_window_ends(CLOSES - timedelta(seconds=1)) == []
    assert fleet.core.take_window_ends(CLOSES) == [(child.id, CLOSES)]
    assert fleet.core.take_window_ends(CLOSES) == []


def test_a_closed_one_off_window_lists_its_never_started_children_for_cancelling() -> None:
    fleet = Fleet(slots=1)
    late = fleet.add("p1", one_off(cutoff=timedelta(minutes=30)))
    other = fleet.add("p2", None)
    fleet.turn(NOW)  # the slot is taken by the other parent's child until the cutoff
    fleet.finish(other.id)
    before_cutoff = CLOSES - timedelta(minutes=31)
    assert fleet.core.closed_windows(before_cutoff) == []
    assert fleet.core.closed_windows(CLOSES - timedelta(minutes=30)) == [late.id]
    assert fleet.turn(CLOSES)[0] == []  # no start after the cutoff, even with a free slot
    fleet.cancel(late.id)
    assert fleet.core.closed_windows(CLOSES) == []
    assert fleet.core.window_wakeup(CLOSES) is None


def test_a_recurring_window_keeps_its_children_for_the_next_opening() -> None:
    fleet = Fleet()
    child = fleet.add("p1", daily_at_two())
    after_the_opening = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)
    next_opening = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    assert fleet.turn(after_the_opening) == ([], [])
    assert fleet.core.closed_windows(after_the_opening) == []
    assert fleet.core.window_wakeup(after_the_opening) == next_opening
    started, [assignment] = fleet.turn(next_opening)
    assert started == [child.id]
    assert assignment.window_end == next_opening + timedelta(hours=1)


def test_a_queued_child_whose_window_stops_allowing_starts_leaves_the_queue() -> None:
    fleet = Fleet(slots=1)
    fleet.add("p2", None)
    windowed = fleet.add("p1", one_off(cutoff=timedelta(minutes=30)))
    fleet.turn(OPENS)  # the slot goes to the older child; the windowed one is queued behind it
    assert windowed.id in fleet.core.queue
    fleet.core.tick_windows(CLOSES - timedelta(minutes=30))
    assert windowed.id not in fleet.core.queue
    assert fleet.core.closed_windows(CLOSES - timedelta(minutes=30)) == [windowed.id]


def test_a_windowed_parent_asks_its_window_again_only_when_the_answer_may_have_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[datetime] = []
    real = window_rules.may_start

    def counting(window: window_rules.Window, now: datetime) -> bool:
        asked.append(now)
        return real(window, now)

    monkeypatch.setattr(window_rules, "may_start", counting)
    parent = WindowedParent(window_rules.from_dict(one_off()))
    assert [parent.may_start(NOW + timedelta(minutes=m)) for m in (0, 10, 59)] == [False] * 3
    assert parent.may_start(OPENS) and parent.may_start(OPENS + timedelta(hours=1))
    assert not parent.may_start(NOW)  # the clock went back: asked again
    assert asked == [NOW, OPENS, NOW]
    assert parent.next_change(NOW) == OPENS


def test_the_shell_hears_when_a_window_instant_joins_however_the_child_came() -> None:
    fleet = Fleet()
    other = fleet.add("p0", None)
    fleet.turn(NOW)
    assert not fleet.core.window_instants_moved()
    fleet.finish(other.id)
    fleet.add("p1", one_off())
    assert fleet.core.window_instants_moved()
    assert not fleet.core.window_instants_moved()  # told once
    fleet.add("p1", one_off())  # same parent, same window: nothing new to wake up for
    assert not fleet.core.window_instants_moved()
    assert fleet.turn(OPENS)[1][0].window_end == CLOSES  # a vacuum starts with a window end
    assert fleet.core.window_instants_moved()
