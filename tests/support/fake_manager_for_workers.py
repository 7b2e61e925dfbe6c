"""A tiny in-process stand-in for the manager's ``WorkerService``, for the worker's stream tests.

Each ``Connect`` becomes a ``FakeStream`` that records what the worker sent and lets the test push
``ManagerMessage``s, drop the stream with UNAVAILABLE (as a leader stepping down would, naming the new leader
in the ``dbmaint-leader`` trailing metadata if asked), or end it. When the worker half-closes, the fake ends
the stream, as the manager does. A FakeManager with ``standby_for`` set plays a standby: it refuses every
``Connect`` with UNAVAILABLE, naming that leader (none if empty), as the manager's gate does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
import grpc.aio

from dbmaint import wire
from dbmaint.operations import CHILD_JOB_TYPE
from dbmaint.transport import LEADER_METADATA_KEY, SERVER_OPTIONS
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc

_END = object()


@dataclass(frozen=True)
class _Drop:
    leader: str = ""


def _refusal_metadata(leader: str) -> tuple[tuple[str, str], ...]:
    return ((LEADER_METADATA_KEY, leader),) if leader else ()


@dataclass
class FakeStream:
    index: int
    hello: pb.Hello
    received: list[pb.WorkerMessage] = field(default_factory=list)
    outgoing: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    half_closed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def of_kind(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.received if m.WhichOneof("kind") == kind]

    @property
    def results(self) -> list[pb.Result]:
        """Every result received, whether alone or in a ResultBatch."""
        found: list[pb.Result] = []
        for message in self.received:
            kind = message.WhichOneof("kind")
            if kind == "result":
                found.append(message.result)
            elif kind == "results":
                found.extend(message.results.results)
        return found

    @property
    def heartbeats(self) -> list[pb.Heartbeat]:
        return self.of_kind("heartbeat")

    @property
    def drainings(self) -> list[pb.Draining]:
        return self.of_kind("draining")

    def result_for(self, job_id: str) -> pb.Result | None:
        return next((r for r in self.results if r.job_id == job_id), None)

    async def send(self, message: pb.ManagerMessage) -> None:
        await self.outgoing.put(message)

    async def assign(self, job_id: str, target: str, operation: str = "vacuum", **overrides: Any) -> None:
        await self.send(pb.ManagerMessage(assignment=assignment(job_id, target, operation, **overrides)))

    async def assign_batch(self, *assignments: pb.Assignment) -> None:
        await self.send(pb.ManagerMessage(assignments=pb.AssignmentBatch(assignments=assignments)))

    async def cancel(self, job_id: str, attempt: int = 1, reason: str = "cancelled by test") -> None:
        await self.send(pb.ManagerMessage(cancel=pb.Cancel(job_id=job_id, attempt=attempt, reason=reason)))

    async def ack(self, job_id: str, attempt: int = 1) -> None:
        """Acknowledge one result (``ResultAck``), as the manager does once it committed it."""
        await self.send(pb.ManagerMessage(result_ack=pb.ResultAck(job_id=job_id, attempt=attempt)))

    async def ack_batch(self, *keys: tuple[str, int]) -> None:
        acks = [pb.ResultAck(job_id=job_id, attempt=attempt) for job_id, attempt in keys]
        await self.send(pb.ManagerMessage(result_acks=pb.ResultAckBatch(acks=acks)))

    async def drop(self, leader: str = "") -> None:
        """End the stream with UNAVAILABLE, as a manager that went away (or stepped down: ``leader`` is the
        address it names as the new leader)."""
        await self.outgoing.put(_Drop(leader))

    async def end(self) -> None:
        await self.outgoing.put(_END)


def assignment(
    job_id: str,
    target: str,
    operation: str = "vacuum",
    *,
    attempt: int = 1,
    job_type: str = CHILD_JOB_TYPE,
    config: str | None = None,
    deadline: datetime | None = None,
    parent_id: str = "parent-1",
) -> pb.Assignment:
    from dbmaint.operations import Operation

    if config is None:
        config = f'{{"operation": "{operation}", "target": "{target}"}}'
    message = pb.Assignment(
        job_id=job_id,
        attempt=attempt,
        target=target,
        operation=wire.operation_to_proto(Operation(operation)),
        job_type=job_type,
        config=config,
        parent_id=parent_id,
    )
    if deadline is not None:
        message.deadline.CopyFrom(wire.timestamp(deadline))
    return message


class FakeManager(pb_grpc.WorkerServiceServicer):
    """``sends_acks``: answer a Hello that accepts acks with ``Welcome.sends_acks`` (the test sends the acks).
    ``standby_for``: not None, refuse every Connect as a standby naming that leader (``""``: none known)."""

    def __init__(
        self,
        heartbeat_interval: float = 0.1,
        lease_timeout: float = 2.0,
        sends_acks: bool = False,
        standby_for: str | None = None,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.lease_timeout = lease_timeout
        self.sends_acks = sends_acks
        self.standby_for = standby_for
        self.refusals = 0
        self.streams: list[FakeStream] = []

    @property
    def latest(self) -> FakeStream | None:
        return self.streams[-1] if self.streams else None

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self.standby_for is not None:
            self.refusals += 1
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "this manager (fake-standby) is a standby: the job store is held by another manager",
                _refusal_metadata(self.standby_for),
            )
        await context.send_initial_metadata(())  # as the manager does: headers before the Hello is read
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Hello first")
        stream = FakeStream(index=len(self.streams), hello=first.hello)
        self.streams.append(stream)
        await context.write(
            pb.ManagerMessage(
                welcome=pb.Welcome(
                    lease_timeout=wire.duration(self.lease_timeout),
                    heartbeat_interval=wire.duration(self.heartbeat_interval),
                    manager_id="fake-manager",
                    sends_acks=self.sends_acks and first.hello.accepts_acks,
                )
            )
        )

        async def read() -> None:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    stream.half_closed.set()
                    await stream.outgoing.put(_END)
                    return
                stream.received.append(message)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await stream.outgoing.get()
                if isinstance(item, _Drop):
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE, "dropped by the test", _refusal_metadata(item.leader)
                    )
                if item is _END:
                    return
                await context.write(item)
        finally:
            reader.cancel()
            stream.finished.set()


class FakeManagerServer:
    """A grpc.aio server with a FakeManager on 127.0.0.1; can be stopped and started again on the same port."""

    def __init__(self, manager: FakeManager | None = None) -> None:
        self.manager = manager or FakeManager()
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> str:
        server = grpc.aio.server(options=SERVER_OPTIONS)  # the manager's keepalive and ping policy
        pb_grpc.add_WorkerServiceServicer_to_server(self.manager, server)
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert port, "could not bind the fake manager"
        self.port = port
        await server.start()
        self._server = server
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None


@contextlib.asynccontextmanager
async def fake_manager(**kwargs: Any) -> AsyncIterator[FakeManagerServer]:
    server = FakeManagerServer(FakeManager(**kwargs))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
