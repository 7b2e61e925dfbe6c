"""The scale run: one parent of 10,000 children (100 small targets x the four operations repeated 25 times)
on a manager and four workers (the ``scale`` tier: two workers of eight slots).

Measured: the ``CreateMaintenance`` RPC latency, the time to the parent's terminal status (from the create
call), the manager's peak RSS (``VmHWM`` of /proc/<pid>/status at the end, plus the largest ``VmRSS`` seen by
sampling every 100 ms), and the assignment latency computed from the job records (see ``assignment_latency``).
Once the parent is terminal (every child holds its result: the largest answer): ``GetJob`` of the parent
(``GETJOB_CALLS`` calls, each timed; its serialized size), and ``dbmaint get`` of the parent as a fresh process
(process start included, output to a file), and the manager's dispatch-gap histogram.
"""

from __future__ import annotations

import re
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import ops
from bench.dbmaint_runner import dispatch_gap
from bench.fleet import DbmaintFleet, all_children, create, dbmaint_fleet, seconds, watch_until_terminal
from bench.model import RunResult, percentile
from bench.procs import CpuMeter, memory_kib, timed_run
from bench.workload import Fleet
from dbmaint.v1 import maintenance_pb2 as pb

REPEATS = 25
DEFAULT_WORKERS = 4
DEFAULT_TIMEOUT = 1800.0
RSS_SAMPLE_INTERVAL = 0.1
GETJOB_CALLS = 3
CLI_TIMEOUT = 300.0
LATENCY_NOTE = (
    "assignment latency as the manager records it: a child's started_at (set when the manager assigns it) "
    "minus the moment it became runnable, from GetJob's timestamps. 'as specified': runnable = max(parent "
    "created_at, finished_at of the previous child on the target), so it includes waiting for a free worker "
    "slot; 'slot-aware': runnable also waits until the worker that got the child had a free slot; 'worker log': "
    "slot-aware, but received = the time of the worker's 'started <operation>' log line (ms resolution)"
)
# worker_service's log line when an assignment arrives and its operation starts (see worker_service.logs).
WORKER_STARTED = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*\[[^]]*job=(?P<job>[0-9a-f-]+) [^]]*\] started \w+ "
)


@dataclass(frozen=True)
class ChildTimes:
    target: str
    position: int
    worker: str
    created: float
    started: float
    finished: float
    received: float | None = None  # from the worker's log


def worker_received(log_lines: Iterable[str]) -> dict[str, float]:
    """job id -> epoch seconds of the worker's 'started <operation>' line (the last one, if retried)."""
    found: dict[str, float] = {}
    for line in log_lines:
        match = WORKER_STARTED.match(line)
        if match:
            # logging's asctime is local time without a zone: a naive datetime's timestamp() reads it so.
            found[match["job"]] = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return found


def child_times(parent: pb.Job, children: Iterable[pb.Job], received: dict[str, float]) -> list[ChildTimes]:
    parent_created = seconds(parent.created_at) or 0.0
    found = []
    for child in children:
        started, finished = seconds(child.started_at), seconds(child.finished_at)
        if started is None or finished is None:
            continue
        times = ChildTimes(child.target, child.position, child.worker_id, parent_created, started, finished)
        found.append(replace(times, received=received.get(child.id)))
    return found


