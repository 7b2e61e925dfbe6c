"""NUL characters from a worker process and from clients, against a real manager process on PostgreSQL (issue 9,
scenario 2). Before the fix a Result.error holding a NUL raised psycopg's DataError in the commit loop and the
manager process exited; NUL ids answered INTERNAL. Now the manager stays up and SERVING, the child ends with a
sanitized error, a Hello with a NUL in its worker id and every RPC with a NUL id get INVALID_ARGUMENT."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from dbmaint.local import ServiceProcess, clean_env
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.polling import wait_for
from tests.support.processes import REPO_ROOT, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)]

SERVING = health_pb2.HealthCheckResponse.SERVING


def _hostile_worker(fleet: Cluster, name: str, worker_id: str, target: str, error: str = "") -> ServiceProcess:
    """``worker_id`` and ``error`` are passed with Python escapes (a NUL cannot travel in argv)."""
    args = [
        sys.executable,
        "-m",
        "tests.e2e.hostile_worker",
        "--manager",
        fleet.address,
        "--worker-id",
        worker_id,
        "--target",
        target,
        "--error",
        error,
    ]
    env = clean_env({"PYTHONPATH": str(REPO_ROOT)})
    return fleet.launch(ServiceProcess(name, args, fleet.workdir / f"{name}.log", env))


def _manager_up(fleet: Cluster) -> bool:
    assert fleet.manager is not None
    if not fleet.manager.alive():
        raise AssertionError(f"the manager process exited:\n{fleet.manager.log()[-4000:]}")
    return fleet.health() == SERVING


def _code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def test_nul_characters_from_a_worker_process_and_from_clients_do_not_stop_the_manager(fleet: Cluster) -> None:
    fleet.start_manager()
    created = fleet.create(["t1"], [pb.OPERATION_VACUUM])
    child_id = created.children[0].id
    worker = _hostile_worker(fleet, "hostile", "hostile-1", "t1", error="boom\\x00after the nul\\x1b[0m")
    wait_for(lambda: f"result {child_id}" in worker.log(), timeout=30, message=lambda: worker.log())

    def failed() -> pb.Job | None:
        assert _manager_up(fleet)
        child = fleet.get(child_id).job
        return child if child.status == pb.JOB_STATUS_FAILED else None

    child = wait_for(failed, timeout=30, message=lambda: f"the child did not fail\n{fleet.logs()}")
    assert child.error == "boom\ufffdafter the nul\ufffd[0m"
    assert child.result.engine == "boom\ufffdafter the nul\ufffd[0m"[:64]
    assert list(child.result.notes) == ["boom\ufffdafter the nul\ufffd[0m"]
    assert fleet.get(created.parent.id).job.status == pb.JOB_STATUS_FAILED

    impostor = _hostile_worker(fleet, "impostor", "evil\\x00worker", "t1")
    wait_for(lambda: "ended" in impostor.log(), timeout=30, message=lambda: impostor.log())
    assert "ended INVALID_ARGUMENT hello.worker_id:" in impostor.log(), impostor.log()

    stub = fleet.stub
    calls: list[tuple[str, Callable[[str], Any]]] = [
        ("id", lambda bad: stub.GetJob(pb.GetJobRequest(id=bad), timeout=10)),
        ("id", lambda bad: stub.CancelJob(pb.CancelJobRequest(id=bad), timeout=10)),
        ("id", lambda bad: next(iter(stub.WatchJob(pb.WatchJobRequest(id=bad), timeout=10)))),
        ("parent_id", lambda bad: stub.ListJobs(pb.ListJobsRequest(parent_id=bad), timeout=10)),
        ("worker_id", lambda bad: stub.DrainWorker(pb.DrainWorkerRequest(worker_id=bad), timeout=10)),
    ]
    for field, call in calls:
        for bad in (f"{child_id[:8]}\x00{child_id[8:]}", "\x00"):
            code, details = _code(lambda: call(bad))  # noqa: B023
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (field, bad, code, details)
            assert details.startswith(f"{field}: control character U+0000"), details

    assert _manager_up(fleet)
    for service in ("dbmaint.v1.WorkerService", "dbmaint.v1.MaintenanceService"):
        assert fleet.health(service) == SERVING
    assert worker.alive(), "the hostile worker's stream was ended"
