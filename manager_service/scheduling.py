"""The scheduler's decisions, pure: given a stored schedule, the time and whether its previous parent is still
running, what to write (a ``FiringPlan``) and whether to cancel that parent first. No I/O, no clock.

The rules of one scheduler step for one schedule:

- **A buffered slot goes first.** BUFFER_ONE kept a slot while the previous parent ran; once that parent has
  finished, the slot fires ("buffered behind parent <id>"), and nothing else happens in that step. A schedule
  paused meanwhile records it SKIPPED_PAUSED instead.
- **Due slots** come from ``schedule_rules.due``: at most the latest one fires (if within the catch-up window), and
  every older one (or the latest too, when older than the window) is MISSED, as ONE row for the gap ("manager was
  down", ``missed_count`` slots from the first, ``through`` the last).
- **Paused:** the same due slots are recorded SKIPPED_PAUSED (the gap as one row, the latest as another);
  nothing fires.
- **Overlap** (the previous parent unfinished; a MODE_PLAN parent only reads and never counts), by
  ``schedule_rules.on_overlap``: SKIP records SKIPPED_OVERLAP ("parent <id> still running"); BUFFER keeps the
  slot (no row yet) for when that parent ends; CANCEL_OTHER cancels that parent, then fires.
- **Range:** the first slot after ``end_at`` is recorded OUTSIDE_RANGE, once; then the schedule has nothing more
  to do. Slots before ``start_at`` are not slots at all.
- ``last_slot`` only moves forward (the store keeps the max) and every plan carries the buffered slot it keeps,
  so a step that is refused (the schedule changed, the slot was recorded by someone else) is simply planned again.
- **A trigger by hand** fires now (the second, so one trigger per second at most), paused or not, whatever runs:
  under CANCEL_OTHER the running parent is cancelled first. It leaves ``last_slot`` alone, unless its second is
  itself a slot of the cadence not recorded yet: then the trigger's row is that slot's, and ``last_slot`` moves
  to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from manager_service.domain import FiringOutcome, FiringPlan, FiringRecord, Schedule
from manager_service.schedule_rules import (
    Cadence,
    Due,
    OverlapAction,
    OverlapPolicy,
    cadence,
    default_catchup,
    due,
    jitter_for,
    next_slot,
    on_overlap,
)

MANAGER_WAS_DOWN = "manager was down"
TRIGGERED_BY_HAND = "triggered by hand"
PAUSED = "schedule paused"
AFTER_END = "after end_at"


@dataclass(frozen=True, slots=True)
class Step:
    """What the shell does for one schedule: cancel ``cancel_parent`` (if set), then write ``plan``.
    ``due_at`` is when the fired slot was due (slot + jitter), for the lag metric; None for a trigger."""

    plan: FiringPlan
    cancel_parent: str | None = None
    due_at: datetime | None = None


def cadence_of(schedule: Schedule) -> Cadence:
    """The schedule's cadence; ``every`` slots count from start_at, else from the schedule's creation."""
    spec = schedule.spec
    every = timedelta(seconds=spec.every_seconds) if spec.every_seconds is not None else None
    return cadence(spec.cron or "", every, spec.time_zone, spec.start_at or schedule.created_at)


def catchup_of(schedule: Schedule, c: Cadence) -> timedelta:
    seconds = schedule.spec.catchup_seconds
    return timedelta(seconds=seconds) if seconds is not None else default_catchup(c)


def next_fire_time(schedule: Schedule, now: datetime) -> datetime | None:
    """The next slot (before jitter) after the later of the last recorded slot and ``now``; None when paused or
    when that slot is after end_at. Slots before start_at are not slots: the first is at or after it."""
    if schedule.paused:
        return None
    c = cadence_of(schedule)
    after = max(moment for moment in (schedule.last_slot, now) if moment is not None)
    if schedule.spec.start_at is not None:
        after = max(after, schedule.spec.start_at - timedelta(microseconds=1))
    slot = next_slot(c, after)
    end_at = schedule.spec.end_at
    return None if end_at is not None and slot > end_at else slot


def wake_at(schedule: Schedule, now: datetime) -> datetime | None:
    """When the scheduler must look at this schedule again: its next slot plus its jitter (None: never)."""
    c = cadence_of(schedule)
    slot = next_slot(c, _resume_after(schedule, c))
    if (
        schedule.spec.end_at is not None
        and schedule.last_slot is not None
        and schedule.last_slot > schedule.spec.end_at
    ):
        return None
    return slot + jitter_for(schedule.key, slot, _jitter(schedule))


def needs_step(schedule: Schedule, now: datetime) -> bool:
    """Whether ``plan_step`` may have something to do at ``now`` (the shell skips reading the previous parent
    of a schedule that has not): a slot is due, or a buffered one waits."""
    wake = wake_at(schedule, now)
    return schedule.buffered_slot is not None or (wake is not None and wake <= now)


def plan_step(schedule: Schedule, now: datetime, previous_running: bool) -> Step | None:
    """The step to take for ``schedule`` at ``now`` (see the module rules); None when there is nothing to do."""
    if schedule.buffered_slot is not None and schedule.paused:
        record = FiringRecord(schedule.buffered_slot, FiringOutcome.SKIPPED_PAUSED, PAUSED)
        return Step(_plan(schedule, [record], keep_buffer=False))
    if schedule.buffered_slot is not None and not previous_running:
        return _fire_buffered(schedule, schedule.buffered_slot)
    c = cadence_of(schedule)
    outside = _outside_range(schedule, c, now)
    if outside is not None:
        return outside
    found = due(
        c, schedule.key, schedule.last_slot, now, catchup_of(schedule, c), _jitter(schedule), *_range(schedule)
    )
    gap = _gap(c, schedule, found, now)
    if found.fire is None and gap is None:
        return None
    if schedule.paused:
        return _paused(schedule, gap, found.fire)
    records = [_missed_row(gap)] if gap is not None else []
    if found.fire is None:
        assert gap is not None
        return Step(_plan(schedule, records, last_slot=gap.last))
    return _on_due(schedule, found.fire, records, previous_running)


def trigger_step(schedule: Schedule, now: datetime, previous_running: bool) -> Step:
    """A firing by hand at ``now`` truncated to the second (see the module rules)."""
    slot = now.replace(microsecond=0)
    record = FiringRecord(slot, FiringOutcome.FIRED, TRIGGERED_BY_HAND)
    plan = _plan(schedule, [record], fire=True, last_slot=slot if _is_open_slot(schedule, slot) else None)
    policy = OverlapPolicy(schedule.spec.overlap)
    cancel = schedule.last_parent_id if previous_running and policy is OverlapPolicy.CANCEL_OTHER else None
    return Step(plan, cancel_parent=cancel)


# -- the parts


def _is_open_slot(schedule: Schedule, moment: datetime) -> bool:
    """Whether ``moment`` is a slot of the schedule's cadence that has no row yet (after ``last_slot``). A
    trigger at such an instant takes the slot (its row is unique per slot), so it moves ``last_slot`` to it:
    the loop must not plan that slot again."""
    if schedule.last_slot is not None and moment <= schedule.last_slot:
        return False
    return next_slot(cadence_of(schedule), moment - timedelta(microseconds=1)) == moment


def _jitter(schedule: Schedule) -> timedelta:
    return timedelta(seconds=schedule.spec.jitter_seconds)


def _resume_after(schedule: Schedule, c: Cadence) -> datetime:
    """The instant slots are looked for after: the last recorded slot, or (none yet) just before the first
    possible one (the anchor for ``every``; start_at or the anchor for cron)."""
    if schedule.last_slot is not None:
        return schedule.last_slot
    start_at = schedule.spec.start_at
    return max(c.anchor, start_at - timedelta(microseconds=1)) if start_at is not None else c.anchor


def _plan(
    schedule: Schedule,
    records: list[FiringRecord],
    *,
    fire: bool = False,
    last_slot: datetime | None = None,
    buffered_slot: datetime | None = None,
    keep_buffer: bool = True,
) -> FiringPlan:
    return FiringPlan(
        schedule_key=schedule.key,
        version=schedule.version,
        records=tuple(records),
        # Every parent of the schedule gets the schedule's window.
        fire=replace(schedule.spec.maintenance, window=schedule.spec.window) if fire else None,
        last_slot=last_slot,
        buffered_slot=buffered_slot if buffered_slot is not None or not keep_buffer else schedule.buffered_slot,
    )


def _fire_buffered(schedule: Schedule, slot: datetime) -> Step:
    reason = f"buffered behind parent {schedule.last_parent_id}"
    record = FiringRecord(slot, FiringOutcome.FIRED, reason)
    plan = _plan(schedule, [record], fire=True, keep_buffer=False)
    return Step(plan, due_at=slot + jitter_for(schedule.key, slot, _jitter(schedule)))


def _outside_range(schedule: Schedule, c: Cadence, now: datetime) -> Step | None:
    """The one OUTSIDE_RANGE row for the first slot after end_at, once it is due; None otherwise."""
    end_at = schedule.spec.end_at
    if end_at is None:
        return None
    after = _resume_after(schedule, c)
    if after > end_at:
        return None  # already recorded: the schedule is done
    slot = next_slot(c, max(after, end_at))
    if slot + jitter_for(schedule.key, slot, _jitter(schedule)) > now:
        return None
    # Slots still due before end_at are planned first (the row after end_at waits for the next step).
    if next_slot(c, after) <= end_at:
        return None
    record = FiringRecord(slot, FiringOutcome.OUTSIDE_RANGE, AFTER_END)
    return Step(_plan(schedule, [record], last_slot=slot))


@dataclass(frozen=True, slots=True)
class Gap:
    """Due slots recorded as one row: the first, how many, and (when none fires after them) the last."""

    first: datetime
    count: int
    last: datetime | None


def _range(schedule: Schedule) -> tuple[datetime | None, datetime | None]:
    return schedule.spec.start_at, schedule.spec.end_at


def _gap(c: Cadence, schedule: Schedule, found: Due, now: datetime) -> Gap | None:
    """The missed slots of ``found``. When none fires, the last of them is the latest due slot: ``due`` with an
    unbounded catch-up window names it as the one that would fire."""
    if found.missed_first is None:
        return None
    last = None
    if found.fire is None:
        unbounded = due(
            c, schedule.key, schedule.last_slot, now, timedelta.max, _jitter(schedule), *_range(schedule)
        )
        last = unbounded.fire
    return Gap(found.missed_first, found.missed_count, last)


def _missed_row(gap: Gap) -> FiringRecord:
    return FiringRecord(
        gap.first, FiringOutcome.MISSED, MANAGER_WAS_DOWN, missed_count=gap.count, through=gap.last
    )


def _paused(schedule: Schedule, gap: Gap | None, fire: datetime | None) -> Step:
    records = []
    if gap is not None:
        records.append(
            FiringRecord(gap.first, FiringOutcome.SKIPPED_PAUSED, PAUSED, missed_count=gap.count, through=gap.last)
        )
    if fire is not None:
        records.append(FiringRecord(fire, FiringOutcome.SKIPPED_PAUSED, PAUSED))
    last_slot = fire or (gap.last if gap else None)
    return Step(_plan(schedule, records, last_slot=last_slot))


def _on_due(schedule: Schedule, slot: datetime, records: list[FiringRecord], previous_running: bool) -> Step:
    """The due ``slot`` under the overlap policy (``records``: the missed gap before it, if any)."""
    policy = OverlapPolicy(schedule.spec.overlap)
    action = on_overlap(policy, previous_running, schedule.buffered_slot is not None)
    previous = schedule.last_parent_id
    due_at = slot + jitter_for(schedule.key, slot, _jitter(schedule))
    if action is OverlapAction.SKIP:
        skipped = FiringRecord(slot, FiringOutcome.SKIPPED_OVERLAP, f"parent {previous} still running")
        return Step(_plan(schedule, [*records, skipped], last_slot=slot))
    if action is OverlapAction.BUFFER:
        return Step(_plan(schedule, records, last_slot=slot, buffered_slot=slot))
    fired = FiringRecord(slot, FiringOutcome.FIRED)
    plan = _plan(schedule, [*records, fired], fire=True, last_slot=slot)
    if action is OverlapAction.CANCEL_PREVIOUS_AND_FIRE:
        return Step(plan, cancel_parent=previous, due_at=due_at)
    return Step(plan, due_at=due_at)