def assignment_latency(times: Sequence[ChildTimes], slots: dict[str, int]) -> dict[str, list[float]]:
    """Per child, seconds from "runnable" to received, by three definitions:

    * ``target_ready`` (as the issue specifies): runnable = max(parent created_at, finished_at of the previous
      child on the same target), received = started_at. This includes the time the child waited for a free
      worker slot (100 targets, 4 slots).
    * ``target_and_slot_ready``: runnable = the later of that and the moment the worker that got the child
      last had a slot free (the last time its running count dropped below its slots, before the child
      started): how long the manager left a ready child and a free slot of its eventual worker unmatched.
    * ``worker_log``: runnable as ``target_and_slot_ready``, received = the worker's log line (children whose
      line was found only).
    """
    previous_finish: dict[str, float] = {}
    target_ready: dict[tuple[str, int], float] = {}
    for child in sorted(times, key=lambda c: (c.target, c.position)):
        target_ready[(child.target, child.position)] = max(child.created, previous_finish.get(child.target, 0.0))
        previous_finish[child.target] = child.finished

    slot_free: dict[tuple[str, int], float] = {}
    by_worker: dict[str, list[ChildTimes]] = {}
    for child in times:
        by_worker.setdefault(child.worker, []).append(child)
    for worker, assigned in by_worker.items():
        capacity = slots.get(worker, 1)
        # Finishes before starts at the same instant; the running count only drops below capacity on a finish.
        events = sorted(
            [(c.finished, 0, c) for c in assigned] + [(c.started, 1, c) for c in assigned],
            key=lambda e: (e[0], e[1]),
        )
        running, free_since = 0, 0.0
        for moment, kind, child in events:
            if kind == 0:
                if running == capacity:
                    free_since = moment
                running -= 1
            else:
                slot_free[(child.target, child.position)] = free_since
                running += 1

    first: list[float] = []
    both: list[float] = []
    logged: list[float] = []
    for child in times:
        key = (child.target, child.position)
        runnable = max(target_ready[key], slot_free.get(key, 0.0))
        first.append(child.started - target_ready[key])
        both.append(child.started - runnable)
        if child.received is not None:
            logged.append(child.received - runnable)
    return {"target_ready": first, "target_and_slot_ready": both, "worker_log": logged}


def first_starts(times: Sequence[ChildTimes]) -> dict[str, float] | None:
    """Seconds from the parent's creation to each target's first started child: how evenly the manager
    spreads one parent's work over its targets (all of them are runnable at once)."""
    first: dict[str, float] = {}
    for child in times:
        first[child.target] = min(first.get(child.target, child.started), child.started)
    waits = [started - times[0].created for started in first.values()] if times else []
    if not waits:
        return None
    return {
        "targets": len(waits),
        "p50_s": round(percentile(waits, 0.5), 3),
        "max_s": round(max(waits), 3),
    }


def latency_summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "count": len(values),
        "p50_ms": round(1000 * percentile(values, 0.50), 3),
        "p90_ms": round(1000 * percentile(values, 0.90), 3),
        "p99_ms": round(1000 * percentile(values, 0.99), 3),
        "max_ms": round(1000 * max(values), 3),
        "min_ms": round(1000 * min(values), 3),
        "zero_share": round(sum(1 for v in values if v == 0) / len(values), 3),
    }


def cli_argv(*args: str) -> list[str]:
    """``dbmaint`` (the console script beside this Python, as an operator runs it; else ``python -m``)."""
    script = Path(sys.executable).with_name("dbmaint")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "dbmaint.cli.main", *args]


def parent_reads(running: DbmaintFleet, parent_id: str, workdir: Path) -> tuple[pb.GetJobResponse, dict[str, Any]]:
    """Time ``GetJob`` of the parent (``GETJOB_CALLS`` times; the median counts) and ``dbmaint get`` of it (one
    fresh process, to its exit). Returns the last reply and the figures."""
    times = []
    reply = pb.GetJobResponse()
    for _ in range(GETJOB_CALLS):
        began = time.perf_counter()
        reply = running.stub.GetJob(pb.GetJobRequest(id=parent_id), timeout=120)
        times.append(time.perf_counter() - began)
    argv = cli_argv("--manager", running.address, "--timeout", "120", "get", parent_id)
    cli_seconds, cli_code = timed_run("dbmaint-get", argv, workdir / "dbmaint-get.log", CLI_TIMEOUT)
    figures = {
        "getjob_seconds": [round(t, 4) for t in times],
        "getjob_median_seconds": round(statistics.median(times), 4),
        "getjob_bytes": reply.ByteSize(),
        "getjob_children": len(reply.children),
        "cli_get_seconds": round(cli_seconds, 3),
        "cli_get_exit_code": cli_code,
    }
    return reply, figures


