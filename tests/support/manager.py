"""Shared test helpers for the manager: polling assertions, job builders, a fake worker and an in-process
manager harness.

Nothing here sleeps to *decide* a result: waits poll a predicate until it holds (or fail with a message), and
the only fixed pauses are the polling interval itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc

from dbmaint.operations import CHILD_JOB_TYPE, PARENT_JOB_TYPE, JobStatus, Operation
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from manager_service.config import ManagerConfig
from manager_service.domain import Job, Progress
from manager_service.server import ManagerServer
from tests.support.polling import assert_eventually as assert_eventually  # re-exported for the tests
from tests.support.polling import eventually as eventually

T = TypeVar("T")

# --------------------------------------------------------------------------------------------------- domain


NOW = datetime(2024, 1, 1, tzinfo=UTC)


def child(
    status: JobStatus = JobStatus.RUNNING,
    *,
    attempt: int = 1,
    max_attempts: int = 3,
    worker_id: str | None = "w1",
    cancel_requested: bool = False,
    target: str = "db1",
    operation: Operation = Operation.VACUUM,
    error: str | None = None,
    job_id: str = "child-1",
    seq: int = 2,
) -> Job:
    return Job(
        id=job_id,
        seq=seq,
        type=CHILD_JOB_TYPE,
        status=status,
        config={"operation": str(operation), "target": target},
        created_at=NOW,
        parent_id="parent-1",
        target=target,
        operation=operation,
        attempt=attempt,
        max_attempts=max_attempts,
        worker_id=worker_id,
        cancel_requested=cancel_requested,
        error=error,
    )


def parent(status: JobStatus = JobStatus.PENDING, progress: Progress | None = None) -> Job:
    return Job(
        id="parent-1",
        seq=1,
        type=PARENT_JOB_TYPE,
        status=status,
        config={},
        created_at=NOW,
        progress=progress or Progress(),
    )


# --------------------------------------------------------------------------------------------------- gRPC


RESULT_STATUS = {
    "completed": pb.JOB_STATUS_COMPLETED,
    "failed": pb.JOB_STATUS_FAILED,
    "cancelled": pb.JOB_STATUS_CANCELLED,
}


class FakeWorker:
    """A worker written for the tests: it opens ``WorkerService.Connect`` and does exactly what it is told.

    Every message the manager sends is recorded (``messages``, ``assignments``, ``cancels``); ``outstanding``
    is what the manager assigned and the worker has not reported yet, and ``max_outstanding`` its peak.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        worker_id: str,
        targets: Iterable[str],
        slots: int = 1,
        accepts_batches: bool = False,
        accepts_acks: bool = False,
    ) -> None:
        self.stub = pb_grpc.WorkerServiceStub(channel)
        self.worker_id = worker_id
        self.targets = list(targets)
        self.slots = slots
        self.accepts_batches = accepts_batches
        self.accepts_acks = accepts_acks
        self.acks: list[tuple[str, int]] = []
        self.call: Any = None
        self.messages: list[pb.ManagerMessage] = []
        self.assignments: list[pb.Assignment] = []
        self.cancels: list[pb.Cancel] = []
        self.outstanding: dict[str, int] = {}
        self.max_outstanding = 0
        self.ended = False
        self.error: grpc.aio.AioRpcError | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        # grpc.aio allows one write at a time per stream; heartbeats run in their own task
        self._write_lock = asyncio.Lock()

    # -- stream

    async def open(self, first: pb.WorkerMessage | None = None) -> None:
        """Open the stream and send ``first`` (a Hello by default); start recording what comes back."""
        self.call = self.stub.Connect()
        await self.write(first if first is not None else self.hello())
        self._reader = asyncio.create_task(self._read())

    def hello(self, running: Iterable[tuple[str, int]] = ()) -> pb.WorkerMessage:
        return pb.WorkerMessage(
            hello=pb.Hello(
                worker_id=self.worker_id,
                targets=self.targets,
                slots=self.slots,
                running=[pb.RunningChild(job_id=j, attempt=a) for j, a in running],
                version="test",
                accepts_batches=self.accepts_batches,
                accepts_acks=self.accepts_acks,
            )
        )

    async def connect(self, running: Iterable[tuple[str, int]] = ()) -> pb.Welcome:
        await self.open(self.hello(running))
        await eventually(lambda: self.messages or self.ended, message=f"{self.worker_id}: a Welcome")
        first = self.messages[0] if self.messages else None
        assert first is not None and first.WhichOneof("kind") == "welcome", (first, self.error)
        return first.welcome

    async def _read(self) -> None:
        try:
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    break
                self.messages.append(message)
                kind = message.WhichOneof("kind")
                if kind in ("assignment", "assignments"):
                    batch = [message.assignment] if kind == "assignment" else message.assignments.assignments
                    for assignment in batch:
                        self.assignments.append(assignment)
                        self.outstanding[assignment.job_id] = assignment.attempt
                    self.max_outstanding = max(self.max_outstanding, len(self.outstanding))
                elif kind == "cancel":
                    self.cancels.append(message.cancel)
                elif kind in ("result_ack", "result_acks"):
                    acks = [message.result_ack] if kind == "result_ack" else message.result_acks.acks
                    self.acks.extend((ack.job_id, ack.attempt) for ack in acks)
        except grpc.aio.AioRpcError as error:
            self.error = error
        finally:
            self.ended = True

    async def write(self, message: pb.WorkerMessage) -> None:
        async with self._write_lock:
            await self.call.write(message)

    async def status(self) -> grpc.StatusCode:
        """The stream's final status (waits for the end)."""
        code: grpc.StatusCode = await self.call.code()
        return code

    async def details(self) -> str:
        details: str = await self.call.details()
        return details

    async def wait_assignments(self, count: int, timeout: float = 5.0) -> list[pb.Assignment]:
        await eventually(
            lambda: len(self.assignments) >= count,
            timeout=timeout,
            message=f"{self.worker_id}: {count} assignments (has {len(self.assignments)})",
        )
        return self.assignments

    async def send_result(
        self, job_id: str, attempt: int, status: str = "completed", error: str = "", engine: str = "sqlite"
    ) -> None:
        # Forget it first: the manager may assign the next child as soon as it reads this.
        if self.outstanding.get(job_id) == attempt:
            del self.outstanding[job_id]
        await self.write(
            pb.WorkerMessage(
                result=pb.Result(
                    job_id=job_id,
                    attempt=attempt,
                    status=RESULT_STATUS[status],
                    error=error,
                    result=pb.OperationResult(engine=engine, objects_processed=1),
                )
            )
        )

    async def complete(self, assignment: pb.Assignment, status: str = "completed", error: str = "") -> None:
        await self.send_result(assignment.job_id, assignment.attempt, status, error)

    async def complete_all(self, assignments: Iterable[tuple[str, int]], status: str = "completed") -> None:
        """Report several (job_id, attempt) in one ResultBatch message."""
        results = []
        for job_id, attempt in assignments:
            if self.outstanding.get(job_id) == attempt:
                del self.outstanding[job_id]
            results.append(pb.Result(job_id=job_id, attempt=attempt, status=RESULT_STATUS[status]))
        await self.write(pb.WorkerMessage(results=pb.ResultBatch(results=results)))

    async def heartbeat(self, running: Iterable[tuple[str, int]] | None = None) -> None:
        listed = list(self.outstanding.items()) if running is None else running
        await self.write(
            pb.WorkerMessage(
                heartbeat=pb.Heartbeat(running=[pb.RunningChild(job_id=j, attempt=a) for j, a in listed])
            )
        )

    def start_heartbeats(self, interval: float = 0.2) -> None:
        async def loop() -> None:
            while not self.ended:
                await self.heartbeat()
                await asyncio.sleep(interval)

        self._heartbeats = asyncio.create_task(loop())

    async def drain(self, reason: str = "test") -> None:
        await self.write(pb.WorkerMessage(draining=pb.Draining(reason=reason)))

    async def half_close(self) -> None:
        async with self._write_lock:
            await self.call.done_writing()

    async def close(self) -> None:
        """Stop heartbeats and cancel the stream; safe to call more than once."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.gather(self._heartbeats, return_exceptions=True)
        if self.call is not None:
            self.call.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class _ErrorLogWatch(logging.Handler):
    """Collects ERROR and CRITICAL records of the manager: an unexpected exception is always logged there."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Manager:
    """An in-process manager and clients for it."""

    server: ManagerServer
    channel: grpc.aio.Channel
    config: ManagerConfig
    workers: list[FakeWorker] = field(default_factory=list)

    @property
    def api(self) -> pb_grpc.MaintenanceServiceStub:
        return pb_grpc.MaintenanceServiceStub(self.channel)

    @property
    def health(self) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel)

    def worker(
        self,
        worker_id: str,
        targets: Iterable[str],
        slots: int = 1,
        accepts_batches: bool = False,
        accepts_acks: bool = False,
    ) -> FakeWorker:
        fake = FakeWorker(self.channel, worker_id, targets, slots, accepts_batches, accepts_acks)
        self.workers.append(fake)
        return fake

    async def connected_worker(
        self,
        worker_id: str,
        targets: Iterable[str],
        slots: int = 1,
        accepts_batches: bool = False,
        accepts_acks: bool = False,
        running: Iterable[tuple[str, int]] = (),
    ) -> FakeWorker:
        fake = self.worker(worker_id, targets, slots, accepts_batches, accepts_acks)
        await fake.connect(running)
        return fake

    async def create(self, targets: Iterable[str], operations: Iterable[int] = (), request_id: str = "") -> Any:
        return await self.api.CreateMaintenance(
            pb.CreateMaintenanceRequest(targets=list(targets), operations=list(operations), request_id=request_id)
        )

    async def get(self, job_id: str) -> pb.GetJobResponse:
        response: pb.GetJobResponse = await self.api.GetJob(pb.GetJobRequest(id=job_id))
        return response

    async def job(self, job_id: str) -> pb.Job:
        return (await self.get(job_id)).job

    async def dispatch_barrier(self, tag: str) -> None:
        """Prove the dispatcher ran a full pass after this point: a probe worker on a private target must
        get the probe child. Whatever an earlier pass assigned is in the store by then."""
        probe = await self.connected_worker(f"probe-{tag}", [f"probe-{tag}"])
        await self.create([f"probe-{tag}"], [pb.OPERATION_ANALYZE])
        await probe.wait_assignments(1)
        await probe.close()


@asynccontextmanager
async def running_manager(tmp_path: Path, **overrides: Any) -> AsyncIterator[Manager]:
    """A ManagerServer on a free port with a SQLite file in ``tmp_path``; fails the test if the manager logged
    an unexpected error (every INTERNAL answer and every dead side task is logged at ERROR or above)."""
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "database_url": f"sqlite:///{tmp_path}/jobs.db",
        "lease_timeout": 2.0,
        "heartbeat_interval": 0.5,
        "shutdown_grace": 1.0,
    }
    settings.update(overrides)
    config = ManagerConfig(**settings)
    watch = _ErrorLogWatch()
    logging.getLogger("manager_service").addHandler(watch)
    server = ManagerServer(config)
    try:
        port = await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        manager = Manager(server, channel, config)
        try:
            yield manager
        finally:
            # the server first: worker streams end the way a restart ends them, without re-queueing anything
            await server.shutdown()
            for fake in manager.workers:
                await fake.close()
            await channel.close()
    finally:
        logging.getLogger("manager_service").removeHandler(watch)
    unexpected = [f"{r.name}: {r.getMessage()}" for r in watch.records]
    assert not unexpected, f"the manager logged unexpected errors: {unexpected}"
