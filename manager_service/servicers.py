"""gRPC servicers: they subclass the generated bases and only translate between protobuf and the domain.

Each method is wrapped in ``translate_errors``: the domain errors raised below it become status codes there
(``manager_service.rpc_errors`` holds the one map), so no method catches or aborts by itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from dbmaint import wire
from dbmaint.operations import JOB_TYPES, LEGACY_JOB_TYPE, JobStatus, RunMode
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from manager_service import window_rules
from manager_service.convert import job_to_proto, window_from_proto, worker_to_proto
from manager_service.domain import ChildOutcome, Job, JobFilter
from manager_service.errors import RequestInvalid
from manager_service.orchestrator import Orchestrator
from manager_service.reads import JobReads, Snapshot
from manager_service.rpc_errors import translate_errors
from manager_service.validation import (
    CANCEL_REASON_MAX_LENGTH,
    DEFAULT_CHILDREN_PAGE_SIZE,
    RESULT_ERROR_MAX_LENGTH,
    TARGET_NAME,
    WAITING_REASON_MAX_LENGTH,
    WORKER_VERSION_MAX_LENGTH,
    Limits,
    is_job_id,
    sanitize_report,
    sanitize_text,
    validate_children_page_size,
    validate_job_id,
    validate_maintenance,
    validate_mode,
    validate_parallel,
    validate_worker_id,
)
from manager_service.workers import (
    AckCommand,
    AssignCommand,
    CancelCommand,
    CloseCommand,
    Command,
    DrainCommand,
    HelloInfo,
    RunningReport,
)

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_SLOTS = 1024
# Most commands one ManagerMessage carries (assignments are ~200 bytes: far below the message size limit).
MAX_BATCH = 256


def run_mode(request: pb.CreateMaintenanceRequest) -> RunMode:
    """The mode ``request`` asks for (``validate_mode`` refuses an unknown value)."""
    mode = pb.Mode.Name(request.mode) if request.mode in pb.Mode.values() else str(request.mode)
    return validate_mode(mode)


def _operations(values: Any) -> list[Any]:
    operations = []
    for index, value in enumerate(values):
        operation = wire.operation_from_proto(value)
        if operation is None:
            known = ", ".join(n for n in pb.Operation.keys() if n != "OPERATION_UNSPECIFIED")  # noqa: SIM118
            raise RequestInvalid(
                f"operations[{index}]", f"unknown or unspecified operation {value}; use one of {known}"
            )
        operations.append(operation)
    return operations


def _encode_page_token(seq: int | None) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode() if seq is not None else ""


def _decode_page_token(token: str) -> int | None:
    if not token:
        return None
    try:
        version, _, seq = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if version == "v1" and seq.isascii() and seq.isdigit() and int(seq) < 2**63:
            return int(seq)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise RequestInvalid("page_token", "not a token returned by ListJobs")


def _encode_children_token(position: int | None) -> str:
    """The token of the page after the child at ``position`` ("" when no page follows)."""
    return base64.urlsafe_b64encode(f"c1:{position}".encode()).decode() if position is not None else ""


def _decode_children_token(token: str) -> int | None:
    if not token:
        return None
    try:
        version, _, position = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if version == "c1" and position.isascii() and position.isdigit() and int(position) < 2**31:
            return int(position)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise RequestInvalid("children_page_token", "not a token returned by GetJob or CreateMaintenance")


def _children_statuses(values: Iterable[int]) -> list[JobStatus]:
    statuses = []
    for index, value in enumerate(values):
        status = wire.status_from_proto(value)
        if status is None:
            raise RequestInvalid(f"children_status[{index}]", f"unknown or unspecified status {value}")
        statuses.append(status)
    return statuses


def _next_children_token(children: list[Job], more: bool) -> str:
    return _encode_children_token(children[-1].position if more and children else None)


class MaintenanceReadServicer(pb_grpc.MaintenanceServiceServicer):
    """The read methods (GetJob, ListJobs, WatchJob, ListWorkers) over any ``JobReads``: what a standby serves."""

    def __init__(self, reads: JobReads, limits: Limits) -> None:
        self._reads = reads
        self._limits = limits

    def _job(self, job: Job, with_tables: bool = False) -> pb.Job:
        return job_to_proto(job, self._reads.waiting_reason(job), with_tables)

    def _snapshot(self, snapshot: Snapshot, with_tables: bool = False) -> pb.GetJobResponse:
        """``with_tables``: the job itself carries its per-table reports (GetJob); its children never do."""
        return pb.GetJobResponse(
            job=self._job(snapshot.job, with_tables),
            children=[self._job(c) for c in snapshot.children],
            next_children_page_token=_next_children_token(snapshot.children, snapshot.more_children),
        )

    @translate_errors
    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetJobResponse:
        job_id = validate_job_id(request.id)
        page_size = validate_children_page_size(request.children_page_size)
        after = _decode_children_token(request.children_page_token)
        statuses = _children_statuses(request.children_status)
        snapshot = await self._reads.get(job_id, page_size=page_size, after_position=after, statuses=statuses)
        return self._snapshot(snapshot, with_tables=True)

    @translate_errors
    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        if request.page_size < 0:
            raise RequestInvalid("page_size", "must not be negative")
        if request.type and request.type not in JOB_TYPES:
            hint = " (the legacy single-job type is no longer used)" if request.type == LEGACY_JOB_TYPE else ""
            raise RequestInvalid(
                "type", f"unknown job type {request.type[:80]!r}{hint}; use one of {', '.join(JOB_TYPES)}"
            )
        status: JobStatus | None = None
        if request.status != pb.JOB_STATUS_UNSPECIFIED:
            status = wire.status_from_proto(request.status)
            if status is None:
                raise RequestInvalid("status", f"unknown status {request.status}")
        if request.parent_id:
            validate_job_id(request.parent_id, "parent_id")
        if request.schedule_id and not TARGET_NAME.fullmatch(request.schedule_id):
            raise RequestInvalid("schedule_id", f"not a schedule id: {request.schedule_id[:80]!r}")
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page = await self._reads.list_jobs(
            JobFilter(
                status=status,
                type=request.type or None,
                parent_id=request.parent_id or None,
                schedule_id=request.schedule_id or None,
            ),
            limit,
            _decode_page_token(request.page_token),
        )
        return pb.ListJobsResponse(
            jobs=[self._job(j) for j in page.jobs], next_page_token=_encode_page_token(page.next_before_seq)
        )

    @translate_errors
    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobResponse]:
        events = self._reads.watch(validate_job_id(request.id), with_children=not request.job_only)
        async for event in events:
            if isinstance(event, Snapshot):
                yield pb.WatchJobResponse(snapshot=self._snapshot(event))
            else:
                yield pb.WatchJobResponse(changed=self._job(event))

    @translate_errors
    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListWorkersResponse:
        return pb.ListWorkersResponse(
            workers=[worker_to_proto(w) for w in await self._reads.workers()],
            unserved_targets=await self._reads.unserved_targets(),
        )


class MaintenanceServicer(MaintenanceReadServicer):
    """The leader's MaintenanceService: the reads over its Orchestrator, and the writes."""

    def __init__(self, orchestrator: Orchestrator, limits: Limits) -> None:
        super().__init__(orchestrator, limits)
        self._orchestrator = orchestrator

    @translate_errors
    async def CreateMaintenance(
        self, request: pb.CreateMaintenanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateMaintenanceResponse:
        spec = validate_maintenance(
            list(request.targets),
            _operations(request.operations),
            request.request_id,
            self._limits,
            schemas=list(request.schemas),
            tables=list(request.tables),
            mode=run_mode(request),
            thresholds=dict(request.thresholds),
        )
        spec = replace(spec, parallel=validate_parallel(request.parallel))
        if request.HasField("window"):
            spec = replace(spec, window=window_rules.to_dict(window_from_proto(request.window)))
        outcome = await self._orchestrator.create(spec)
        # A new parent comes with all its children (the manager queued them): answer with the first page.
        page = outcome.children[:DEFAULT_CHILDREN_PAGE_SIZE]
        more = outcome.more_children or len(outcome.children) > len(page)
        return pb.CreateMaintenanceResponse(
            parent=self._job(outcome.parent),
            children=[self._job(c) for c in page],
            created=outcome.created,
            next_children_page_token=_next_children_token(page, more),
        )

    @translate_errors
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelJobResponse:
        reason = sanitize_text(request.reason.strip(), CANCEL_REASON_MAX_LENGTH) or "cancelled by request"
        job = await self._orchestrator.cancel(validate_job_id(request.id), reason)
        return pb.CancelJobResponse(job=self._job(job))

    @translate_errors
    async def DrainWorker(
        self, request: pb.DrainWorkerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DrainWorkerResponse:
        worker_id = validate_worker_id(request.worker_id.strip(), "worker_id")
        reason = sanitize_text(request.reason.strip(), CANCEL_REASON_MAX_LENGTH) or "drain requested"
        session = self._orchestrator.drain_worker(worker_id, reason)
        return pb.DrainWorkerResponse(worker=worker_to_proto(self._orchestrator.worker_view(session)))


def _hello(message: pb.WorkerMessage, peer: str) -> HelloInfo:
    if message.WhichOneof("kind") != "hello":
        raise RequestInvalid("hello", "the first message on the stream must be a Hello")
    hello = message.hello
    validate_worker_id(hello.worker_id, "hello.worker_id")
    if not hello.targets:
        raise RequestInvalid("hello.targets", "a worker must serve at least one target")
    for index, name in enumerate(hello.targets):
        if not TARGET_NAME.fullmatch(name):
            raise RequestInvalid(f"hello.targets[{index}]", f"invalid target name {name[:80]!r}")
    if not 1 <= hello.slots <= MAX_SLOTS:
        raise RequestInvalid("hello.slots", f"must be between 1 and {MAX_SLOTS}")
    for index, child in enumerate(hello.running):
        validate_job_id(child.job_id, f"hello.running[{index}].job_id")
    return HelloInfo(
        worker_id=hello.worker_id,
        targets=frozenset(hello.targets),
        slots=hello.slots,
        running=_running(hello.running),
        peer=peer,
        version=sanitize_text(hello.version, WORKER_VERSION_MAX_LENGTH),
        accepts_batches=hello.accepts_batches,
        accepts_acks=hello.accepts_acks,
        faults_active=hello.faults_active,
    )


def _running(running: Iterable[pb.RunningChild]) -> tuple[RunningReport, ...]:
    return tuple(
        RunningReport(r.job_id, r.attempt, sanitize_text(r.waiting_reason, WAITING_REASON_MAX_LENGTH))
        for r in running
    )


def _outcome(worker_id: str, result: pb.Result) -> ChildOutcome | None:
    """The outcome a worker's result reports, its text sanitized; None when it cannot apply to any child."""
    status = wire.status_from_proto(result.status)
    if status is None or not status.is_terminal or not is_job_id(result.job_id):
        return None
    return ChildOutcome(
        job_id=result.job_id,
        attempt=result.attempt,
        worker_id=worker_id,
        status=status,
        error=sanitize_text(result.error, RESULT_ERROR_MAX_LENGTH) or None,
        report=sanitize_report(wire.report_from_proto(result.result)) if result.HasField("result") else None,
    )


def _assignment_to_proto(command: AssignCommand, deadlines: dict[datetime, Timestamp]) -> pb.Assignment:
    # The children of one dispatch turn share a deadline: convert it once.
    deadline = deadlines.get(command.deadline)
    if deadline is None:
        deadline = deadlines[command.deadline] = wire.timestamp(command.deadline) or Timestamp()
    return pb.Assignment(
        job_id=command.job_id,
        attempt=command.attempt,
        target=command.target,
        operation=wire.operation_to_proto(command.operation),
        job_type=command.job_type,
        config=json.dumps(command.config, separators=(",", ":")),
        deadline=deadline,
        parent_id=command.parent_id,
        window_end=wire.timestamp(command.window_end),
    )


def _commands_to_proto(commands: list[Command], batches: bool) -> list[pb.ManagerMessage]:
    """The messages for ``commands``, in order. Consecutive acknowledgements share one message; with
    ``batches``, so do consecutive assignments."""
    messages: list[pb.ManagerMessage] = []
    assignments: list[pb.Assignment] = []
    acks: list[pb.ResultAck] = []
    deadlines: dict[datetime, Timestamp] = {}

    def flush() -> None:
        if len(assignments) == 1:
            messages.append(pb.ManagerMessage(assignment=assignments[0]))
        elif assignments:
            messages.append(pb.ManagerMessage(assignments=pb.AssignmentBatch(assignments=assignments)))
        if len(acks) == 1:
            messages.append(pb.ManagerMessage(result_ack=acks[0]))
        elif acks:
            messages.append(pb.ManagerMessage(result_acks=pb.ResultAckBatch(acks=acks)))
        assignments.clear()
        acks.clear()

    for command in commands:
        if isinstance(command, AssignCommand):
            if acks:
                flush()
            assignments.append(_assignment_to_proto(command, deadlines))
            if not batches:
                flush()
        elif isinstance(command, AckCommand):
            if assignments:
                flush()
            acks.append(pb.ResultAck(job_id=command.job_id, attempt=command.attempt))
        else:
            flush()
            if isinstance(command, CancelCommand):
                cancel = pb.Cancel(job_id=command.job_id, attempt=command.attempt, reason=command.reason)
                messages.append(pb.ManagerMessage(cancel=cancel))
            elif isinstance(command, DrainCommand):
                messages.append(pb.ManagerMessage(drain=pb.Drain(reason=command.reason)))
    flush()
    return messages


async def _next_commands(outbox: asyncio.Queue[Command], limit: int) -> list[Command]:
    """Wait for a command, then take (up to ``limit``) all that are queued behind it."""
    commands = [await outbox.get()]
    while len(commands) < limit and not outbox.empty():
        commands.append(outbox.get_nowait())
    return commands


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator

    @translate_errors
    async def Connect(
        self, request_iterator: AsyncIterator[pb.WorkerMessage], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ManagerMessage]:
        # The stream is registered and released in ONE try/finally: however the call ends (a hang-up while the
        # Welcome is sent, a cancel at any await), no session outlives it.
        stream, outbox = self._orchestrator.open_stream()
        why = "stream ended"
        reader: asyncio.Task[None] | None = None
        try:
            # Headers first: a worker writes its Hello only once they arrive (see ManagerStream._await_headers).
            await context.send_initial_metadata(())
            try:
                first = await anext(aiter(request_iterator))
            except StopAsyncIteration:
                return  # it hung up before its Hello
            hello = _hello(first, context.peer())
            session = self._orchestrator.connect_worker(stream, hello)
            yield self._welcome(hello)
            reader = asyncio.create_task(
                self._read(stream, session.worker_id, outbox, request_iterator), name=f"read-{session.worker_id}"
            )
            while True:
                # Everything queued goes out at once: one message for the assignments of a dispatch turn.
                sendable: list[Command] = []
                close: CloseCommand | None = None
                for command in await _next_commands(outbox, MAX_BATCH):
                    if isinstance(command, CloseCommand):
                        close = command  # what was queued after it is not sent
                        break
                    sendable.append(command)
                for message in _commands_to_proto(sendable, session.accepts_batches):
                    yield message
                if close is not None:
                    why = close.reason
                    break
        except asyncio.CancelledError:
            why = "stream cancelled"
            raise
        finally:
            if reader is not None:
                reader.cancel()
            self._orchestrator.disconnect_worker(stream, why)

    def _welcome(self, hello: HelloInfo) -> pb.ManagerMessage:
        settings = self._orchestrator.settings
        return pb.ManagerMessage(
            welcome=pb.Welcome(
                lease_timeout=wire.duration(settings.lease_timeout),
                heartbeat_interval=wire.duration(settings.heartbeat_interval),
                manager_id=self._orchestrator.manager_id,
                sends_acks=hello.accepts_acks,
            )
        )

    async def _read(
        self,
        stream: int,
        worker_id: str,
        outbox: asyncio.Queue[Command],
        request_iterator: AsyncIterator[pb.WorkerMessage],
    ) -> None:
        """Apply what the worker sends until its stream ends; then end our side too."""
        why = "worker closed the stream"
        try:
            async for message in request_iterator:
                kind = message.WhichOneof("kind")
                if kind == "result":
                    self._submit(stream, worker_id, [message.result])
                elif kind == "results":
                    self._submit(stream, worker_id, message.results.results)
                elif kind == "heartbeat":
                    self._orchestrator.heartbeat(stream, _running(message.heartbeat.running))
                elif kind == "draining":
                    reason = sanitize_text(message.draining.reason, CANCEL_REASON_MAX_LENGTH)
                    self._orchestrator.mark_draining(stream, reason or "draining")
                else:
                    log.warning("worker %s sent an unexpected %s message; ignored", worker_id, kind)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            why = "the worker sent a message that does not parse"  # the call already ended INVALID_ARGUMENT
        except grpc.aio.AioRpcError as error:
            why = f"stream broke: {error.code().name}"
        except Exception as error:
            log.exception("stream of worker %s failed", worker_id)
            why = f"stream failed: {error!r}"
        outbox.put_nowait(CloseCommand(why))

    def _submit(self, stream: int, worker_id: str, results: Iterable[pb.Result]) -> None:
        outcomes = []
        for result in results:
            outcome = _outcome(worker_id, result)
            if outcome is None:
                log.warning(
                    "worker %s sent a result with status %d for job id %r; ignored",
                    worker_id,
                    result.status,
                    result.job_id[:80],
                )
            else:
                outcomes.append(outcome)
        self._orchestrator.submit_results(stream, outcomes)
