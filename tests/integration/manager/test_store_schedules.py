"""The job store's contract for schedules and their firings: every test here runs against each JobStore (SQLite,
PostgreSQL and, through tests/unit/manager/test_memory_store.py, in memory), except the race of four store
instances, which needs PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dbmaint.operations import CHILD_JOB_TYPE, PARENT_JOB_TYPE, Operation
from manager_service.domain import (
    FiringOutcome,
    FiringPlan,
    FiringRecord,
    JobFilter,
    MaintenanceSpec,
    ScheduleSpec,
)
from manager_service.errors import ScheduleChanged, ScheduleExists, ScheduleNotFound, SlotAlreadyRecorded
from manager_service.store import JobStore, SQLAlchemyJobStore, open_store
from tests.support.servers import fresh_postgres_database

SLOT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
WINDOW = {"start": "2026-12-01T02:00:00+00:00", "end": "2026-12-01T04:00:00+00:00", "cutoff_seconds": 0}
sql_only = pytest.mark.sql_only


def schedule_spec(schedule_id: str = "nightly", targets: tuple[str, ...] = ("db1", "db2")) -> ScheduleSpec:
    maintenance = MaintenanceSpec(targets, (Operation.VACUUM, Operation.ANALYZE))
    return ScheduleSpec(id=schedule_id, maintenance=maintenance, cron="0 2 * * *", time_zone="Europe/Berlin")


def fire_plan(store: JobStore, schedule_id: str, slot: datetime = SLOT) -> FiringPlan:
    schedule = store.get_schedule(schedule_id)
    assert schedule is not None
    return FiringPlan(
        schedule_key=schedule.key,
        version=schedule.version,
        records=(FiringRecord(slot, FiringOutcome.FIRED),),
        fire=schedule.spec.maintenance,
        last_slot=slot,
    )


def test_a_schedule_is_stored_read_listed_by_id_and_survives_a_round_trip(store: JobStore) -> None:
    created = store.create_schedule(schedule_spec("b-nightly"), paused=False)
    store.create_schedule(schedule_spec("a-weekly"), paused=True)
    found = store.get_schedule("b-nightly")
    assert found is not None and found.key == created.key and found.spec == schedule_spec("b-nightly")
    assert found.version == 1 and found.last_slot is None and not found.paused
    assert [s.id for s in store.list_schedules(10, None)] == ["a-weekly", "b-nightly"]
    assert [s.id for s in store.list_schedules(10, "a-weekly")] == ["b-nightly"]
    assert [s.id for s in store.list_schedules(1, None)] == ["a-weekly"]


def test_a_live_id_is_unique(store: JobStore) -> None:
    store.create_schedule(schedule_spec(), paused=False)
    with pytest.raises(ScheduleExists):
        store.create_schedule(schedule_spec(), paused=True)


def test_an_update_replaces_the_spec_and_pause_and_bumps_the_version(store: JobStore) -> None:
    created = store.create_schedule(schedule_spec(), paused=False)
    changed = store.update_schedule("nightly", schedule_spec(targets=("db3",)), paused=True)
    assert changed.key == created.key and changed.version == 2 and changed.paused
    stored = store.get_schedule("nightly")
    assert stored is not None and stored.spec.maintenance.targets == ("db3",) and stored.paused
    with pytest.raises(ScheduleNotFound):
        store.update_schedule("nope", schedule_spec("nope"), paused=False)


def test_a_firing_creates_one_parent_that_carries_the_schedule_and_the_slot(store: JobStore) -> None:
    store.create_schedule(schedule_spec(), paused=False)
    outcome = store.record_firings(fire_plan(store, "nightly"))
    assert outcome.created is not None
    parent = outcome.created.parent
    assert parent.type == PARENT_JOB_TYPE and parent.schedule_id == "nightly" and parent.scheduled_time == SLOT
    assert len(outcome.created.children) == 4
    assert all(c.schedule_id == "nightly" and c.scheduled_time == SLOT for c in outcome.created.children)
    (firing,) = outcome.firings
    assert (firing.outcome, firing.parent_id, firing.scheduled_time) == (FiringOutcome.FIRED, parent.id, SLOT)
    assert outcome.schedule.last_slot == SLOT and outcome.schedule.last_parent_id == parent.id
    stored = store.get_job(parent.id)
    assert stored is not None and stored.schedule_id == "nightly" and stored.scheduled_time == SLOT
    listed = store.list_jobs(JobFilter(schedule_id="nightly"), 50, None).jobs
    assert sorted(j.type for j in listed) == [CHILD_JOB_TYPE] * 4 + [PARENT_JOB_TYPE]
    assert store.list_jobs(JobFilter(schedule_id="other"), 50, None).jobs == []


def test_a_slot_is_recorded_once_and_a_second_try_writes_nothing(store: JobStore) -> None:
    store.create_schedule(schedule_spec(), paused=False)
    store.record_firings(fire_plan(store, "nightly"))
    before = store.list_jobs(JobFilter(), 100, None).jobs
    with pytest.raises(SlotAlreadyRecorded):
        store.record_firings(fire_plan(store, "nightly"))
    assert store.list_jobs(JobFilter(), 100, None).jobs == before
    firings, _ = store.list_firings("nightly", 10, None)
    assert len(firings) == 1


def test_a_plan_made_on_an_older_version_writes_nothing(store: JobStore) -> None:
    store.create_schedule(schedule_spec(), paused=False)
    stale = fire_plan(store, "nightly")
    store.update_schedule("nightly", schedule_spec(), paused=True)
    with pytest.raises(ScheduleChanged):
        store.record_firings(stale)
    assert store.list_jobs(JobFilter(), 100, None).jobs == []
    assert store.list_firings("nightly", 10, None) == ([], None)


def test_a_gap_of_missed_slots_is_one_row_and_moves_the_last_slot_to_its_end(store: JobStore) -> None:
    schedule = store.create_schedule(schedule_spec(), paused=False)
    first, last = SLOT, SLOT + timedelta(days=4)
    gap = FiringRecord(first, FiringOutcome.MISSED, "manager was down", missed_count=5, through=last)
    catch_up = FiringRecord(last + timedelta(days=1), FiringOutcome.FIRED, "catch-up after downtime")
    outcome = store.record_firings(
        FiringPlan(
            schedule.key,
            schedule.version,
            (gap, catch_up),
            fire=schedule.spec.maintenance,
            last_slot=catch_up.scheduled_time,
        )
    )
    assert outcome.schedule.last_slot == catch_up.scheduled_time
    firings, more = store.list_firings("nightly", 10, None)
    assert more is None
    assert [(f.outcome, f.missed_count, f.reason) for f in firings] == [
        (FiringOutcome.FIRED, 1, "catch-up after downtime"),
        (FiringOutcome.MISSED, 5, "manager was down"),
    ]


def test_the_buffered_slot_is_kept_then_cleared_and_the_last_slot_never_moves_back(store: JobStore) -> None:
    schedule = store.create_schedule(schedule_spec(), paused=False)
    later = SLOT + timedelta(days=1)
    keep = FiringPlan(schedule.key, schedule.version, (), last_slot=later, buffered_slot=later)
    kept = store.record_firings(keep)
    assert kept.schedule.buffered_slot == later and kept.created is None
    fired = store.record_firings(
        FiringPlan(
            schedule.key,
            kept.schedule.version,
            (FiringRecord(later, FiringOutcome.FIRED, "buffered behind the previous parent"),),
            fire=schedule.spec.maintenance,
            last_slot=SLOT,
        )
    )
    assert fired.schedule.buffered_slot is None and fired.schedule.last_slot == later


def test_firings_are_listed_newest_first_page_by_page(store: JobStore) -> None:
    schedule = store.create_schedule(schedule_spec(), paused=False)
    version = schedule.version
    for day in range(5):
        slot = SLOT + timedelta(days=day)
        record = FiringRecord(slot, FiringOutcome.SKIPPED_PAUSED, "paused")
        plan = FiringPlan(schedule.key, version, (record,), last_slot=slot)
        version = store.record_firings(plan).schedule.version
    first, cursor = store.list_firings("nightly", 2, None)
    second, cursor2 = store.list_firings("nightly", 2, cursor)
    third, end = store.list_firings("nightly", 2, cursor2)
    slots = [f.scheduled_time for f in (*first, *second, *third)]
    assert slots == [SLOT + timedelta(days=d) for d in (4, 3, 2, 1, 0)] and end is None


def test_a_deleted_and_recreated_id_starts_a_new_history(store: JobStore) -> None:
    old = store.create_schedule(schedule_spec(), paused=False)
    store.record_firings(fire_plan(store, "nightly"))
    store.delete_schedule("nightly")
    assert store.get_schedule("nightly") is None
    with pytest.raises(ScheduleNotFound):
        store.list_firings("nightly", 10, None)
    with pytest.raises(ScheduleChanged):
        store.record_firings(FiringPlan(old.key, old.version + 1, (), last_slot=SLOT))
    new = store.create_schedule(schedule_spec(), paused=False)
    assert new.key != old.key and new.last_slot is None
    assert store.list_firings("nightly", 10, None) == ([], None)
    store.record_firings(fire_plan(store, "nightly"))  # the same slot again: a new history, a new row
    with pytest.raises(ScheduleNotFound):
        store.delete_schedule("missing")


def test_a_window_is_stored_on_the_parent_and_each_child(store: JobStore) -> None:
    created = store.create_maintenance(MaintenanceSpec(("db1",), (Operation.VACUUM,), window=WINDOW))
    assert created.parent.window == WINDOW and created.children[0].window == WINDOW
    stored = store.get_job(created.children[0].id)
    assert stored is not None and stored.window == WINDOW


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_firing_race") as url:
        yield url.render_as_string(hide_password=False)


@sql_only
def test_four_store_instances_racing_on_one_slot_fire_it_once(pg_url: str) -> None:
    stores: list[SQLAlchemyJobStore] = [open_store(pg_url) for _ in range(4)]
    stores[0].create_schedule(schedule_spec(), paused=False)
    plans = [fire_plan(s, "nightly") for s in stores]
    barrier = threading.Barrier(len(stores))
    answers: list[str] = []

    def fire(index: int) -> None:
        barrier.wait()
        try:
            stores[index].record_firings(plans[index])
            answers.append("fired")
        except (SlotAlreadyRecorded, ScheduleChanged) as error:
            answers.append(type(error).__name__)

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not [t for t in threads if t.is_alive()], "a racing store never returned"
    assert sorted(answers).count("fired") == 1 and len(answers) == 4, answers
    parents = stores[0].list_jobs(JobFilter(type=PARENT_JOB_TYPE), 10, None).jobs
    assert len(parents) == 1
    assert len(stores[0].list_firings("nightly", 10, None)[0]) == 1
    for s in stores:
        s.close()
