"""A real dbmaint fleet for one run: a manager (``python -m manager_service``, a fresh SQLite job store) and
N workers (``python -m worker_service``, every one serving every target through ``--targets-file``), as
separate processes on free loopback ports, and a gRPC client to the manager.

``wait_ready`` returns once the manager's ``grpc.health.v1`` says SERVING and ``ListWorkers`` lists every
worker: the runners start their clock only after that. The manager serves Prometheus metrics on a loopback port
(``--metrics-listen``); ``histogram`` reads one of its histograms (e.g. ``dbmaint_dispatch_gap_seconds``).
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.procs import findings
from dbmaint.local import STOP_TIMEOUT, LocalFleet, free_port
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc

START_TIMEOUT = 60.0
# The largest page of children GetJob answers (the manager's maximum).
CHILDREN_PAGE = 5_000
TERMINAL = frozenset({pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED})
OPERATION_PROTO = {
    "vacuum": pb.OPERATION_VACUUM,
    "analyze": pb.OPERATION_ANALYZE,
    "reindex": pb.OPERATION_REINDEX,
    "optimize": pb.OPERATION_OPTIMIZE,
}


@dataclass
class DbmaintFleet(LocalFleet):
    """The benchmark's ``LocalFleet``: a manager with a metrics port, workers ``bench-worker-N`` (processes and
    logs ``worker-N``) serving every target of a targets file; ``exit_codes`` holds what ``stop`` saw."""

    metrics_port: int = field(default_factory=free_port)
    exit_codes: dict[str, int | None] = field(default_factory=dict)

    def start(self, targets_file: Path, workers: int, slots: int | None, manager_args: Sequence[str] = ()) -> None:
        metrics = ("--metrics-listen", f"127.0.0.1:{self.metrics_port}")
        self.start_manager(*metrics, *manager_args, wait=False)
        for index in range(1, workers + 1):
            self.start_worker(
                f"bench-worker-{index}",
                *("--targets-file", str(targets_file)),
                slots=slots,
                name=f"worker-{index}",
                wait=False,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> list[pb.WorkerInfo]:
        """Block until the manager is SERVING and every worker is connected; returns ListWorkers' workers."""
        return super().wait_ready(timeout)

    def histogram(self, name: str) -> list[tuple[float, float]]:
        """The cumulative buckets ``(le, count)`` of the manager's histogram ``name``, in ``le`` order (empty
        if the manager does not expose it)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        return histogram_buckets(text, name)

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        codes = super().stop(timeout)
        self.exit_codes.update(codes)
        return codes

    def findings(self) -> dict[str, list[str]]:
        """WARNING/ERROR/CRITICAL/traceback lines of each process log (only processes that have some)."""
        current = [*self.workers.values(), *([self.manager] if self.manager else [])]
        return {process.name: lines for process in current if (lines := findings(process))}


@contextmanager
def dbmaint_fleet(
    workdir: Path, targets_file: Path, workers: int, slots: int | None, manager_args: Sequence[str] = ()
) -> Iterator[DbmaintFleet]:
    fleet = DbmaintFleet(workdir)
    try:
        fleet.start(targets_file, workers, slots, manager_args)
        yield fleet
    finally:
        fleet.stop()


def create(
    stub: pb_grpc.MaintenanceServiceStub, targets: Sequence[str], operations: Sequence[str], timeout: float = 120.0
) -> pb.CreateMaintenanceResponse:
    request = pb.CreateMaintenanceRequest(
        targets=list(targets), operations=[OPERATION_PROTO[op] for op in operations]
    )
    response: pb.CreateMaintenanceResponse = stub.CreateMaintenance(request, timeout=timeout)
    return response


def histogram_buckets(exposition: str, name: str) -> list[tuple[float, float]]:
    """``(le, cumulative count)`` of histogram ``name`` (without ``_seconds``' suffixes) in a Prometheus text
    exposition, sorted by ``le`` (+Inf last)."""
    buckets = [
        (float(sample.labels["le"]), sample.value)
        for family in text_string_to_metric_families(exposition)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_bucket"
    ]
    return sorted(buckets, key=lambda bucket: bucket[0] if not math.isinf(bucket[0]) else math.inf)


def watch_until_terminal(
    stub: pb_grpc.MaintenanceServiceStub, job_id: str, timeout: float, job_only: bool = True
) -> tuple[int, float]:
    """Follow ``WatchJob`` until the job is terminal; returns (status, time.perf_counter() when seen).
    ``job_only=False`` watches every child's change too, as grpcurl does by default (each one is received and
    parsed here: the full watcher's cost is part of the run)."""
    stream = stub.WatchJob(pb.WatchJobRequest(id=job_id, job_only=job_only), timeout=timeout)
    try:
        for message in stream:
            if message.HasField("snapshot"):
                status = message.snapshot.job.status
            elif message.changed.id == job_id:
                status = message.changed.status
            else:
                continue
            if status in TERMINAL:
                return status, time.perf_counter()
    finally:
        stream.cancel()
    # The stream ended without a terminal status of the job (it should not): ask.
    status = stub.GetJob(pb.GetJobRequest(id=job_id), timeout=30).job.status
    return status, time.perf_counter()


def all_children(stub: pb_grpc.MaintenanceServiceStub, parent_id: str) -> list[pb.Job]:
    """Every child of ``parent_id``, page by page (GetJob answers one page of children at a time)."""
    children: list[pb.Job] = []
    token = ""
    while True:
        request = pb.GetJobRequest(id=parent_id, children_page_size=CHILDREN_PAGE, children_page_token=token)
        reply = stub.GetJob(request, timeout=60)
        children.extend(reply.children)
        token = reply.next_children_page_token
        if not token:
            return children


def seconds(timestamp: object) -> float | None:
    """A protobuf Timestamp as epoch seconds; None when unset."""
    seconds_field = getattr(timestamp, "seconds", 0)
    nanos = getattr(timestamp, "nanos", 0)
    if not seconds_field and not nanos:
        return None
    return float(seconds_field) + nanos / 1e9
