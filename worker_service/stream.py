"""The gRPC edge: one ``WorkerService.Connect`` stream, and the protobuf <-> plain conversions it needs.

This is the only module of the worker that touches protobuf messages. Up the stream go ``Hello`` (first),
``Result``, ``Heartbeat`` and ``Draining``; down come ``Welcome`` (first), ``Assignment``, ``Cancel``, ``Drain``
and ``ResultAck``, which ``receive`` turns into the plain ``Welcome``, ``executor.Assignment``, ``CancelRequest``,
``DrainRequest`` and ``ResultAcked``.

Every way a stream can end -- the manager closing it, an RPC error, a write that does not complete -- surfaces
as ``StreamClosed``, which the worker treats as "reconnect".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio

from dbmaint import wire
from dbmaint.auth import TlsFiles, aio_channel, bearer_metadata
from dbmaint.managers import leader_hint
from dbmaint.transport import STREAM_CLIENT_OPTIONS
from dbmaint.v1 import maintenance_pb2 as pb
from worker_service.executor import Assignment, Outcome, RunKey

log = logging.getLogger(__name__)

CONNECT_METHOD = "/dbmaint.v1.WorkerService/Connect"
DEFAULT_HEARTBEAT_INTERVAL = 5.0
WELCOME_TIMEOUT = 10.0
WRITE_TIMEOUT = 30.0
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]
_STREAM_ERRORS = (grpc.RpcError, grpc.aio.BaseError, asyncio.InvalidStateError)


class StreamClosed(Exception):
    """The stream ended or broke; the message says how (status code and details, or 'closed by the manager').
    ``code``: the call's status code name when the stream ended with one; ``leader_hint``: the leader's address
    a refusing standby (or a leader stepping down) named in the ``dbmaint-leader`` trailing metadata, or empty."""

    def __init__(self, message: str, *, code: str = "", leader_hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.leader_hint = leader_hint


def _locally_cancelled() -> StreamClosed:
    """For an ``asyncio.CancelledError`` out of a read or write: grpc.aio raises it when the *call* was cancelled
    on this side (``close``, a write timeout). That is the end of the stream, not of the task -- unless the task
    itself is being cancelled, in which case the caller re-raises."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return StreamClosed("stream cancelled on the worker side")


@dataclass(frozen=True, slots=True)
class Hello:
    worker_id: str
    targets: tuple[str, ...]
    slots: int
    running: tuple[RunKey, ...]
    version: str
    # The running attempts that wait for their target's resource lock, and why (``Executor.waiting_reasons``).
    waiting: Mapping[RunKey, str] = field(default_factory=dict)
    # Fault injection is active (a non-empty DBMAINT_FAULTS plan): the manager shows it in ListWorkers.
    faults_active: bool = False


@dataclass(frozen=True, slots=True)
class Welcome:
    """``sends_acks``: this manager acknowledges each result (keep results until their ``ResultAcked``)."""

    lease_timeout: float
    heartbeat_interval: float
    manager_id: str
    sends_acks: bool = False


@dataclass(frozen=True, slots=True)
class CancelRequest:
    job_id: str
    attempt: int
    reason: str

    @property
    def key(self) -> RunKey:
        return (self.job_id, self.attempt)


@dataclass(frozen=True, slots=True)
class DrainRequest:
    reason: str


@dataclass(frozen=True, slots=True)
class ResultAcked:
    """The manager committed the results of these attempts (one ``ResultAck``, or a ``ResultAckBatch``)."""

    keys: tuple[RunKey, ...]


ManagerEvent = Welcome | Assignment | CancelRequest | DrainRequest | ResultAcked


# -- plain -> protobuf ------------------------------------------------------------------------------------------


def _running(keys: Iterable[RunKey], waiting: Mapping[RunKey, str] | None = None) -> list[pb.RunningChild]:
    """The running attempts; those in ``waiting`` carry their ``waiting_reason``."""
    reasons = waiting or {}
    return [
        pb.RunningChild(job_id=job_id, attempt=attempt, waiting_reason=reasons.get((job_id, attempt), ""))
        for job_id, attempt in keys
    ]


def hello_message(hello: Hello) -> pb.WorkerMessage:
    return pb.WorkerMessage(
        hello=pb.Hello(
            worker_id=hello.worker_id,
            targets=list(hello.targets),
            slots=hello.slots,
            running=_running(hello.running, hello.waiting),
            version=hello.version,
            accepts_batches=True,
            accepts_acks=True,
            faults_active=hello.faults_active,
        )
    )


