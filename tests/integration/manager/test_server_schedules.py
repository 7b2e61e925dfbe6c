"""ScheduleService through the in-process server: every RPC, its validation, update_mask, NOT_FOUND and
ALREADY_EXISTS, the client role, and the scheduler loop firing, skipping and triggering for real."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from manager_service.auth import AuthPolicy
from tests.support.manager import Manager, eventually, running_manager
from tests.support.servers import fresh_postgres_database

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def schedule(schedule_id: str = "nightly", **fields: Any) -> spb.Schedule:
    """An hourly schedule vacuuming db1, changed by ``fields``."""
    message = spb.Schedule(
        id=schedule_id,
        cron="0 * * * *",
        maintenance=pb.CreateMaintenanceRequest(targets=["db1"], operations=[pb.OPERATION_VACUUM]),
    )
    for name, value in fields.items():
        if isinstance(value, Duration | pb.CreateMaintenanceRequest | pb.MaintenanceWindow):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def api(m: Manager) -> spb_grpc.ScheduleServiceStub:
    return spb_grpc.ScheduleServiceStub(m.channel)


async def status_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def create(m: Manager, message: spb.Schedule) -> spb.Schedule:
    response = await api(m).CreateSchedule(spb.CreateScheduleRequest(schedule=message))
    return response.schedule


async def firings(m: Manager, schedule_id: str) -> list[spb.Firing]:
    response = await api(m).ListFirings(spb.ListFiringsRequest(schedule_id=schedule_id))
    return list(response.firings)


# -- create, get, list, delete


async def test_create_answers_the_schedule_with_its_output_fields_and_get_reads_it_back(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await create(m, schedule(time_zone="Europe/Berlin", jitter=seconds(5)))
        assert created.id == "nightly" and created.cron == "0 * * * *" and created.time_zone == "Europe/Berlin"
        assert created.overlap == spb.OVERLAP_POLICY_SKIP
        assert created.HasField("next_fire_time") and created.next_fire_time.ToDatetime().minute == 0
        assert created.HasField("created_at") and created.HasField("updated_at") and not created.last_parent_id
        assert list(created.maintenance.targets) == ["db1"] and created.jitter.seconds == 5
        got = (await api(m).GetSchedule(spb.GetScheduleRequest(id="nightly"))).schedule
        assert got == created


async def test_a_taken_id_is_already_exists_and_an_unknown_one_not_found(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule())
        assert (await status_of(create(m, schedule())))[0] == grpc.StatusCode.ALREADY_EXISTS
        for call in (
            api(m).GetSchedule(spb.GetScheduleRequest(id="nope")),
            api(m).DeleteSchedule(spb.DeleteScheduleRequest(id="nope")),
            api(m).TriggerSchedule(spb.TriggerScheduleRequest(id="nope")),
            api(m).ListFirings(spb.ListFiringsRequest(schedule_id="nope")),
            api(m).UpdateSchedule(
                spb.UpdateScheduleRequest(schedule=schedule("nope"), update_mask=FieldMask(paths=["paused"]))
            ),
        ):
            assert (await status_of(call))[0] == grpc.StatusCode.NOT_FOUND


async def test_list_pages_by_id_and_delete_removes_the_schedule(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        for name in ("c", "a", "b"):
            await create(m, schedule(name))
        first = await api(m).ListSchedules(spb.ListSchedulesRequest(page_size=2))
        assert [s.id for s in first.schedules] == ["a", "b"] and first.next_page_token
        rest = await api(m).ListSchedules(spb.ListSchedulesRequest(page_size=2, page_token=first.next_page_token))
        assert [s.id for s in rest.schedules] == ["c"] and not rest.next_page_token
        await api(m).DeleteSchedule(spb.DeleteScheduleRequest(id="b"))
        listed = await api(m).ListSchedules(spb.ListSchedulesRequest())
        assert [s.id for s in listed.schedules] == ["a", "c"]
        code, _ = await status_of(api(m).ListSchedules(spb.ListSchedulesRequest(page_token="garbage")))
        assert code == INVALID


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (schedule("-bad"), "schedule.id"),
        (schedule(cron=""), "exactly one of cron and every"),
        (schedule(every=seconds(10)), "exactly one of cron and every"),
        (schedule(cron="", every=seconds(0.5)), "schedule.every"),
        (schedule(cron="61 * * * *"), "schedule.cron"),
        (schedule(time_zone="Mars/Olympus"), "schedule.time_zone"),
        (schedule(jitter=seconds(-1)), "schedule.jitter"),
        (schedule(catchup_window=seconds(0)), "schedule.catchup_window"),
        (schedule(overlap=99), "schedule.overlap"),
        (schedule(maintenance=pb.CreateMaintenanceRequest(targets=[])), "schedule.maintenance.targets"),
        (
            schedule(maintenance=pb.CreateMaintenanceRequest(targets=["db1"], request_id="r1")),
            "schedule.maintenance.request_id",
        ),
        (
            schedule(maintenance=pb.CreateMaintenanceRequest(targets=["db1", "db2", "db3"])),
            "schedule.maintenance.targets",
        ),
    ],
)
async def test_an_invalid_schedule_is_invalid_argument_naming_the_problem(
    tmp_path: Path, message: spb.Schedule, field: str
) -> None:
    async with running_manager(tmp_path, max_targets=2) as m:
        code, details = await status_of(create(m, message))
        assert code == INVALID and field in details


async def test_end_at_must_be_after_start_at(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        message = schedule()
        message.start_at.FromSeconds(2_000_000_000)
        message.end_at.FromSeconds(1_900_000_000)
        code, details = await status_of(create(m, message))
        assert code == INVALID and "schedule.end_at" in details


async def test_a_window_is_validated_by_the_window_rules_and_read_back(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        window = pb.MaintenanceWindow(
            cron="0 2 * * *",
            duration=seconds(3600),
            time_zone="Europe/Berlin",
            on_end={"vacuum": pb.WINDOW_END_FINISH},
        )
        created = await create(m, schedule(window=window))
        assert created.window.cron == "0 2 * * *" and created.window.duration.seconds == 3600
        assert created.window.time_zone == "Europe/Berlin"
        assert dict(created.window.on_end) == {"vacuum": pb.WINDOW_END_FINISH}
        too_long = pb.MaintenanceWindow(cron="0 2 * * *", duration=seconds(2 * 86400))
        code, details = await status_of(create(m, schedule("other", window=too_long)))
        assert code == INVALID and "schedule.window" in details


async def test_the_parent_of_a_firing_carries_the_schedules_window(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        window = pb.MaintenanceWindow(cron="0 2 * * *", duration=seconds(3600))
        await create(m, schedule("windowed", window=window))
        response = await api(m).TriggerSchedule(spb.TriggerScheduleRequest(id="windowed"))
        stored = m.server._store.get_job(response.parent.id)  # the proto's window is the windows branch's
        assert stored is not None and stored.window is not None and stored.window["cron"] == "0 2 * * *"


# -- update


async def test_update_changes_only_the_fields_of_the_mask_and_pauses(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule())
        change = schedule(cron="30 2 * * *", time_zone="Europe/Berlin", paused=True)
        response = await api(m).UpdateSchedule(
            spb.UpdateScheduleRequest(schedule=change, update_mask=FieldMask(paths=["cron", "paused"]))
        )
        updated = response.schedule
        assert updated.cron == "30 2 * * *" and updated.paused and updated.time_zone == ""
        assert not updated.HasField("next_fire_time")  # paused
        resumed = await api(m).UpdateSchedule(
            spb.UpdateScheduleRequest(schedule=schedule(paused=False), update_mask=FieldMask(paths=["paused"]))
        )
        assert not resumed.schedule.paused and resumed.schedule.cron == "30 2 * * *"
        assert resumed.schedule.HasField("next_fire_time")


@pytest.mark.parametrize(
    ("paths", "problem"),
    [
        ([], "empty mask"),
        (["id"], "id cannot be changed"),
        (["next_fire_time"], "output only"),
        (["last_parent_id"], "output only"),
        (["colour"], "unknown field"),
    ],
)
async def test_update_refuses_an_empty_mask_the_id_output_fields_and_unknown_names(
    tmp_path: Path, paths: list[str], problem: str
) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule())
        request = spb.UpdateScheduleRequest(schedule=schedule(), update_mask=FieldMask(paths=paths))
        code, details = await status_of(api(m).UpdateSchedule(request))
        assert code == INVALID and problem in details


async def test_an_update_is_validated_like_a_new_schedule(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule())
        request = spb.UpdateScheduleRequest(
            schedule=schedule(every=seconds(60)), update_mask=FieldMask(paths=["every"])
        )
        code, details = await status_of(api(m).UpdateSchedule(request))
        assert code == INVALID and "exactly one of cron and every" in details


# -- firing


async def test_an_every_schedule_fires_on_time_creating_a_parent_with_its_id(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule("often", cron="", every=seconds(1)))
        await eventually(lambda: _fired_count(m, "often", 1), timeout=5)
        fired = [f for f in await firings(m, "often") if f.outcome == spb.FIRING_OUTCOME_FIRED]
        parent = await m.job(fired[0].parent_id)
        assert parent.schedule_id == "often" and parent.scheduled_time == fired[0].scheduled_time
        assert parent.progress.total == 1
        got = (await api(m).GetSchedule(spb.GetScheduleRequest(id="often"))).schedule
        assert got.last_parent_id == parent.id
        lag = m.server.metrics.registry.get_sample_value("dbmaint_schedule_lag_seconds_count")
        assert lag is not None and lag >= 1
        count = m.server.metrics.registry.get_sample_value("dbmaint_schedule_firings_total", {"outcome": "fired"})
        assert count is not None and count >= 1


async def test_cancel_other_cancels_the_running_parent_and_fires_again(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule("eager", cron="", every=seconds(1), overlap=spb.OVERLAP_POLICY_CANCEL_OTHER))
        await eventually(lambda: _fired_count(m, "eager", 2), timeout=6)
        fired = [f for f in await firings(m, "eager") if f.outcome == spb.FIRING_OUTCOME_FIRED]
        oldest = await m.job(fired[-1].parent_id)
        assert oldest.status == pb.JOB_STATUS_CANCELLED
        slots = [f.scheduled_time.ToDatetime() for f in await firings(m, "eager")]
        assert len(slots) == len(set(slots))


async def test_cancel_other_interrupts_the_running_vacuum_but_lets_the_running_reindex_finish(
    tmp_path: Path,
) -> None:
    async with running_manager(tmp_path) as m:
        worker = await m.connected_worker("w1", ["db1", "db2"], slots=2)
        worker.start_heartbeats()
        maintenance = pb.CreateMaintenanceRequest(
            targets=["db1", "db2"], operations=[pb.OPERATION_REINDEX, pb.OPERATION_VACUUM]
        )
        overlap = spb.OVERLAP_POLICY_CANCEL_OTHER
        await create(m, schedule("mixed", cron="", every=seconds(3), overlap=overlap, maintenance=maintenance))
        first_wave = await worker.wait_assignments(2, timeout=6)
        assert {a.operation for a in first_wave} == {pb.OPERATION_REINDEX}
        reindex_db1 = next(a for a in first_wave if a.target == "db1")
        await worker.complete(next(a for a in first_wave if a.target == "db2"))
        vacuum_db2 = (await worker.wait_assignments(3, timeout=3))[2]
        assert (vacuum_db2.target, vacuum_db2.operation) == ("db2", pb.OPERATION_VACUUM)
        # The next firing replaces the parent: its running VACUUM is interrupted, its running REINDEX is not
        # (an interrupted REINDEX CONCURRENTLY leaves invalid indexes behind).
        await eventually(lambda: any(c.job_id == vacuum_db2.job_id for c in worker.cancels), timeout=6)
        assert not any(c.job_id == reindex_db1.job_id for c in worker.cancels)
        await worker.complete(reindex_db1)
        await eventually(lambda: _status(m, reindex_db1.job_id, pb.JOB_STATUS_COMPLETED), timeout=5)
        assert (await m.job(reindex_db1.job_id)).cancel_requested, "marked, so nothing starts it again"


async def _status(m: Manager, job_id: str, status: int) -> bool:
    return bool((await m.job(job_id)).status == status)


async def _fired_count(m: Manager, schedule_id: str, at_least: int) -> bool:
    return sum(f.outcome == spb.FIRING_OUTCOME_FIRED for f in await firings(m, schedule_id)) >= at_least


async def test_skip_records_skipped_overlap_while_the_previous_parent_runs(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        # No worker serves db1: the first parent stays pending, so every later slot overlaps it.
        await create(m, schedule("busy", cron="", every=seconds(1)))

        async def skipped() -> bool:
            return any(f.outcome == spb.FIRING_OUTCOME_SKIPPED_OVERLAP for f in await firings(m, "busy"))

        await eventually(skipped, timeout=6)
        rows = await firings(m, "busy")
        fired = [f for f in rows if f.outcome == spb.FIRING_OUTCOME_FIRED]
        overlap = next(f for f in rows if f.outcome == spb.FIRING_OUTCOME_SKIPPED_OVERLAP)
        assert len(fired) == 1 and overlap.reason == f"parent {fired[0].parent_id} still running"


async def test_buffer_one_fires_the_kept_slot_when_the_running_parent_completes(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        worker = await m.connected_worker("w1", ["db1"])
        await create(m, schedule("queued", cron="", every=seconds(1), overlap=spb.OVERLAP_POLICY_BUFFER_ONE))
        (first,) = await worker.wait_assignments(1, timeout=5)

        async def one_skipped() -> bool:
            # One slot is kept (no row yet); the next one is skipped.
            return any(f.outcome == spb.FIRING_OUTCOME_SKIPPED_OVERLAP for f in await firings(m, "queued"))

        await eventually(one_skipped, timeout=6)
        await worker.complete(first)

        async def buffered_fired() -> spb.Firing | None:
            rows = await firings(m, "queued")
            return next((f for f in rows if f.reason.startswith("buffered behind parent")), None)

        kept = await eventually(buffered_fired, timeout=6)
        first_row = next(f for f in await firings(m, "queued") if f.parent_id == first.parent_id)
        assert (
            kept.outcome == spb.FIRING_OUTCOME_FIRED and kept.reason == f"buffered behind parent {first.parent_id}"
        )
        assert kept.scheduled_time.ToDatetime() - first_row.scheduled_time.ToDatetime() == timedelta(seconds=1)


async def test_the_first_slot_after_end_at_is_recorded_outside_range_and_nothing_fires_after(
    tmp_path: Path,
) -> None:
    async with running_manager(tmp_path) as m:
        message = schedule("brief", cron="", every=seconds(1), paused=True)
        message.end_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))

        async def outside() -> bool:
            rows = await firings(m, "brief")
            return any(f.outcome == spb.FIRING_OUTCOME_OUTSIDE_RANGE for f in rows)

        await create(m, message)
        await eventually(outside, timeout=6)
        await asyncio.sleep(1.5)
        rows = await firings(m, "brief")
        assert rows[0].outcome == spb.FIRING_OUTCOME_OUTSIDE_RANGE, "the newest row: nothing after it"
        assert sum(f.outcome == spb.FIRING_OUTCOME_OUTSIDE_RANGE for f in rows) == 1
        got = (await api(m).GetSchedule(spb.GetScheduleRequest(id="brief"))).schedule
        assert not got.HasField("next_fire_time")


async def test_trigger_fires_at_once_even_while_paused(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule("manual", paused=True))
        response = await api(m).TriggerSchedule(spb.TriggerScheduleRequest(id="manual"))
        assert response.firing.outcome == spb.FIRING_OUTCOME_FIRED
        assert response.firing.reason == "triggered by hand" and response.firing.scheduled_time.nanos == 0
        assert response.parent.id == response.firing.parent_id and response.parent.schedule_id == "manual"
        assert response.parent.progress.total == 1
        rows = await firings(m, "manual")
        assert [f.parent_id for f in rows] == [response.parent.id]


async def test_list_jobs_filters_the_parents_of_a_schedule(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule("mine"))
        triggered = await api(m).TriggerSchedule(spb.TriggerScheduleRequest(id="mine"))
        await m.create(["db1"])
        listed = await m.api.ListJobs(pb.ListJobsRequest(schedule_id="mine"))
        # The parent and its child both carry the schedule's id; the other parent does not.
        assert {j.parent_id or j.id for j in listed.jobs} == {triggered.parent.id} and len(listed.jobs) == 2
        code, _ = await status_of(m.api.ListJobs(pb.ListJobsRequest(schedule_id="-bad")))
        assert code == INVALID


async def test_list_firings_pages_newest_first(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await create(m, schedule("paged", cron="", every=seconds(1), paused=True))
        await eventually(lambda: _rows_at_least(m, "paged", 3), timeout=6)
        first = await api(m).ListFirings(spb.ListFiringsRequest(schedule_id="paged", page_size=2))
        assert len(first.firings) == 2 and first.next_page_token
        assert all(f.outcome == spb.FIRING_OUTCOME_SKIPPED_PAUSED for f in first.firings)
        times = [f.scheduled_time.ToDatetime() for f in first.firings]
        assert times == sorted(times, reverse=True)
        second = await api(m).ListFirings(
            spb.ListFiringsRequest(schedule_id="paged", page_size=2, page_token=first.next_page_token)
        )
        assert second.firings and second.firings[0].scheduled_time.ToDatetime() < times[-1]


async def _rows_at_least(m: Manager, schedule_id: str, count: int) -> bool:
    return len(await firings(m, schedule_id)) >= count


@pytest.mark.timeout(60)
async def test_only_the_leader_fires_and_a_standby_taking_over_goes_on_with_no_slot_twice(tmp_path: Path) -> None:
    with fresh_postgres_database("dbmaint_schedules") as url:
        pg_url = url.render_as_string(hide_password=False)
        async with running_manager(tmp_path / "a", database_url=pg_url, store_lease=3.0) as first:
            message = schedule("ha", cron="", every=seconds(1), overlap=spb.OVERLAP_POLICY_CANCEL_OTHER)
            await create(first, message)
            async with running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as second:
                assert not second.server.leading
                await eventually(lambda: _fired_count(first, "ha", 2), timeout=6)
                await first.server.shutdown()  # gives the lease up: the standby leads at its next poll
                await eventually(lambda: second.server.leading, timeout=5)
                before = len(await firings(second, "ha"))
                await eventually(lambda: _rows_at_least(second, "ha", before + 2), timeout=6)
                rows = sorted(await firings(second, "ha"), key=lambda f: f.scheduled_time.ToDatetime())
        for row, following in pairwise(rows):
            step = following.scheduled_time.ToDatetime() - row.scheduled_time.ToDatetime()
            assert step == row.missed_count * timedelta(seconds=1), rows


# -- auth, health, reflection


async def test_schedule_service_has_health_and_reflection_with_its_comments(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        check = health_pb2.HealthCheckRequest(service="dbmaint.v1.ScheduleService")
        assert (await m.health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(m.channel)
        asks = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="dbmaint.v1.ScheduleService"),
        ]
        replies = [reply async for reply in reflection.ServerReflectionInfo(iter(asks))]
        assert "dbmaint.v1.ScheduleService" in [s.name for s in replies[0].list_services_response.service]
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in replies[1].file_descriptor_response.file_descriptor_proto
        ]
        schedules_file = next(f for f in files if f.name == "dbmaint/v1/schedules.proto")
        assert schedules_file.source_code_info.location, "the comments are served too"


async def test_schedule_service_takes_the_client_token_and_refuses_the_worker_token(tmp_path: Path) -> None:
    async with running_manager(tmp_path, auth=AuthPolicy(("client-1",), ("worker-1",))) as m:
        stub = api(m)
        request = spb.ListSchedulesRequest()
        await stub.ListSchedules(request, metadata=[("authorization", "Bearer client-1")])
        code, _ = await status_of(stub.ListSchedules(request, metadata=[("authorization", "Bearer worker-1")]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = await status_of(stub.ListSchedules(request))
        assert code == grpc.StatusCode.UNAUTHENTICATED
