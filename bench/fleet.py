"""A real dbmaint fleet for one run: a manager (``python -m manager_service``, a fresh SQLite job store) and
N workers (``python -m worker_service``, every one serving every target through ``--targets-file``), as
separate processes on free loopback ports, and a gRPC client to the manager.

``wait_ready`` returns once the manager's ``grpc.health.v1`` says SERVING and ``ListWorkers`` lists every
worker: the runners start their clock only after that. The manager serves Prometheus metrics on a loopback port
(``--metrics-listen``); ``histogram`` reads one of its histograms (e.g. ``dbmaint_dispatch_gap_seconds``).
"""

from __future__ import annotations

import math
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Service, free_port, stop_all, wait_until
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc

START_TIMEOUT = 60.0
# The largest page of children GetJob answers (the manager's maximum).
CHILDREN_PAGE = 5_000
# GetJob of a 10,000-child parent is several MB; the manager sends up to 16 MB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
TERMINAL = frozenset({pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED})
OPERATION_PROTO = {
    "vacuum": pb.OPERATION_VACUUM,
    "analyze": pb.OPERATION_ANALYZE,
    "reindex": pb.OPERATION_REINDEX,
    "optimize": pb.OPERATION_OPTIMIZE,
}


@dataclass
class DbmaintFleet:
    workdir: Path
    manager_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    manager: Service | None = None
    workers: list[Service] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    _channel: grpc.Channel | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.manager_port}"

    @property
    def services(self) -> list[Service]:
        return [*self.workers, *([self.manager] if self.manager else [])]

    def start(self, targets_file: Path, workers: int, slots: int | None, manager_args: Sequence[str] = ()) -> None:
        store = self.workdir / "jobs.db"
        self.manager = Service(
            "manager",
            [
                sys.executable,
                "-m",
                "manager_service",
                "--listen",
                self.address,
                "--database-url",
                f"sqlite:///{store}",
                "--metrics-listen",
                f"127.0.0.1:{self.metrics_port}",
                *manager_args,
            ],
            self.workdir / "manager.log",
        ).start()
        for index in range(1, workers + 1):
            argv = [
                sys.executable,
                "-m",
                "worker_service",
                "--manager",
                self.address,
                "--worker-id",
                f"bench-worker-{index}",
                "--targets-file",
                str(targets_file),
            ]
            if slots is not None:
                argv += ["--slots", str(slots)]
            self.workers.append(Service(f"worker-{index}", argv, self.workdir / f"worker-{index}.log").start())

    def wait_ready(self, timeout: float = START_TIMEOUT) -> list[pb.WorkerInfo]:
        """Block until the manager is SERVING and every worker is connected; returns ListWorkers' workers."""
        expected = {f"bench-worker-{i}" for i in range(1, len(self.workers) + 1)}

        def serving() -> bool:
            for service in self.services:
                service.check_alive()
            reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        def connected() -> list[pb.WorkerInfo] | None:
            for service in self.services:
                service.check_alive()
            workers = list(self.stub.ListWorkers(pb.ListWorkersRequest(), timeout=5).workers)
            return workers if {w.worker_id for w in workers} >= expected else None

        wait_until(serving, timeout, "the manager was not SERVING")
        return wait_until(connected, timeout, f"workers {sorted(expected)} did not all connect")

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(
                self.address, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
            )
        return self._channel

    @property
    def stub(self) -> pb_grpc.MaintenanceServiceStub:
        return pb_grpc.MaintenanceServiceStub(self.channel)

    def histogram(self, name: str) -> list[tuple[float, float]]:
        """The cumulative buckets ``(le, count)`` of the manager's histogram ``name``, in ``le`` order (empty
        if the manager does not expose it)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        return histogram_buckets(text, name)

    def pids(self) -> dict[str, int]:
        return {service.name: service.pid for service in self.services}

    def stop(self) -> dict[str, int | None]:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        codes = stop_all(self.workers)
        if self.manager is not None:
            codes.update(stop_all([self.manager]))
        self.exit_codes.update(codes)
        return codes

    def findings(self) -> dict[str, list[str]]:
        """WARNING/ERROR/CRITICAL/traceback lines of each process log (only processes that have some)."""
        return {service.name: lines for service in self.services if (lines := service.findings())}


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