def _result(outcome: Outcome) -> pb.Result:
    result = pb.Result(
        job_id=outcome.job_id,
        attempt=outcome.attempt,
        status=wire.status_to_proto(outcome.status),
        error=outcome.error,
    )
    if outcome.report is not None:
        result.result.CopyFrom(wire.report_to_proto(outcome.report))
    return result


def results_message(outcomes: Sequence[Outcome]) -> pb.WorkerMessage:
    """One message for one or more results (a ResultBatch when there are several)."""
    if len(outcomes) == 1:
        return pb.WorkerMessage(result=_result(outcomes[0]))
    return pb.WorkerMessage(results=pb.ResultBatch(results=[_result(o) for o in outcomes]))


def heartbeat_message(running: Iterable[RunKey], waiting: Mapping[RunKey, str] | None = None) -> pb.WorkerMessage:
    return pb.WorkerMessage(heartbeat=pb.Heartbeat(running=_running(running, waiting)))


def draining_message(reason: str) -> pb.WorkerMessage:
    return pb.WorkerMessage(draining=pb.Draining(reason=reason))


# -- protobuf -> plain ------------------------------------------------------------------------------------------


def decode_config(text: str) -> dict[str, Any] | None:
    """The child's JSON config as a dict; ``{}`` when empty; None when it is not a JSON object."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _deadline(message: pb.Assignment, field: str = "deadline") -> datetime | None:
    """The deadline (or another instant ``field``); None when unset. A timestamp out of datetime's range is far
    future (none) or far past."""
    stamp = getattr(message, field)
    if not message.HasField(field) or (stamp.seconds == 0 and stamp.nanos == 0):
        return None
    try:
        return wire.from_timestamp(stamp)
    except (ValueError, OverflowError):
        return None if stamp.seconds > 0 else datetime(1, 1, 1, tzinfo=UTC)


def assignment_from_proto(message: pb.Assignment) -> Assignment:
    operation = wire.operation_from_proto(message.operation)
    if operation is not None:
        operation_name = operation.value
    else:
        operation_name = "" if message.operation == pb.OPERATION_UNSPECIFIED else f"#{int(message.operation)}"
    return Assignment(
        job_id=message.job_id,
        attempt=message.attempt,
        target=message.target,
        operation=operation_name,
        job_type=message.job_type,
        config=decode_config(message.config),
        deadline=_deadline(message),
        parent_id=message.parent_id,
        window_end=_deadline(message, "window_end"),
    )


def welcome_from_proto(message: pb.Welcome) -> Welcome:
    lease = message.lease_timeout.ToNanoseconds() / 1e9
    interval = message.heartbeat_interval.ToNanoseconds() / 1e9
    if interval <= 0:
        interval = lease / 3 if lease > 0 else DEFAULT_HEARTBEAT_INTERVAL
    return Welcome(
        lease_timeout=lease,
        heartbeat_interval=interval,
        manager_id=message.manager_id,
        sends_acks=message.sends_acks,
    )


def events_from_proto(message: pb.ManagerMessage) -> list[ManagerEvent]:
    """The plain events a manager message carries (several for a batch; none for a kind this version does not
    know)."""
    kind = message.WhichOneof("kind")
    if kind == "welcome":
        return [welcome_from_proto(message.welcome)]
    if kind == "assignment":
        return [assignment_from_proto(message.assignment)]
    if kind == "assignments":
        return [assignment_from_proto(a) for a in message.assignments.assignments]
    if kind == "cancel":
        return [CancelRequest(message.cancel.job_id, message.cancel.attempt, message.cancel.reason)]
    if kind == "drain":
        return [DrainRequest(message.drain.reason)]
    if kind == "result_ack":
        return [ResultAcked(((message.result_ack.job_id, message.result_ack.attempt),))]
    if kind == "result_acks":
        return [ResultAcked(tuple((a.job_id, a.attempt) for a in message.result_acks.acks))]
    return []


# -- the stream -------------------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ManagerStream:
    """One open ``Connect`` call on its own channel. Writes are serialized; ``close`` is idempotent."""

    def __init__(
        self,
        address: str,
        *,
        write_timeout: float = WRITE_TIMEOUT,
        tls: TlsFiles | None = None,
        token: str | None = None,
    ) -> None:
        self.address = address
        self._write_timeout = write_timeout
        self._channel = aio_channel(address, tls, STREAM_CLIENT_OPTIONS)
        connect = self._channel.stream_stream(
            CONNECT_METHOD,
            request_serializer=pb.WorkerMessage.SerializeToString,
            response_deserializer=pb.ManagerMessage.FromString,
        )
        self._call: grpc.aio.StreamStreamCall[pb.WorkerMessage, pb.ManagerMessage] = connect(
            None, metadata=bearer_metadata(token) or None
        )
        self._write_lock = asyncio.Lock()
        self._half_closed = False
        self._closed = False

    @classmethod
    async def open(
        cls,
        address: str,
        hello: Hello,
        *,
        welcome_timeout: float = WELCOME_TIMEOUT,
        tls: TlsFiles | None = None,
        token: str | None = None,
    ) -> tuple[ManagerStream, Welcome]:
        """Open a stream, send Hello, and wait for Welcome. Raises StreamClosed (the stream is then closed)."""
        stream = cls(address, tls=tls, token=token)
        try:
            await stream._await_headers(welcome_timeout)
            await stream.send(hello_message(hello))
            try:
                events = await asyncio.wait_for(stream.receive(), welcome_timeout)
            except TimeoutError:
                raise StreamClosed(f"no Welcome within {welcome_timeout:g}s") from None
            event = events[0] if len(events) == 1 else None
            if not isinstance(event, Welcome):
                got = type(event).__name__ if event is not None else f"{len(events)} events"
                raise StreamClosed(f"expected Welcome first, got {got}")
        except BaseException:
            await stream.close()
            raise
        return stream, event

    async def _await_headers(self, timeout: float) -> None:
        """Wait for the manager's response headers, which it sends before reading the Hello.

        A manager that refuses the call (a standby, a wrong token) ends it at once. A write racing that refusal
        makes grpcio report INTERNAL "Internal error from Core" and lose the refusal's status and leader hint
        (grpc/grpc#36066), so nothing is written until the headers say the call was taken."""
        try:
            async with asyncio.timeout(timeout):
                await self._call.initial_metadata()
        except TimeoutError:
            raise StreamClosed(f"no response headers within {timeout:g}s") from None
        except _STREAM_ERRORS as exc:
            raise await self._ended(exc) from None
        except asyncio.CancelledError:
            raise _locally_cancelled() from None
        if self._call.done():
            raise await self._ended(None)

    async def send(self, message: pb.WorkerMessage) -> None:
        """Write one message; returns once gRPC accepted it. Raises StreamClosed."""
        async with self._write_lock:
            if self._half_closed or self._closed:
                raise StreamClosed("stream already closed for writing")
            try:
                # asyncio.timeout, not wait_for: no extra task per message (this is once per result).
                async with asyncio.timeout(self._write_timeout):
                    await self._call.write(message)
            except TimeoutError:
                self._call.cancel()
                raise StreamClosed(f"a write did not complete within {self._write_timeout:g}s") from None
            except _STREAM_ERRORS as exc:
                raise await self._ended(exc) from None
            except asyncio.CancelledError:
                raise _locally_cancelled() from None

    async def receive(self) -> list[ManagerEvent]:
        """The events of the next message (none for an unknown kind). Raises StreamClosed when the stream ends."""
        try:
            message = await self._call.read()
        except _STREAM_ERRORS as exc:
            raise await self._ended(exc) from None
        except asyncio.CancelledError:
            raise _locally_cancelled() from None
        if message is _EOF:
            raise await self._ended(None)
        assert isinstance(message, pb.ManagerMessage)
        return events_from_proto(message)

    async def half_close(self) -> None:
        """Tell the manager this worker sends nothing more (the end of a drain)."""
        async with self._write_lock:
            if self._half_closed or self._closed:
                return
            self._half_closed = True
            try:
                await asyncio.wait_for(self._call.done_writing(), self._write_timeout)
            except (TimeoutError, *_STREAM_ERRORS) as exc:
                log.debug("half-close failed: %s", _describe(exc))
            except asyncio.CancelledError:
                log.debug("half-close failed: %s", _locally_cancelled())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._call.cancel()
        await self._channel.close(None)

    async def _ended(self, exc: BaseException | None) -> StreamClosed:
        """Why the stream ended, with its status code and the leader hint of its trailing metadata."""
        if self._call.cancelled():
            return StreamClosed("stream cancelled on the worker side")
        # The call's own final status says why it ended; the error of a failed write may not (a write that lost
        # the race with the manager refusing the call, e.g. PERMISSION_DENIED, only says INTERNAL).
        try:
            code = await asyncio.wait_for(self._call.code(), 1.0)
            details = await asyncio.wait_for(self._call.details(), 1.0)
            trailing = await asyncio.wait_for(self._call.trailing_metadata(), 1.0)
        except (TimeoutError, *_STREAM_ERRORS):
            return StreamClosed(_describe(exc) if exc is not None else "stream ended")
        if code == grpc.StatusCode.OK:
            return StreamClosed("stream closed by the manager", code=code.name)
        hint = leader_hint(tuple(trailing) if trailing else None)
        return StreamClosed(f"{code.name}: {details}", code=code.name, leader_hint=hint)
