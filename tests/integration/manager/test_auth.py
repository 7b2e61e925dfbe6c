"""Who may call what: the policy on its own, then the authorization matrix against a running manager (every RPC
x no token / wrong token / client token / worker token), and what a refused call leaves behind (nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dbmaint.auth import CredentialError, bearer_metadata, read_secret, read_token_list
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from manager_service.auth import AuthPolicy, Role, bearer_token, decide
from manager_service.config import parse_config
from tests.support.manager import Manager, running_manager

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

CLIENT_TOKEN = "client-secret-1"
ROTATED_CLIENT_TOKEN = "client-secret-2"
WORKER_TOKEN = "worker-secret-1"
POLICY = AuthPolicy((CLIENT_TOKEN, ROTATED_CLIENT_TOKEN), (WORKER_TOKEN,))

CREATE = "/dbmaint.v1.MaintenanceService/CreateMaintenance"
CONNECT = "/dbmaint.v1.WorkerService/Connect"
HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


# ---------------------------------------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    ("method", "metadata", "expected"),
    [
        (CREATE, [], UNAUTHENTICATED),
        (CREATE, auth("nope"), UNAUTHENTICATED),
        (CREATE, auth(CLIENT_TOKEN), None),
        (CREATE, auth(ROTATED_CLIENT_TOKEN), None),
        (CREATE, auth(WORKER_TOKEN), DENIED),
        (CREATE, [("authorization", CLIENT_TOKEN)], UNAUTHENTICATED),  # not a bearer token
        (CREATE, [("authorization", f"bearer {CLIENT_TOKEN}")], None),  # the scheme is case-insensitive
        (CONNECT, [], UNAUTHENTICATED),
        (CONNECT, auth("nope"), UNAUTHENTICATED),
        (CONNECT, auth(CLIENT_TOKEN), DENIED),
        (CONNECT, auth(WORKER_TOKEN), None),
        (HEALTH, [], None),
        (REFLECTION, [], None),
    ],
)
def test_decide(method: str, metadata: list[tuple[str, str]], expected: grpc.StatusCode | None) -> None:
    refusal = decide(POLICY, method, metadata)
    assert (refusal.code if refusal else None) == expected
    if refusal is not None:
        for token in (CLIENT_TOKEN, ROTATED_CLIENT_TOKEN, WORKER_TOKEN, "nope"):
            assert token not in refusal.message


def test_no_tokens_means_auth_is_off() -> None:
    assert not AuthPolicy().enabled
    assert decide(AuthPolicy(), CREATE, []) is None
    assert decide(AuthPolicy(), CONNECT, auth("anything")) is None


def test_role_of_and_bearer_parsing() -> None:
    assert POLICY.role_of(CLIENT_TOKEN) is Role.CLIENT
    assert POLICY.role_of(WORKER_TOKEN) is Role.WORKER
    assert POLICY.role_of(CLIENT_TOKEN[:-1]) is None and POLICY.role_of("") is None
    assert bearer_token([("Authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([("x-other", "Bearer abc")]) is None


def test_tokens_never_show_in_a_config_repr() -> None:
    config = parse_config([], {"DBMAINT_CLIENT_TOKENS": "c1,c2", "DBMAINT_WORKER_TOKENS": "w1"})
    assert config.auth.client_tokens == ("c1", "c2") and config.auth.worker_tokens == ("w1",)
    assert "c1" not in repr(config) and "w1" not in repr(config)


def test_reading_tokens(tmp_path: Path) -> None:
    secret = tmp_path / "tokens"
    secret.write_text("a1\nb2, c3\n\n")
    assert read_token_list({"T_FILE": str(secret)}, "T") == ("a1", "b2", "c3")
    assert read_token_list({"T": " x , y "}, "T") == ("x", "y")
    assert read_token_list({}, "T") == ()
    assert read_secret({"T_FILE": str(secret)}, "T") == "a1\nb2, c3"
    with pytest.raises(CredentialError, match="not both"):
        read_secret({"T": "x", "T_FILE": str(secret)}, "T")
    with pytest.raises(CredentialError, match="cannot read"):
        read_secret({"T_FILE": str(tmp_path / "missing")}, "T")
    with pytest.raises(CredentialError, match="spaces"):
        read_token_list({"T": "has space"}, "T")
    assert bearer_metadata(None) == () and bearer_metadata("t") == (("authorization", "Bearer t"),)


# --------------------------------------------------------------------------------------- the running manager

Call = Callable[[Manager, list[tuple[str, str]]], Awaitable[Any]]


async def _create(m: Manager, md: list[tuple[str, str]]) -> Any:
    request = pb.CreateMaintenanceRequest(targets=["db1"], operations=[pb.OPERATION_VACUUM])
    return await m.api.CreateMaintenance(request, metadata=md)


async def _get(m: Manager, md: list[tuple[str, str]]) -> Any:
    return await m.api.GetJob(pb.GetJobRequest(id="00000000-0000-0000-0000-000000000000"), metadata=md)


async def _list(m: Manager, md: list[tuple[str, str]]) -> Any:
    return await m.api.ListJobs(pb.ListJobsRequest(), metadata=md)


async def _watch(m: Manager, md: list[tuple[str, str]]) -> Any:
    call = m.api.WatchJob(pb.WatchJobRequest(id="00000000-0000-0000-0000-000000000000"), metadata=md)
    return await call.read()


async def _cancel(m: Manager, md: list[tuple[str, str]]) -> Any:
    return await m.api.CancelJob(pb.CancelJobRequest(id="00000000-0000-0000-0000-000000000000"), metadata=md)


async def _workers(m: Manager, md: list[tuple[str, str]]) -> Any:
    return await m.api.ListWorkers(pb.ListWorkersRequest(), metadata=md)


async def _connect(m: Manager, md: list[tuple[str, str]]) -> Any:
    call = pb_grpc.WorkerServiceStub(m.channel).Connect(metadata=md)
    await call.write(pb.WorkerMessage(hello=pb.Hello(worker_id="matrix-worker", targets=["db1"], slots=1)))
    first = await call.read()
    call.cancel()
    return first


# What an authorized call of each RPC answers here: NOT_FOUND for the made-up job id is "let through".
RPCS: dict[str, tuple[Call, Role, grpc.StatusCode]] = {
    "CreateMaintenance": (_create, Role.CLIENT, OK),
    "GetJob": (_get, Role.CLIENT, grpc.StatusCode.NOT_FOUND),
    "ListJobs": (_list, Role.CLIENT, OK),
    "WatchJob": (_watch, Role.CLIENT, grpc.StatusCode.NOT_FOUND),
    "CancelJob": (_cancel, Role.CLIENT, grpc.StatusCode.NOT_FOUND),
    "ListWorkers": (_workers, Role.CLIENT, OK),
    "Connect": (_connect, Role.WORKER, OK),
}
CREDENTIALS: dict[str, list[tuple[str, str]]] = {
    "none": [],
    "wrong": auth("not-a-token"),
    "client": auth(CLIENT_TOKEN),
    "worker": auth(WORKER_TOKEN),
}


async def _status(call: Call, m: Manager, md: list[tuple[str, str]]) -> grpc.StatusCode:
    try:
        await asyncio.wait_for(call(m, md), 5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return OK


def _expected(role: Role, allowed: grpc.StatusCode, credential: str) -> grpc.StatusCode:
    if credential in ("none", "wrong"):
        return UNAUTHENTICATED
    return allowed if credential == role.value else DENIED


async def test_authorization_matrix_and_refused_calls_change_nothing(tmp_path: Path) -> None:
    async with running_manager(tmp_path, auth=POLICY) as m:
        seen: dict[tuple[str, str], grpc.StatusCode] = {}
        for rpc, (call, _, _) in RPCS.items():
            for credential, md in CREDENTIALS.items():
                seen[(rpc, credential)] = await _status(call, m, md)
        expected = {
            (rpc, credential): _expected(role, allowed, credential)
            for rpc, (_, role, allowed) in RPCS.items()
            for credential in CREDENTIALS
        }
        assert seen == expected
        # Only the one authorized CreateMaintenance created anything.
        jobs = await m.api.ListJobs(pb.ListJobsRequest(), metadata=auth(ROTATED_CLIENT_TOKEN))
        assert [j.type for j in jobs.jobs if not j.parent_id] == ["database_maintenance_parent"]
        # Health stays open, and so does reflection (on by default).
        health = health_pb2_grpc.HealthStub(m.channel)
        assert (
            await health.Check(health_pb2.HealthCheckRequest())
        ).status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(m.channel)
        replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = [s.name async for reply in replies for s in reply.list_services_response.service]
        assert "dbmaint.v1.MaintenanceService" in services


async def test_reflection_can_be_switched_off(tmp_path: Path) -> None:
    async with running_manager(tmp_path, reflection=False) as m:
        reflection = reflection_pb2_grpc.ServerReflectionStub(m.channel)
        # Nothing is written: a write racing the UNIMPLEMENTED would make grpcio report INTERNAL (grpc/grpc#36066).
        call = reflection.ServerReflectionInfo()
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_is_on_for_loopback_and_off_elsewhere_unless_set() -> None:
    assert parse_config(["--listen", "127.0.0.1:50051"], {}).serves_reflection
    assert parse_config(["--listen", "localhost:50051"], {}).serves_reflection
    assert not parse_config(["--listen", "0.0.0.0:50051"], {}).serves_reflection
    assert not parse_config(["--listen", "db-manager.internal:50051"], {}).serves_reflection
    assert parse_config(["--listen", "0.0.0.0:50051"], {"DBMAINT_REFLECTION": "on"}).serves_reflection
    assert not parse_config(["--listen", "127.0.0.1:50051", "--reflection", "off"], {}).serves_reflection
