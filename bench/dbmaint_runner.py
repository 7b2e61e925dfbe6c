"""The dbmaint runner: one manager and N workers (real processes, real TCP) maintain the restored fleet.

Per run: a fresh job store, the processes started and ready (health SERVING, every worker in ListWorkers),
then the clock runs from the ``CreateMaintenance`` call to the moment ``WatchJob`` shows the parent
terminal. CPU: the manager's and workers' process trees (``/proc``) and this process (the client), from just
before ``CreateMaintenance`` to just after the terminal status. The watch is ``job_only`` (the parent's changes)
unless ``job_only=False``: then it is one full watcher of every child's change, as grpcurl watches. After the
run, the manager's ``dbmaint_dispatch_gap_seconds`` histogram is read (``dispatch_gap`` in the details).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import ops
from bench.fleet import DbmaintFleet, all_children, create, dbmaint_fleet, watch_until_terminal
from bench.model import RunResult, histogram_quantile
from bench.procs import CpuMeter
from bench.workload import Fleet
from dbmaint.v1 import maintenance_pb2 as pb

DEFAULT_TIMEOUT = 1800.0
DISPATCH_GAP = "dbmaint_dispatch_gap_seconds"


def dispatch_gap(running: DbmaintFleet) -> dict[str, Any]:
    """The manager's dispatch-gap histogram: count, p50 and p99 in ms (from the buckets, see
    ``histogram_quantile``), and the buckets; an ``error`` instead when it could not be read."""
    try:
        buckets = running.histogram(DISPATCH_GAP)
    except OSError as error:
        return {"error": f"{type(error).__name__}: {error}"}
    p50, p99 = histogram_quantile(buckets, 0.50), histogram_quantile(buckets, 0.99)
    return {
        "count": int(buckets[-1][1]) if buckets else 0,
        "p50_ms": None if p50 is None else round(1000 * p50, 4),
        "p99_ms": None if p99 is None else round(1000 * p99, 4),
        "buckets": [[le, count] for le, count in buckets],
    }


def run_once(
    fleet: Fleet,
    workdir: Path,
    size: str,
    run: int,
    workers: int = 2,
    slots: int | None = None,
    operations: Sequence[str] = ops.OPERATIONS,
    timeout: float = DEFAULT_TIMEOUT,
    job_only: bool = True,
    runner: str = "dbmaint",
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
        status, finished = watch_until_terminal(stub, response.parent.id, timeout, job_only)
        wall = finished - started
        cpu = meter.stop()
        reply = stub.GetJob(pb.GetJobRequest(id=response.parent.id), timeout=60)
        child_jobs = all_children(stub, response.parent.id)
        gap = dispatch_gap(running)
    findings = running.findings()
    completed = [c for c in child_jobs if c.status == pb.JOB_STATUS_COMPLETED]
    vacuums = [c for c in completed if c.operation == pb.OPERATION_VACUUM]
    error = (
        "" if status == pb.JOB_STATUS_COMPLETED else f"parent ended {pb.JobStatus.Name(status)}: {reply.job.error}"
    )
    return RunResult(
        runner=runner,
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
            "setup": {
                "workers": workers,
                "slots": sorted({int(i.slots) for i in infos}),
                "watcher": "job_only" if job_only else "full",
            },
            "dispatch_gap": gap,
            "parent_id": response.parent.id,
            "parent_status": pb.JobStatus.Name(status),
            "children_reported": len(child_jobs),
            "create_seconds": round(created - started, 4),
            "other_cpu_seconds": meter.other_seconds,
            "retried_children": sum(1 for c in child_jobs if c.attempt > 1),
            "children_by_worker": _by_worker(child_jobs),
            "exit_codes": running.exit_codes,
            "log_findings": findings,
        },
    )


def _by_worker(children: Sequence[pb.Job]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for child in children:
        counts[child.worker_id] = counts.get(child.worker_id, 0) + 1
    return dict(sorted(counts.items()))
