"""The scheduler's pure step planner, with an injected clock: on time, catch-up after downtime, paused, each
overlap policy, the end of the range, and a trigger by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from dbmaint.operations import Operation
from manager_service.domain import FiringOutcome, FiringRecord, MaintenanceSpec, Schedule, ScheduleSpec
from manager_service.schedule_rules import jitter_for
from manager_service.scheduling import needs_step, next_fire_time, plan_step, trigger_step, wake_at

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAINTENANCE = MaintenanceSpec(targets=("db1",), operations=(Operation.VACUUM,))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def every_minute(
    *, overlap: str = "skip", paused: bool = False, last_slot: float | None = None, **spec: object
) -> Schedule:
    """A schedule firing every 60 s from T0, version 4, whose previous parent is p1."""
    schedule_spec = replace(ScheduleSpec(id="nightly", maintenance=MAINTENANCE, every_seconds=60.0), **spec)
    return Schedule(
        key="k1",
        spec=replace(schedule_spec, overlap=overlap),
        paused=paused,
        created_at=T0,
        updated_at=T0,
        version=4,
        last_slot=at(last_slot) if last_slot is not None else None,
        last_parent_id="p1",
    )


def rows(step: object) -> list[tuple[datetime, FiringOutcome, str | None, int]]:
    assert step is not None
    records: tuple[FiringRecord, ...] = step.plan.records  # type: ignore[attr-defined]
    return [(r.scheduled_time, r.outcome, r.reason, r.missed_count) for r in records]


def test_a_due_slot_fires_once_on_time_with_the_schedules_maintenance() -> None:
    step = plan_step(every_minute(), at(60), previous_running=False)
    assert step is not None
    assert rows(step) == [(at(60), FiringOutcome.FIRED, None, 1)]
    assert step.plan.fire == MAINTENANCE
    assert (step.plan.schedule_key, step.plan.version, step.plan.last_slot) == ("k1", 4, at(60))
    assert step.cancel_parent is None and step.due_at == at(60)


def test_nothing_is_planned_before_the_next_slot() -> None:
    assert plan_step(every_minute(), at(59), previous_running=False) is None
    assert plan_step(every_minute(last_slot=60), at(119), previous_running=False) is None


def test_after_downtime_the_latest_slot_fires_once_and_the_older_ones_are_one_missed_row() -> None:
    step = plan_step(every_minute(last_slot=60), at(310), previous_running=False)
    assert rows(step) == [
        (at(120), FiringOutcome.MISSED, "manager was down", 3),
        (at(300), FiringOutcome.FIRED, None, 1),
    ]
    assert step is not None and step.plan.last_slot == at(300) and step.plan.fire == MAINTENANCE


def test_a_latest_slot_older_than_the_catchup_window_is_missed_too_and_nothing_fires() -> None:
    step = plan_step(every_minute(last_slot=60, catchup_seconds=30.0), at(340), previous_running=False)
    assert rows(step) == [(at(120), FiringOutcome.MISSED, "manager was down", 4)]
    assert step is not None and step.plan.fire is None and step.plan.last_slot == at(300)


def test_a_paused_schedule_records_its_slots_as_skipped_and_fires_nothing() -> None:
    step = plan_step(every_minute(paused=True), at(60), previous_running=False)
    assert rows(step) == [(at(60), FiringOutcome.SKIPPED_PAUSED, "schedule paused", 1)]
    assert step is not None and step.plan.fire is None and step.plan.last_slot == at(60)


def test_a_paused_schedule_records_a_gap_of_slots_as_one_row_with_its_count() -> None:
    step = plan_step(every_minute(paused=True, last_slot=60), at(310), previous_running=False)
    assert rows(step) == [
        (at(120), FiringOutcome.SKIPPED_PAUSED, "schedule paused", 3),
        (at(300), FiringOutcome.SKIPPED_PAUSED, "schedule paused", 1),
    ]
    assert step is not None and step.plan.fire is None


def test_skip_records_skipped_overlap_naming_the_running_parent() -> None:
    step = plan_step(every_minute(overlap="skip"), at(60), previous_running=True)
    assert rows(step) == [(at(60), FiringOutcome.SKIPPED_OVERLAP, "parent p1 still running", 1)]
    assert step is not None and step.plan.fire is None and step.plan.last_slot == at(60)


def test_buffer_one_keeps_the_slot_without_a_row_while_the_previous_parent_runs() -> None:
    step = plan_step(every_minute(overlap="buffer_one"), at(60), previous_running=True)
    assert step is not None and step.plan.records == () and step.plan.fire is None
    assert (step.plan.buffered_slot, step.plan.last_slot) == (at(60), at(60))


def test_buffer_one_fires_the_buffered_slot_once_the_previous_parent_finished() -> None:
    buffered = replace(every_minute(overlap="buffer_one", last_slot=60), buffered_slot=at(60))
    assert plan_step(buffered, at(70), previous_running=True) is None
    step = plan_step(buffered, at(70), previous_running=False)
    assert rows(step) == [(at(60), FiringOutcome.FIRED, "buffered behind parent p1", 1)]
    assert step is not None and step.plan.fire == MAINTENANCE and step.plan.buffered_slot is None


def test_buffer_one_skips_a_further_slot_while_one_is_buffered() -> None:
    buffered = replace(every_minute(overlap="buffer_one", last_slot=60), buffered_slot=at(60))
    step = plan_step(buffered, at(120), previous_running=True)
    assert rows(step) == [(at(120), FiringOutcome.SKIPPED_OVERLAP, "parent p1 still running", 1)]
    assert step is not None and step.plan.buffered_slot == at(60)


def test_a_buffered_slot_of_a_schedule_paused_meanwhile_is_recorded_skipped_paused() -> None:
    buffered = replace(every_minute(overlap="buffer_one", paused=True, last_slot=60), buffered_slot=at(60))
    step = plan_step(buffered, at(70), previous_running=False)
    assert rows(step) == [(at(60), FiringOutcome.SKIPPED_PAUSED, "schedule paused", 1)]
    assert step is not None and step.plan.fire is None and step.plan.buffered_slot is None


def test_needs_step_only_when_a_slot_is_due_or_one_is_buffered() -> None:
    assert not needs_step(every_minute(last_slot=60), at(119))
    assert needs_step(every_minute(last_slot=60), at(120))
    assert needs_step(replace(every_minute(last_slot=60), buffered_slot=at(60)), at(61))


def test_cancel_other_cancels_the_running_parent_then_fires() -> None:
    step = plan_step(every_minute(overlap="cancel_other"), at(60), previous_running=True)
    assert rows(step) == [(at(60), FiringOutcome.FIRED, None, 1)]
    assert step is not None and step.cancel_parent == "p1" and step.plan.fire == MAINTENANCE


def test_the_first_slot_after_end_at_is_recorded_outside_range_once_then_the_schedule_is_done() -> None:
    ending = every_minute(last_slot=120, end_at=at(150))
    assert plan_step(ending, at(179), previous_running=False) is None
    step = plan_step(ending, at(181), previous_running=False)
    assert rows(step) == [(at(180), FiringOutcome.OUTSIDE_RANGE, "after end_at", 1)]
    done = replace(ending, last_slot=at(180))
    assert plan_step(done, at(10_000), previous_running=False) is None
    assert wake_at(done, at(10_000)) is None and next_fire_time(done, at(181)) is None


def test_no_slot_fires_before_start_at() -> None:
    later = every_minute(start_at=at(600))
    assert plan_step(later, at(599), previous_running=False) is None
    assert next_fire_time(later, at(0)) == at(660)


def test_next_fire_time_is_the_next_slot_after_now_and_unset_while_paused() -> None:
    assert next_fire_time(every_minute(last_slot=60), at(61)) == at(120)
    assert next_fire_time(every_minute(paused=True), at(61)) is None


def test_a_trigger_fires_now_to_the_second_even_while_paused_and_leaves_last_slot() -> None:
    step = trigger_step(every_minute(paused=True, last_slot=60), at(75.9), previous_running=True)
    assert rows(step) == [(at(75), FiringOutcome.FIRED, "triggered by hand", 1)]
    assert step.plan.fire == MAINTENANCE and step.plan.last_slot is None and step.cancel_parent is None


def test_a_trigger_on_the_second_of_an_unrecorded_slot_takes_that_slot() -> None:
    step = trigger_step(every_minute(last_slot=60), at(120.4), previous_running=False)
    assert rows(step) == [(at(120), FiringOutcome.FIRED, "triggered by hand", 1)]
    assert step.plan.last_slot == at(120)
    assert plan_step(replace(every_minute(), last_slot=at(120)), at(120.5), previous_running=False) is None


def test_a_trigger_under_cancel_other_cancels_the_running_parent() -> None:
    step = trigger_step(every_minute(overlap="cancel_other"), at(75), previous_running=True)
    assert step.cancel_parent == "p1"


def test_a_jittered_slot_is_due_only_after_its_delay_which_the_lag_counts_from() -> None:
    jittered = every_minute(jitter_seconds=30.0)
    delay = jitter_for("k1", at(60), timedelta(seconds=30))
    assert timedelta(0) < delay < timedelta(seconds=30)
    assert plan_step(jittered, at(60) + delay - timedelta(microseconds=1), previous_running=False) is None
    assert wake_at(jittered, at(0)) == at(60) + delay
    step = plan_step(jittered, at(60) + delay, previous_running=False)
    assert rows(step) == [(at(60), FiringOutcome.FIRED, None, 1)]
    assert step is not None and step.due_at == at(60) + delay
