"""The scheduler's shell: the schedule requests of ScheduleService and the loop that fires schedules.

It runs inside the leading manager's Orchestrator (a standby never fires) and decides nothing itself: the pure
``scheduling`` module plans each step, the store writes it in one transaction (``record_firings``: one row per
slot, the parent created with it), and the created children are queued into the fleet core exactly as for
CreateMaintenance. A step the store refuses (the schedule changed meanwhile, or the slot already has a row) is
planned again on the next tick: a slot never fires twice. One lock serializes the steps of this manager (the
loop and TriggerSchedule), so they do not refuse each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from manager_service.domain import (
    CreateOutcome,
    Firing,
    FiringOutcome,
    FiringsOutcome,
    Schedule,
    ScheduleSpec,
    utcnow,
)
from manager_service.errors import (
    JobAlreadyFinished,
    JobNotFound,
    ScheduleChanged,
    ScheduleNotFound,
    SlotAlreadyRecorded,
    StoreUnavailable,
)
from manager_service.events import wait_set
from manager_service.metrics import ManagerMetrics
from manager_service.schedule_rules import ScheduleRuleError
from manager_service.scheduling import Step, needs_step, plan_step, trigger_step, wake_at
from manager_service.store.base import JobStore

log = logging.getLogger(__name__)

# The loop looks at the schedules at least this often (and sooner when a slot is due earlier).
MAX_TICK_SECONDS = 1.0
MIN_TICK_SECONDS = 0.01
# Schedules read per store call while the loop goes through them all.
SCHEDULES_PER_READ = 500
CANCEL_REASON = "cancelled by schedule {schedule}: its next firing replaces it (overlap policy cancel_other)"


class StoreCall(Protocol):
    def __call__(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class Triggered:
    """What TriggerSchedule made: the FIRED row and its parent."""

    firing: Firing
    created: CreateOutcome


class ScheduleShell:
    def __init__(
        self,
        store: JobStore,
        write: StoreCall,
        read: StoreCall,
        queue_created: Callable[[CreateOutcome], None],
        cancel: Callable[[str, str], Awaitable[object]],
        metrics: ManagerMetrics,
    ) -> None:
        self._store = store
        self._write = write
        self._read = read
        self._queue_created = queue_created
        self._cancel = cancel
        self._metrics = metrics
        self._steps = asyncio.Lock()
        self._changed = asyncio.Event()

    # -- requests

    async def create(self, spec: ScheduleSpec, paused: bool) -> Schedule:
        schedule: Schedule = await self._write(self._store.create_schedule, spec, paused)
        log.info("created schedule %s", spec.id, extra={"schedule_id": spec.id})
        self._changed.set()
        return schedule

    async def get(self, schedule_id: str) -> Schedule:
        schedule: Schedule | None = await self._read(self._store.get_schedule, schedule_id)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        return schedule

    async def list_schedules(self, limit: int, after_id: str | None) -> list[Schedule]:
        schedules: list[Schedule] = await self._read(self._store.list_schedules, limit, after_id)
        return schedules

    async def update(self, schedule_id: str, spec: ScheduleSpec, paused: bool) -> Schedule:
        async with self._steps:
            schedule: Schedule = await self._write(self._store.update_schedule, schedule_id, spec, paused)
        log.info("updated schedule %s (paused: %s)", schedule_id, paused, extra={"schedule_id": schedule_id})
        self._changed.set()
        return schedule

    async def delete(self, schedule_id: str) -> None:
        async with self._steps:
            await self._write(self._store.delete_schedule, schedule_id)
        log.info("deleted schedule %s", schedule_id, extra={"schedule_id": schedule_id})

    async def firings(
        self, schedule_id: str, limit: int, before_seq: int | None
    ) -> tuple[list[Firing], int | None]:
        page: tuple[list[Firing], int | None] = await self._read(
            self._store.list_firings, schedule_id, limit, before_seq
        )
        return page

    async def trigger(self, schedule_id: str) -> Triggered:
        """Fire now (see ``scheduling.trigger_step``). The loop's steps wait meanwhile (one lock), so the schedule
        read here is the one written to. A second trigger within the same second is refused
        (SlotAlreadyRecorded): that slot has its row."""
        async with self._steps:
            schedule = await self.get(schedule_id)
            step = trigger_step(schedule, utcnow(), await self._previous_running(schedule))
            outcome = await self._take(schedule, step)
        assert outcome.created is not None  # a trigger always fires
        return Triggered(outcome.firings[0], outcome.created)

    # -- the loop

    async def run(self) -> None:
        """Fire what is due, then sleep until the next due instant (at most MAX_TICK_SECONDS, woken early by a
        created or changed schedule). A store outage pauses it; other store errors end it (the manager stops)."""
        while True:
            wake: datetime | None = None
            try:
                wake = await self.tick(utcnow())
            except StoreUnavailable as error:
                log.warning("scheduler paused: %s; retrying", error)
            await self._sleep_until(wake)

    async def tick(self, now: datetime) -> datetime | None:
        """One pass over every live schedule; returns the earliest instant one of them is due next."""
        earliest: datetime | None = None
        after: str | None = None
        while True:
            page = await self.list_schedules(SCHEDULES_PER_READ, after)
            for schedule in page:
                wake = await self._tick_one(schedule, now)
                if wake is not None and (earliest is None or wake < earliest):
                    earliest = wake
            if len(page) < SCHEDULES_PER_READ:
                return earliest
            after = page[-1].id

    async def _tick_one(self, schedule: Schedule, now: datetime) -> datetime | None:
        extra = {"schedule_id": schedule.id}
        try:
            if not needs_step(schedule, now):
                return wake_at(schedule, now)
            async with self._steps:
                step = plan_step(schedule, now, await self._previous_running(schedule))
                if step is not None:
                    outcome = await self._take(schedule, step)
                    schedule = outcome.schedule
            return wake_at(schedule, now)
        except ScheduleChanged as error:
            # Changed by a request since it was read (or deleted): planned again at once from what is stored.
            log.debug("schedule %s: %s; planned again", schedule.id, error, extra=extra)
            return now
        except SlotAlreadyRecorded as error:
            # Not expected (the steps of this manager are serialized): nothing was written; retried next tick.
            log.warning("schedule %s: %s; planned again next tick", schedule.id, error, extra=extra)
            return None
        except ScheduleRuleError as error:
            log.warning("schedule %s cannot be planned: %s", schedule.id, error, extra=extra)
            return None

    async def _sleep_until(self, wake: datetime | None) -> None:
        seconds = MAX_TICK_SECONDS
        if wake is not None:
            seconds = min(MAX_TICK_SECONDS, max(MIN_TICK_SECONDS, (wake - utcnow()).total_seconds()))
        await wait_set(self._changed, seconds)
        self._changed.clear()

    # -- one step

    async def _previous_running(self, schedule: Schedule) -> bool:
        """Whether the schedule's previous parent still runs, as an overlap counts it: a MODE_PLAN parent only
        reads, so it never overlaps."""
        if schedule.last_parent_id is None:
            return False
        parent = await self._read(self._store.get_job, schedule.last_parent_id)
        return parent is not None and not parent.status.is_terminal and not parent.is_plan

    async def _take(self, schedule: Schedule, step: Step) -> FiringsOutcome:
        """Cancel the parent the step replaces (if any), write the plan, queue the parent it created."""
        extra = {"schedule_id": schedule.id}
        if step.cancel_parent is not None:
            # JobNotFound/JobAlreadyFinished: it ended meanwhile, nothing to cancel.
            with contextlib.suppress(JobNotFound, JobAlreadyFinished):
                await self._cancel(step.cancel_parent, CANCEL_REASON.format(schedule=schedule.id))
            log.info("schedule %s cancelled parent %s", schedule.id, step.cancel_parent, extra=extra)
        outcome: FiringsOutcome = await self._write(self._store.record_firings, step.plan)
        for firing in outcome.firings:
            self._metrics.schedule_firings.labels(firing.outcome.value).inc()
            self._log_firing(firing)
        if outcome.created is not None:
            self._queue_created(outcome.created)
            if step.due_at is not None:
                lag = outcome.created.parent.created_at - step.due_at
                self._metrics.schedule_lag.observe(max(lag, timedelta(0)).total_seconds())
        return outcome

    def _log_firing(self, firing: Firing) -> None:
        extra = {"schedule_id": firing.schedule_id, "job_id": firing.parent_id}
        # A paused schedule would log every slot: those rows are DEBUG.
        level = logging.DEBUG if firing.outcome is FiringOutcome.SKIPPED_PAUSED else logging.INFO
        log.log(
            level,
            "schedule %s slot %s: %s%s%s",
            firing.schedule_id,
            firing.scheduled_time.isoformat(),
            firing.outcome.value,
            f" parent {firing.parent_id}" if firing.parent_id else "",
            f" ({firing.reason})" if firing.reason else "",
            extra=extra,
        )