class _RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(RSS_SAMPLE_INTERVAL):
            self.peak_kib = max(self.peak_kib, memory_kib(self.pid).get("VmRSS", 0))

    def stop(self) -> int:
        self._stop_event.set()
        self.join(5)
        return self.peak_kib


def run_once(
    fleet: Fleet,
    workdir: Path,
    run: int,
    workers: int = DEFAULT_WORKERS,
    slots: int | None = None,
    repeats: int = REPEATS,
    timeout: float = DEFAULT_TIMEOUT,
) -> RunResult:
    workdir.mkdir(parents=True, exist_ok=True)
    targets_file = fleet.write_targets_file(workdir / "targets.txt")
    names = list(fleet.targets)
    operations = list(ops.OPERATIONS) * repeats
    children = len(names) * len(operations)
    with dbmaint_fleet(workdir, targets_file, workers, slots) as running:
        infos = running.wait_ready()
        assert running.manager is not None
        manager_pid = running.manager.pid
        rss_before = memory_kib(manager_pid)
        sampler = _RssSampler(manager_pid)
        sampler.start()
        stub = running.stub
        meter = CpuMeter(running.pids())
        meter.start()
        started = time.perf_counter()
        response = create(stub, names, operations)
        created = time.perf_counter()
        status, finished = watch_until_terminal(stub, response.parent.id, timeout)
        cpu = meter.stop()
        sampled_peak = sampler.stop()
        rss_after = memory_kib(manager_pid)
        reply, reads = parent_reads(running, response.parent.id, workdir)
        child_jobs = all_children(running.stub, response.parent.id)
        gap = dispatch_gap(running)
    completed = [c for c in child_jobs if c.status == pb.JOB_STATUS_COMPLETED]
    received = worker_received(line for worker in running.workers.values() for line in worker.log_lines())
    times = child_times(reply.job, child_jobs, received)
    latencies = assignment_latency(times, {i.worker_id: int(i.slots) for i in infos})
    error = (
        "" if status == pb.JOB_STATUS_COMPLETED else f"parent ended {pb.JobStatus.Name(status)}: {reply.job.error}"
    )
    details: dict[str, Any] = {
        "setup": {"workers": workers, "slots": sorted({int(i.slots) for i in infos}), "targets": len(names)},
        "operations_per_target": len(operations),
        "parent_id": response.parent.id,
        "parent_status": pb.JobStatus.Name(status),
        "create_seconds": round(created - started, 4),
        "other_cpu_seconds": meter.other_seconds,
        "finish_seconds": round(finished - started, 4),
        "parent_reads": reads,
        "dispatch_gap": gap,
        "manager_rss_kib": {
            "before_create": rss_before.get("VmRSS"),
            "peak_sampled": sampled_peak,
            "at_end": rss_after.get("VmRSS"),
            "VmHWM_at_end": rss_after.get("VmHWM"),
        },
        "assignment_latency": {name: latency_summary(values) for name, values in latencies.items()},
        "assignment_latency_note": LATENCY_NOTE,
        "first_start_per_target": first_starts(times),
        "retried_children": sum(1 for c in child_jobs if c.attempt > 1),
        "exit_codes": running.exit_codes,
        "log_findings": running.findings(),
    }
    return RunResult(
        runner="dbmaint",
        size="scale",
        run=run,
        children=children,
        completed=len(completed),
        wall_seconds=finished - started,
        cpu_seconds=cpu,
        operation_seconds=sum(c.result.duration.ToTimedelta().total_seconds() for c in completed),
        vacuum_bytes_before=sum(c.result.bytes_before for c in completed if c.operation == pb.OPERATION_VACUUM),
        vacuum_bytes_after=sum(c.result.bytes_after for c in completed if c.operation == pb.OPERATION_VACUUM),
        error=error,
        details=details,
    )
