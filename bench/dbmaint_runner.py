"""The dbmaint runner: one manager and N workers (real processes, real TCP) maintain the restored fleet.

Per run: a fresh job store, the processes started and ready (health SERVING, every worker in ListWorkers),
then the clock runs from the ``CreateMaintenance`` call to the moment ``WatchJob`` shows the parent
terminal. CPU: the manager's and workers' process trees (``/proc``) and this process (the client), from just
before ``CreateMaintenance`` to just after the terminal status.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from bench import ops
from bench.fleet import create, dbmaint_fleet, watch_until_terminal
from bench.model import RunResult
from bench.procs import CpuMeter
from bench.workload import Fleet
from dbmaint.v1 import maintenance_pb2 as pb

DEFAULT_TIMEOUT = 1800.0


def run_once(
    fleet: Fleet,
    workdir: Path,
    size: str,
    run: int,
    workers: int = 2,
    slots: int | None = None,
    operations: Sequence[str] = ops.OPERATIONS,
    timeout: float = DEFAULT_TIMEOUT,
) -> RunResult:
    workdir.mkdir(parents=True, exist_ok=True)
    targets_file = fleet.write_targets_file(workdir / "targets.txt")
    names = list(fleet.targets)
    children = len(names) * len(operations)
    with dbmaint_fleet(workdir, targets_file, workers, slots) as running:
        infos = running.wait_ready()
        stub = running.stub
        meter = CpuMeter(running.pids())
        meter.start()
        started = time.perf_counter()
        response = create(stub, names, operations)
        created = time.perf_counter()
        status, finished = watch_until_terminal(stub, response.parent.id, timeout)
        wall = finished - started
        cpu = meter.stop()
        reply = stub.GetJob(pb.GetJobRequest(id=response.parent.id), timeout=60)
    findings = running.findings()
    completed = [c for c in reply.children if c.status == pb.JOB_STATUS_COMPLETED]
    vacuums = [c for c in completed if c.operation == pb.OPERATION_VACUUM]
    error = (
        "" if status == pb.JOB_STATUS_COMPLETED else f"parent ended {pb.JobStatus.Name(status)}: {reply.job.error}"
    )
    return RunResult(
        runner="dbmaint",
        size=size,
        run=run,
        children=children,
        completed=len(completed),
        wall_seconds=wall,
        cpu_seconds=cpu,
        operation_seconds=sum(c.result.duration.ToTimedelta().total_seconds() for c in completed),
        vacuum_bytes_before=sum(c.result.bytes_before for c in vacuums),
        vacuum_bytes_after=sum(c.result.bytes_after for c in vacuums),
        error=error,
        details={
            "setup": {"workers": workers, "slots": sorted({int(i.slots) for i in infos})},
            "parent_id": response.parent.id,
            "parent_status": pb.JobStatus.Name(status),
            "children_reported": len(reply.children),
            "create_seconds": round(created - started, 4),
            "other_cpu_seconds": meter.other_seconds,
            "retried_children": sum(1 for c in reply.children if c.attempt > 1),
            "children_by_worker": _by_worker(reply.children),
            "exit_codes": running.exit_codes,
            "log_findings": findings,
        },
    )


def _by_worker(children: Sequence[pb.Job]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for child in children:
        counts[child.worker_id] = counts.get(child.worker_id, 0) + 1
    return dict(sorted(counts.items()))
