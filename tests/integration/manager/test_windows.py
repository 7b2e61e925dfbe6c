"""Maintenance windows through the gRPC server in-process, with fake workers: a wrong window is refused, and the
manager itself interrupts a CANCEL-policy child at its window's end (for a worker that does not enforce
``window_end`` by itself), while a FINISH-policy one runs on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from dbmaint import wire
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.windows import WINDOW_ENDED_BEFORE_START, window_ended
from tests.support.manager import Manager, eventually, running_manager


async def create_in(manager: Manager, target: str, operation: int, window: pb.MaintenanceWindow) -> pb.Job:
    request = pb.CreateMaintenanceRequest(targets=[target], operations=[operation], window=window)
    created = await manager.api.CreateMaintenance(request)
    [child] = created.children
    return child


async def test_a_window_that_ends_before_it_starts_is_invalid_argument(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    backwards = pb.MaintenanceWindow(start=wire.timestamp(now), end=wire.timestamp(now - timedelta(hours=1)))
    async with running_manager(tmp_path) as m:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_in(m, "db1", pb.OPERATION_VACUUM, backwards)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "window" in (raised.value.details() or "")


async def test_the_manager_interrupts_a_cancel_policy_child_at_its_window_end(tmp_path: Path) -> None:
    opened = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    closes = opened + timedelta(seconds=3)
    window = pb.MaintenanceWindow(start=wire.timestamp(opened), end=wire.timestamp(closes))
    async with running_manager(tmp_path) as m:
        worker = await m.connected_worker("old", ["db1", "db2"], slots=2)
        worker.start_heartbeats()
        vacuum = await create_in(m, "db1", pb.OPERATION_VACUUM, window)
        reindex = await create_in(m, "db2", pb.OPERATION_REINDEX, window)
        assignments = {a.job_id: a for a in await worker.wait_assignments(2)}
        assert wire.from_timestamp(assignments[vacuum.id].window_end) == closes
        assert not assignments[reindex.id].HasField("window_end")  # reindex: FINISH by default

        await eventually(lambda: bool(worker.cancels), timeout=6, message="no cancel at the window's end")
        [cancel] = worker.cancels
        assert datetime.now(UTC) >= closes
        assert (cancel.job_id, cancel.reason) == (vacuum.id, window_ended(closes))
        await worker.complete(assignments[vacuum.id], "cancelled", cancel.reason)
        await worker.complete(assignments[reindex.id])

        async def both_ended() -> bool:
            return (await m.job(vacuum.id)).status == pb.JOB_STATUS_CANCELLED and (
                await m.job(reindex.id)
            ).status == pb.JOB_STATUS_COMPLETED

        await eventually(both_ended, timeout=5, message="the children did not end as reported")
        assert (await m.job(vacuum.id)).error == window_ended(closes)


async def test_a_child_that_never_started_in_a_one_off_window_is_cancelled_at_its_start_deadline(
    tmp_path: Path,
) -> None:
    opened = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    closes = opened + timedelta(seconds=4)
    cutoff = timedelta(seconds=1)
    window = pb.MaintenanceWindow(
        start=wire.timestamp(opened), end=wire.timestamp(closes), cutoff=wire.duration(cutoff.total_seconds())
    )
    async with running_manager(tmp_path) as m:
        worker = await m.connected_worker("w1", ["db1"])
        worker.start_heartbeats()
        request = pb.CreateMaintenanceRequest(
            targets=["db1"], operations=[pb.OPERATION_REINDEX, pb.OPERATION_ANALYZE], window=window
        )
        reindex, analyze = (await m.api.CreateMaintenance(request)).children
        [running] = await worker.wait_assignments(1)
        assert running.job_id == reindex.id

        async def analyze_ended() -> bool:
            return (await m.job(analyze.id)).status == pb.JOB_STATUS_CANCELLED

        await eventually(analyze_ended, timeout=6, message="the never-started child was not cancelled")
        assert datetime.now(UTC) >= closes - cutoff
        assert (await m.job(analyze.id)).error == WINDOW_ENDED_BEFORE_START
        await worker.complete(running)  # the REINDEX (FINISH) ran on; it is never interrupted
        await eventually(lambda: progress_done(m, reindex.parent_id), timeout=5, message="the parent did not end")
        assert worker.cancels == [] and len(worker.assignments) == 1
        assert (await m.job(reindex.parent_id)).status == pb.JOB_STATUS_CANCELLED


async def progress_done(manager: Manager, parent_id: str) -> bool:
    progress = (await manager.job(parent_id)).progress
    return progress.succeeded == 1 and progress.cancelled == 1
