"""End to end with real processes over TCP: a manager and workers started as subprocesses, killed for real."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from itertools import pairwise
from pathlib import Path

import grpc
import pytest

from dbmaint.local import free_port
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.polling import wait_for
from tests.support.processes import Cluster
from tests.support.targets import integrity_ok, make_sqlite_target, sqlite_stats

# The whole suite runs with the job store on SQLite and on PostgreSQL.
pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("store_backend", ["sqlite", "postgresql"], indirect=True)]

ALL_OPERATIONS = [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE, pb.OPERATION_REINDEX, pb.OPERATION_OPTIMIZE]
COMPLETED = pb.JOB_STATUS_COMPLETED
RUNNING = pb.JOB_STATUS_RUNNING


def _targets(tmp_path: Path, *names: str, rows: int = 20_000) -> dict[str, Path]:
    paths = {name: tmp_path / "targets" / f"{name}.db" for name in names}
    for path in paths.values():
        make_sqlite_target(path, rows=rows)
    return paths


def test_parent_over_two_targets_with_all_operations_completes(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "alpha", "beta")
    before = {name: sqlite_stats(path) for name, path in targets.items()}
    fleet.start_manager()
    fleet.start_worker("w1", targets)
    fleet.start_worker("w2", targets)

    created = fleet.create(list(targets), ALL_OPERATIONS)
    assert created.created and len(created.children) == 8
    assert {c.type for c in created.children} == {"database_maintenance_operation"}
    done = fleet.wait_status(created.parent.id, COMPLETED, pb.JOB_STATUS_FAILED)

    assert done.job.status == COMPLETED, fleet.describe(created.parent.id)
    assert done.job.progress.succeeded == 8 and done.job.progress.failed == 0
    for child in done.children:
        assert child.status == COMPLETED
        assert child.attempt == 1, "each child ran exactly once"
        assert child.worker_id in {"w1", "w2"}
        assert child.result.engine == "sqlite"
    for name, path in targets.items():
        after = sqlite_stats(path)
        assert after.size < before[name].size, f"{name} did not shrink"
        assert after.freelist_count == 0
        assert integrity_ok(path)
        vacuum = next(c for c in done.children if c.target == name and c.operation == pb.OPERATION_VACUUM)
        assert vacuum.result.bytes_after < vacuum.result.bytes_before
        # One operation at a time per target, in the order requested.
        mine = sorted((c for c in done.children if c.target == name), key=lambda c: c.position)
        assert [c.operation for c in mine] == ALL_OPERATIONS
        for earlier, later in pairwise(mine):
            assert earlier.finished_at.ToDatetime() <= later.started_at.ToDatetime()


def test_list_workers_shows_which_worker_injects_faults_and_the_manager_warns(
    fleet: Cluster, tmp_path: Path
) -> None:
    targets = _targets(tmp_path, "alpha", rows=100)
    fleet.start_manager()
    fleet.start_worker("w-faulty", targets, faults="slow:vacuum=1")
    fleet.start_worker("w-plain", targets)

    workers = fleet.stub.ListWorkers(pb.ListWorkersRequest(), timeout=5).workers

    assert {w.worker_id: w.faults_active for w in workers} == {"w-faulty": True, "w-plain": False}
    assert fleet.manager is not None
    warnings = [line for line in fleet.manager.log().splitlines() if "FAULT INJECTION" in line]
    assert len(warnings) == 1 and "w-faulty" in warnings[0] and "WARNING" in warnings[0]


def test_worker_killed_mid_vacuum_child_reruns_elsewhere(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "gamma")
    fleet.start_manager()
    first = fleet.start_worker("w1", targets, faults="slow:vacuum=30")
    created = fleet.create(["gamma"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
    vacuum_id = created.children[0].id
    running = fleet.wait_child(created.parent.id, lambda c: c.id == vacuum_id and c.status == RUNNING)
    assert running.worker_id == "w1"
    wait_for(lambda: "started vacuum" in first.log(), timeout=20, message=lambda: first.log())  # mid-VACUUM
    fleet.start_worker("w2", targets)  # no fault: it finishes the re-run quickly

    first.kill9()
    done = fleet.wait_status(created.parent.id, COMPLETED, pb.JOB_STATUS_FAILED)

    assert done.job.status == COMPLETED, fleet.describe(created.parent.id)
    vacuum = next(c for c in done.children if c.id == vacuum_id)
    assert vacuum.attempt == 2 and vacuum.worker_id == "w2"
    assert integrity_ok(targets["gamma"])
    assert sqlite_stats(targets["gamma"]).freelist_count == 0


def test_manager_killed_mid_run_restarts_and_loses_nothing(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "delta", "epsilon")
    manager = fleet.start_manager()
    workers = [fleet.start_worker(w, targets, faults="slow:vacuum=3") for w in ("w1", "w2")]
    created = fleet.create(list(targets), ALL_OPERATIONS)
    # Kill while both slow VACUUMs really run on the workers (RUNNING is stored before the assignment is sent).
    wait_for(lambda: all("started vacuum" in w.log() for w in workers), timeout=20, message=fleet.logs)

    manager.kill9()
    fleet.start_manager("--lease-timeout", "15")
    done = fleet.wait_status(created.parent.id, COMPLETED, pb.JOB_STATUS_FAILED, timeout=90)

    assert done.job.status == COMPLETED, fleet.describe(created.parent.id)
    assert [c.status for c in done.children] == [COMPLETED] * 8
    # The children that were running when the manager died kept their attempt: the workers finished them and
    # reported to the new manager, nothing ran twice.
    assert [c.attempt for c in done.children] == [1] * 8, fleet.describe(created.parent.id)
    assert done.job.progress.succeeded == 8


def test_cancel_mid_run_interrupts_the_statement(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "zeta")
    fleet.start_manager()
    fleet.start_worker("w1", targets, faults="slow:vacuum=120")
    created = fleet.create(["zeta"], ALL_OPERATIONS)
    fleet.wait_child(created.parent.id, lambda c: c.status == RUNNING)

    answer = fleet.stub.CancelJob(
        pb.CancelJobRequest(id=created.parent.id, reason="operator said stop"), timeout=10
    )
    assert answer.job.cancel_requested
    done = fleet.wait_status(created.parent.id, pb.JOB_STATUS_CANCELLED, timeout=20)

    assert [c.status for c in done.children] == [pb.JOB_STATUS_CANCELLED] * 4
    assert done.children[0].started_at.seconds > 0, "the vacuum had started and was interrupted"
    assert all(c.started_at.seconds == 0 for c in done.children[1:]), "pending children never ran"
    assert integrity_ok(targets["zeta"])
    with pytest.raises(grpc.RpcError) as refused:
        fleet.stub.CancelJob(pb.CancelJobRequest(id=created.parent.id), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_worker_sigterm_drains_its_running_child(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "eta")
    fleet.start_manager()
    worker = fleet.start_worker("w1", targets, faults="slow:vacuum=3")
    created = fleet.create(["eta"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
    fleet.wait_child(created.parent.id, lambda c: c.status == RUNNING)
    # RUNNING is stored before the assignment is sent: wait until the worker really runs it (an assignment
    # that crosses the drain notice is re-queued instead, which is another test's subject).
    wait_for(lambda: "started vacuum" in worker.log(), timeout=20, message=lambda: worker.log())

    assert worker.terminate_and_wait(timeout=30) == 0, worker.log()

    reply = fleet.get(created.parent.id)
    vacuum, analyze = reply.children
    assert vacuum.status == COMPLETED and vacuum.worker_id == "w1" and vacuum.attempt == 1
    assert analyze.status == pb.JOB_STATUS_PENDING, "a draining worker takes no new work"
    workers = fleet.stub.ListWorkers(pb.ListWorkersRequest(), timeout=5)
    assert "w1" not in {w.worker_id for w in workers.workers}

    fleet.start_worker("w2", targets)
    assert fleet.wait_status(created.parent.id, COMPLETED).job.progress.succeeded == 2


def test_dbmaint_workers_drain_lets_the_running_child_finish_and_the_worker_exit(
    fleet: Cluster, tmp_path: Path
) -> None:
    targets = _targets(tmp_path, "kappa")
    fleet.start_manager()
    worker = fleet.start_worker("w1", targets, faults="slow:vacuum=3")
    created = fleet.create(["kappa"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
    wait_for(lambda: "started vacuum" in worker.log(), timeout=20, message=lambda: worker.log())

    drained = subprocess.run(
        [str(Path(sys.executable).parent / "dbmaint"), "--manager", fleet.address, "workers", "--drain", "w1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert drained.returncode == 0 and "w1 is draining" in drained.stdout, drained.stderr

    assert worker.wait(timeout=30) == 0, worker.log()
    vacuum, analyze = fleet.get(created.parent.id).children
    assert vacuum.status == COMPLETED and vacuum.attempt == 1 and vacuum.worker_id == "w1"
    assert analyze.status == pb.JOB_STATUS_PENDING, "a draining worker takes no new work"
    assert "the manager asks this worker to drain" in worker.log()

    fleet.start_worker("w2", targets)
    assert fleet.wait_status(created.parent.id, COMPLETED).job.progress.succeeded == 2


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def test_both_processes_serve_prometheus_metrics(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "lambda", rows=2_000)
    manager_port, worker_port = free_port(), free_port()
    fleet.start_manager("--metrics-listen", f"127.0.0.1:{manager_port}")
    fleet.start_worker("w1", targets, "--metrics-listen", f"127.0.0.1:{worker_port}")
    created = fleet.create(["lambda"], [pb.OPERATION_VACUUM])
    fleet.wait_status(created.parent.id, COMPLETED)

    manager = _scrape(manager_port)
    assert (
        'dbmaint_jobs_finished_total{operation="vacuum",status="completed",'
        'type="database_maintenance_operation"} 1.0' in manager
    )
    assert "dbmaint_workers_connected 1.0" in manager
    worker = _scrape(worker_port)
    assert 'dbmaint_worker_operations_total{engine="sqlite",operation="vacuum",status="completed"} 1.0' in worker
    assert 'dbmaint_worker_operation_duration_seconds_count{engine="sqlite",operation="vacuum"} 1.0' in worker


def _json_lines(text: str) -> list[dict[str, object]]:
    # gRPC's C core writes its own plain lines to stderr; every line Python logs is one JSON object.
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_carry_the_job_fields_on_every_line_about_a_job(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "mu", rows=2_000)
    targets["nu"] = tmp_path / "targets" / "missing.db"  # fails: the file does not exist
    fleet.start_manager("--log-format", "json")
    worker = fleet.start_worker("w1", targets, "--log-format", "json")
    created = fleet.create(["mu", "nu"], [pb.OPERATION_VACUUM])
    fleet.wait_status(created.parent.id, pb.JOB_STATUS_FAILED)
    children = {c.target: c for c in fleet.get(created.parent.id).children}

    fields = {"job_id", "parent_id", "attempt", "worker_id", "target"}
    worker_lines = _json_lines(worker.log())
    about_jobs = [line for line in worker_lines if "job_id" in line]
    assert {str(line["job_id"]) for line in about_jobs} == {c.id for c in children.values()}
    for line in about_jobs:
        assert fields <= set(line), line
        assert line["parent_id"] == created.parent.id and line["worker_id"] == "w1"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in worker_lines)
    assert fleet.manager is not None
    failed = [line for line in _json_lines(fleet.manager.log()) if line.get("job_id") == children["nu"].id]
    assert failed and fields <= set(failed[0]) and failed[0]["target"] == "nu", failed


def test_unserved_target_waits_visibly_until_a_worker_serves_it(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "theta", "iota")
    fleet.start_manager()
    fleet.start_worker("w1", {"theta": targets["theta"]})
    created = fleet.create(["theta", "iota"], [pb.OPERATION_ANALYZE])

    theta_done = fleet.wait_child(created.parent.id, lambda c: c.target == "theta" and c.status == COMPLETED)
    assert theta_done.worker_id == "w1"
    iota = next(c for c in fleet.get(created.parent.id).children if c.target == "iota")
    assert iota.status == pb.JOB_STATUS_PENDING
    assert "no connected worker serves target 'iota'" in iota.waiting_reason
    assert list(fleet.stub.ListWorkers(pb.ListWorkersRequest(), timeout=5).unserved_targets) == ["iota"]

    fleet.start_worker("w2", {"iota": targets["iota"]})
    assert fleet.wait_status(created.parent.id, COMPLETED).job.status == COMPLETED


def test_manager_sigterm_exits_zero_and_workers_come_back(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "kappa")
    manager = fleet.start_manager()
    worker = fleet.start_worker("w1", targets)

    assert manager.terminate_and_wait(timeout=30) == 0, manager.log()
    assert worker.alive(), "a worker outlives its manager and reconnects"

    fleet.start_manager()
    fleet.wait_worker("w1")
    created = fleet.create(["kappa"], [pb.OPERATION_OPTIMIZE])
    assert fleet.wait_status(created.parent.id, COMPLETED).job.status == COMPLETED


def test_idempotent_create_returns_the_same_parent(fleet: Cluster, tmp_path: Path) -> None:
    fleet.start_manager()
    first = fleet.create(["lambda"], [pb.OPERATION_VACUUM], request_id="deploy-42")
    again = fleet.create(["lambda"], [pb.OPERATION_VACUUM], request_id="deploy-42")
    assert first.created and not again.created
    assert again.parent.id == first.parent.id
    assert [c.id for c in again.children] == [c.id for c in first.children]
    listed = fleet.stub.ListJobs(pb.ListJobsRequest(type="database_maintenance_parent"), timeout=5)
    assert [j.id for j in listed.jobs] == [first.parent.id]


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"targets": []}, grpc.StatusCode.INVALID_ARGUMENT, "targets"),
        (
            {"targets": ["ok"], "operations": [pb.OPERATION_UNSPECIFIED]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "operations[0]",
        ),
        ({"targets": ["ok"], "operations": [42]}, grpc.StatusCode.INVALID_ARGUMENT, "operations[0]"),
        ({"targets": ["../etc/passwd"]}, grpc.StatusCode.INVALID_ARGUMENT, "targets[0]"),
        ({"targets": ["a", "a"]}, grpc.StatusCode.INVALID_ARGUMENT, "targets[1]"),
        ({"targets": [f"t{i}" for i in range(1001)]}, grpc.StatusCode.INVALID_ARGUMENT, "targets"),
        ({"targets": ["ok"], "request_id": "bad id with spaces"}, grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ],
)
def test_bad_create_requests_are_refused_with_the_field_named(
    fleet: Cluster, request_fields: dict[str, object], code: grpc.StatusCode, field: str
) -> None:
    fleet.start_manager()
    with pytest.raises(grpc.RpcError) as refused:
        fleet.stub.CreateMaintenance(pb.CreateMaintenanceRequest(**request_fields), timeout=10)  # type: ignore[arg-type]
    assert refused.value.code() == code
    assert refused.value.details().startswith(f"{field}:"), refused.value.details()
    assert not fleet.stub.ListJobs(pb.ListJobsRequest(), timeout=5).jobs, "nothing was stored"
    assert fleet.manager is not None and fleet.manager.alive()


def test_unknown_and_malformed_ids(fleet: Cluster) -> None:
    fleet.start_manager()
    for call, request in (
        (fleet.stub.GetJob, pb.GetJobRequest(id="00000000-0000-0000-0000-000000000000")),
        (fleet.stub.CancelJob, pb.CancelJobRequest(id="no-such-job")),
    ):
        with pytest.raises(grpc.RpcError) as missing:
            call(request, timeout=5)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as empty:
        fleet.stub.GetJob(pb.GetJobRequest(id=""), timeout=5)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    watch = fleet.stub.WatchJob(pb.WatchJobRequest(id="nope"), timeout=5)
    with pytest.raises(grpc.RpcError) as unknown_watch:
        next(iter(watch))
    assert unknown_watch.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as legacy:
        fleet.stub.ListJobs(pb.ListJobsRequest(type="database_maintenance"), timeout=5)
    assert legacy.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watch_streams_snapshot_then_changes_until_terminal(fleet: Cluster, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "mu")
    fleet.start_manager()
    created = fleet.create(["mu"], [pb.OPERATION_ANALYZE, pb.OPERATION_OPTIMIZE])
    events = fleet.stub.WatchJob(pb.WatchJobRequest(id=created.parent.id), timeout=60)
    first = next(events)
    assert first.WhichOneof("event") == "snapshot"
    assert len(first.snapshot.children) == 2
    fleet.start_worker("w1", targets)
    changes = [e.changed for e in events]  # ends by itself when the parent is terminal
    assert changes[-1].id == created.parent.id and changes[-1].status == COMPLETED
    seen = {(c.id, c.status) for c in changes}
    for child in created.children:
        assert (child.id, RUNNING) in seen and (child.id, COMPLETED) in seen
