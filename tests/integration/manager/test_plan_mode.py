"""Modes, thresholds and parallel through the in-process manager: the request's mode reaches each child's config
and its Assignment, a reused request_id with another mode is another request, a schedule keeps its mode, its
thresholds and its parallel, and a bad parallel or threshold is INVALID_ARGUMENT."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from dbmaint.operations import Operation, RunMode
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from manager_service.domain import MaintenanceSpec
from manager_service.store import JobStore
from tests.support.manager import eventually, running_manager


def plan_request(**fields: object) -> pb.CreateMaintenanceRequest:
    return pb.CreateMaintenanceRequest(
        targets=["db1"],
        operations=[pb.OPERATION_VACUUM],
        mode=pb.MODE_PLAN,
        **fields,  # type: ignore[arg-type]
    )


async def test_the_plan_mode_reaches_the_parent_and_the_childs_assignment(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        worker = await m.connected_worker("w1", ["db1"])
        created = await m.api.CreateMaintenance(plan_request())
        (assignment,) = await worker.wait_assignments(1)
        assert json.loads(assignment.config)["mode"] == "plan"
        assert json.loads(created.parent.config)["mode"] == "plan"


async def test_a_plan_child_starts_while_a_vacuum_holds_its_target(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        worker = await m.connected_worker("w1", ["db1"], slots=2)
        await m.create(["db1"], [pb.OPERATION_VACUUM])
        (vacuum,) = await worker.wait_assignments(1)
        await m.api.CreateMaintenance(plan_request())
        (_, plan) = await worker.wait_assignments(2)
        assert "mode" not in json.loads(vacuum.config)
        assert json.loads(plan.config)["mode"] == "plan"


async def test_a_request_id_reused_with_another_mode_is_refused(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await m.create(["db1"], [pb.OPERATION_VACUUM], request_id="r1")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await m.api.CreateMaintenance(plan_request(request_id="r1"))
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("request_fields", "problem"),
    [
        ({"parallel": 9}, "9 is not from 1 to 8"),
        ({"thresholds": {"freeze_age_ratio": 0.1}}, "thresholds apply to MODE_PLAN and MODE_AUTO only"),
        ({"mode": pb.MODE_AUTO, "thresholds": {"nope": 1.0}}, "unknown threshold 'nope'"),
    ],
)
async def test_a_bad_parallel_or_threshold_is_invalid_argument(
    tmp_path: Path, request_fields: dict[str, object], problem: str
) -> None:
    async with running_manager(tmp_path) as m:
        request = pb.CreateMaintenanceRequest(targets=["db1"], **request_fields)  # type: ignore[arg-type]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await m.api.CreateMaintenance(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert problem in (info.value.details() or "")


async def test_an_auto_request_gives_each_child_its_mode_and_thresholds_in_the_config(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        request = pb.CreateMaintenanceRequest(
            targets=["db1"],
            operations=[pb.OPERATION_VACUUM],
            mode=pb.MODE_AUTO,
            thresholds={"vacuum_threshold": 5},
        )
        child = (await m.api.CreateMaintenance(request)).children[0]
        config = json.loads(child.config)
        assert config["mode"] == "auto" and config["thresholds"] == {"vacuum_threshold": 5.0}


async def test_a_parallel_request_gives_each_child_its_parallel_in_the_config(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        request = pb.CreateMaintenanceRequest(targets=["db1"], operations=[pb.OPERATION_VACUUM], parallel=4)
        created = await m.api.CreateMaintenance(request)
        child = created.children[0]
        assert json.loads(child.config)["parallel"] == 4


async def test_a_schedule_keeps_its_plan_mode_and_its_auto_mode_with_thresholds(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        schedules = spb_grpc.ScheduleServiceStub(m.channel)
        message = spb.Schedule(id="nightly-plan", cron="0 * * * *", maintenance=plan_request())
        created = (await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=message))).schedule
        assert created.maintenance.mode == pb.MODE_PLAN
        message.id = "auto"
        message.maintenance.mode = pb.MODE_AUTO
        message.maintenance.thresholds["freeze_age_ratio"] = 0.25
        auto = (await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=message))).schedule
        assert auto.maintenance.mode == pb.MODE_AUTO
        assert dict(auto.maintenance.thresholds) == {"freeze_age_ratio": 0.25}
        message.id = "bad"
        message.maintenance.thresholds["no_such"] = 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=message))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "schedule.maintenance.thresholds['no_such']" in (info.value.details() or "")


async def test_a_running_plan_parent_is_no_schedule_overlap(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        # No worker serves db1: every parent stays pending. An ALL schedule would skip its later slots
        # (SKIPPED_OVERLAP); a PLAN schedule fires each of them.
        schedules = spb_grpc.ScheduleServiceStub(m.channel)
        every = Duration(seconds=1)
        message = spb.Schedule(id="planner", every=every, maintenance=plan_request())
        await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=message))

        async def fired_twice() -> bool:
            answer = await schedules.ListFirings(spb.ListFiringsRequest(schedule_id="planner"))
            outcomes = [firing.outcome for firing in answer.firings]
            assert spb.FIRING_OUTCOME_SKIPPED_OVERLAP not in outcomes
            return outcomes.count(spb.FIRING_OUTCOME_FIRED) >= 2

        await eventually(fired_twice, timeout=6)


def test_the_plan_mode_survives_the_store_on_both_databases(store: JobStore) -> None:
    created = store.create_maintenance(MaintenanceSpec(("db1",), (Operation.VACUUM,), "r1", 3, mode=RunMode.PLAN))
    (child,) = created.children
    for stored in (store.get_job(created.parent.id), store.get_job(child.id)):
        assert stored is not None and stored.is_plan
    again = store.create_maintenance(MaintenanceSpec(("db1",), (Operation.VACUUM,), "r1", 3, mode=RunMode.PLAN))
    assert not again.created and again.parent.id == created.parent.id


async def test_a_schedule_keeps_its_parallel_and_its_firings_children_carry_it(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        schedules = spb_grpc.ScheduleServiceStub(m.channel)
        maintenance = pb.CreateMaintenanceRequest(targets=["db1"], operations=[pb.OPERATION_VACUUM], parallel=4)
        message = spb.Schedule(id="wide", every=Duration(seconds=1), maintenance=maintenance)
        created = (await schedules.CreateSchedule(spb.CreateScheduleRequest(schedule=message))).schedule
        assert created.maintenance.parallel == 4
        worker = await m.connected_worker("w1", ["db1"])
        (assignment,) = await worker.wait_assignments(1)
        assert json.loads(assignment.config)["parallel"] == 4
