"""The read-only role: the policy's new rows (pure), and a real manager that answers its reads and refuses its
writes and worker streams."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from dbmaint.auth import bearer_metadata
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from manager_service.auth import Role, decide
from manager_service.gate import READ_METHODS
from tests.integration.console.support import CLIENT_TOKEN, READONLY_TOKEN, TOKENS, WORKER_TOKEN
from tests.support.manager import running_manager

DENIED = grpc.StatusCode.PERMISSION_DENIED
WRITES = (
    "/dbmaint.v1.MaintenanceService/CreateMaintenance",
    "/dbmaint.v1.MaintenanceService/CancelJob",
    "/dbmaint.v1.MaintenanceService/DrainWorker",
    "/dbmaint.v1.ScheduleService/CreateSchedule",
    "/dbmaint.v1.ScheduleService/UpdateSchedule",
    "/dbmaint.v1.ScheduleService/DeleteSchedule",
    "/dbmaint.v1.ScheduleService/TriggerSchedule",
    "/dbmaint.v1.WorkerService/Connect",
)


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_a_readonly_token_has_the_readonly_role() -> None:
    assert TOKENS.role_of(READONLY_TOKEN) is Role.READONLY
    assert TOKENS.role_of(CLIENT_TOKEN) is Role.CLIENT


@pytest.mark.parametrize("method", sorted(READ_METHODS))
def test_the_readonly_role_may_call_every_read_method(method: str) -> None:
    assert decide(TOKENS, method, auth(READONLY_TOKEN)) is None
    assert decide(TOKENS, method, auth(CLIENT_TOKEN)) is None


@pytest.mark.parametrize("method", WRITES)
def test_the_readonly_role_may_call_no_write_and_no_worker_stream(method: str) -> None:
    refusal = decide(TOKENS, method, auth(READONLY_TOKEN))
    assert refusal is not None and refusal.code is DENIED


def test_the_worker_role_still_may_not_read() -> None:
    refusal = decide(TOKENS, "/dbmaint.v1.MaintenanceService/ListJobs", auth(WORKER_TOKEN))
    assert refusal is not None and refusal.code is DENIED


def test_readonly_tokens_alone_turn_auth_on() -> None:
    from manager_service.auth import AuthPolicy

    policy = AuthPolicy(readonly_tokens=("look",))
    assert policy.enabled
    refusal = decide(policy, "/dbmaint.v1.MaintenanceService/ListJobs", [])
    assert refusal is not None and refusal.code is grpc.StatusCode.UNAUTHENTICATED


async def test_a_manager_answers_a_readonly_token_s_reads_and_refuses_its_writes(tmp_path: Path) -> None:
    async with running_manager(tmp_path, auth=TOKENS) as manager:
        created = await manager.api.CreateMaintenance(
            pb.CreateMaintenanceRequest(targets=["db1"]), metadata=bearer_metadata(CLIENT_TOKEN)
        )
        look = bearer_metadata(READONLY_TOKEN)
        listed = await manager.api.ListJobs(pb.ListJobsRequest(), metadata=look)
        assert created.parent.id in {job.id for job in listed.jobs}
        got = await manager.api.GetJob(pb.GetJobRequest(id=created.parent.id), metadata=look)
        assert got.job.id == created.parent.id
        await manager.api.ListWorkers(pb.ListWorkersRequest(), metadata=look)
        schedules = spb_grpc.ScheduleServiceStub(manager.channel)
        await schedules.ListSchedules(spb.ListSchedulesRequest(), metadata=look)

        with pytest.raises(grpc.aio.AioRpcError) as cancel:
            await manager.api.CancelJob(pb.CancelJobRequest(id=created.parent.id), metadata=look)
        assert cancel.value.code() is DENIED
        with pytest.raises(grpc.aio.AioRpcError) as trigger:
            await schedules.TriggerSchedule(spb.TriggerScheduleRequest(id="nightly"), metadata=look)
        assert trigger.value.code() is DENIED
        after = await manager.api.GetJob(pb.GetJobRequest(id=created.parent.id), metadata=look)
        assert not after.job.cancel_requested
