"""Schedules end to end with real processes: a schedule fires on time, a manager killed across slots catches up
once and records the gap, pause stops the firings while a trigger still fires, and SKIP leaves a slow run alone."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from dbmaint.local import ServiceProcess
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from tests.support.polling import wait_for
from tests.support.processes import Cluster
from tests.support.targets import make_sqlite_target

pytestmark = pytest.mark.e2e

FIRED = spb.FIRING_OUTCOME_FIRED


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def schedules(fleet: Cluster) -> spb_grpc.ScheduleServiceStub:
    return spb_grpc.ScheduleServiceStub(fleet.channel)  # type: ignore[no-untyped-call]


def start(fleet: Cluster, tmp_path: Path, faults: str = "") -> ServiceProcess:
    """A manager (returned) and one worker serving the small target "t1"."""
    target = tmp_path / "targets" / "t1.db"
    make_sqlite_target(target, rows=200)
    manager = fleet.start_manager()
    fleet.start_worker("w1", {"t1": target}, faults=faults)
    return manager


def every(fleet: Cluster, schedule_id: str, interval: float, operation: int, **fields: object) -> None:
    message = spb.Schedule(
        id=schedule_id,
        every=seconds(interval),
        maintenance=pb.CreateMaintenanceRequest(targets=["t1"], operations=[operation]),
        **fields,  # type: ignore[arg-type]
    )
    schedules(fleet).CreateSchedule(spb.CreateScheduleRequest(schedule=message), timeout=10)


def firings(fleet: Cluster, schedule_id: str) -> list[spb.Firing]:
    """Oldest slot first."""
    reply = schedules(fleet).ListFirings(
        spb.ListFiringsRequest(schedule_id=schedule_id, page_size=1000), timeout=10
    )
    return sorted(reply.firings, key=lambda f: f.scheduled_time.ToDatetime())


def fired(fleet: Cluster, schedule_id: str) -> list[spb.Firing]:
    return [f for f in firings(fleet, schedule_id) if f.outcome == FIRED]


def slot_of(firing: spb.Firing) -> datetime:
    return firing.scheduled_time.ToDatetime(tzinfo=UTC)


def test_an_every_2s_schedule_fires_on_time_with_parents_that_name_it(fleet: Cluster, tmp_path: Path) -> None:
    start(fleet, tmp_path)
    every(fleet, "quick", 2, pb.OPERATION_ANALYZE)

    rows = wait_for(lambda: len(f := fired(fleet, "quick")) >= 2 and f, timeout=20, message=fleet.logs)

    for row in rows[:2]:
        parent = fleet.get(row.parent_id).job
        assert parent.schedule_id == "quick" and parent.scheduled_time == row.scheduled_time
        lag = parent.created_at.ToDatetime(tzinfo=UTC) - slot_of(row)
        assert timedelta(0) <= lag < timedelta(seconds=1.5), f"slot {slot_of(row)} fired {lag} late"
    assert slot_of(rows[1]) - slot_of(rows[0]) == timedelta(seconds=2)
    done = fleet.wait_status(rows[0].parent_id, pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED)
    assert done.job.status == pb.JOB_STATUS_COMPLETED, fleet.describe(rows[0].parent_id)


@pytest.mark.parametrize("store_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_manager_killed_across_slots_fires_one_catch_up_and_records_the_gap(
    fleet: Cluster, tmp_path: Path
) -> None:
    manager = start(fleet, tmp_path)
    # CANCEL_OTHER: the catch-up fires even if the parent of the slot before the kill has not ended yet.
    every(
        fleet,
        "steady",
        2,
        pb.OPERATION_ANALYZE,
        catchup_window=seconds(60),
        overlap=spb.OVERLAP_POLICY_CANCEL_OTHER,
    )
    wait_for(lambda: fired(fleet, "steady"), timeout=20, message=fleet.logs)

    killed_at = datetime.now(UTC)
    manager.kill9()
    time.sleep(5)  # at least two slots pass with no manager
    fleet.start_manager()

    def caught_up() -> list[spb.Firing] | None:
        rows = firings(fleet, "steady")
        return rows if any(f.outcome == FIRED and slot_of(f) > killed_at for f in rows) else None

    rows = wait_for(caught_up, timeout=20, message=fleet.logs)
    # Every slot has exactly one row: each row is followed by the slot after the ones it stands for.
    for row, following in pairwise(rows):
        assert slot_of(following) == slot_of(row) + row.missed_count * timedelta(seconds=2), rows
    missed = [index for index, f in enumerate(rows) if f.outcome == spb.FIRING_OUTCOME_MISSED]
    assert len(missed) == 1, rows
    gap, catch_up = rows[missed[0]], rows[missed[0] + 1]
    assert gap.reason == "manager was down" and gap.missed_count >= 1
    # One catch-up firing, written in the same step as the gap: the latest missed slot, fired late.
    assert catch_up.outcome == FIRED and catch_up.recorded_at == gap.recorded_at, rows
    late = catch_up.recorded_at.ToDatetime(tzinfo=UTC) - slot_of(catch_up)
    assert late > timedelta(0), rows


def test_pause_stops_the_firings_and_a_trigger_fires_at_once(fleet: Cluster, tmp_path: Path) -> None:
    start(fleet, tmp_path)
    every(fleet, "pausable", 2, pb.OPERATION_ANALYZE)
    wait_for(lambda: fired(fleet, "pausable"), timeout=20, message=fleet.logs)

    pause = spb.UpdateScheduleRequest(
        schedule=spb.Schedule(id="pausable", paused=True), update_mask=FieldMask(paths=["paused"])
    )
    assert schedules(fleet).UpdateSchedule(pause, timeout=10).schedule.paused
    paused_at = datetime.now(UTC)
    wait_for(
        lambda: any(f.outcome == spb.FIRING_OUTCOME_SKIPPED_PAUSED for f in firings(fleet, "pausable")),
        timeout=10,
        message=fleet.logs,
    )
    assert not [f for f in fired(fleet, "pausable") if slot_of(f) > paused_at]

    asked_at = datetime.now(UTC)
    reply = schedules(fleet).TriggerSchedule(spb.TriggerScheduleRequest(id="pausable"), timeout=10)
    assert reply.firing.outcome == FIRED and reply.firing.reason == "triggered by hand"
    assert slot_of(reply.firing) >= asked_at.replace(microsecond=0)
    assert reply.parent.schedule_id == "pausable"
    done = fleet.wait_status(reply.parent.id, pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED)
    assert done.job.status == pb.JOB_STATUS_COMPLETED, fleet.describe(reply.parent.id)


def test_skip_records_skipped_overlap_while_a_slow_run_is_in_progress(fleet: Cluster, tmp_path: Path) -> None:
    start(fleet, tmp_path, faults="slow:vacuum=8")
    every(fleet, "slow", 2, pb.OPERATION_VACUUM)

    def skipped() -> spb.Firing | None:
        return next((f for f in firings(fleet, "slow") if f.outcome == spb.FIRING_OUTCOME_SKIPPED_OVERLAP), None)

    overlap = wait_for(skipped, timeout=20, message=fleet.logs)
    first = fired(fleet, "slow")[0]
    assert overlap.reason == f"parent {first.parent_id} still running"
    assert fleet.get(first.parent_id).job.status in (pb.JOB_STATUS_PENDING, pb.JOB_STATUS_RUNNING)
    assert len(fired(fleet, "slow")) == 1, "nothing fired while the slow parent ran"
