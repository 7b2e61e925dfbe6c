"""Which manager answers dbmaint's services: the one that holds the store lease.

The gRPC server is built once, but the servicers change with every leadership term (each term has its own
Orchestrator). ``LeaderGate`` is the innermost interceptor: while this manager leads, calls to dbmaint's
services go to the handlers of the current term's servicers. On a standby, the read methods (``READ_METHODS``)
go to the standby's read handlers (``serve_reads``), and every other call (writes, worker streams) ends
UNAVAILABLE with a message that names the manager holding the store, and the trailing metadata
``dbmaint-leader`` with its advertised address while its lease is alive (none when that is not known). Health
and reflection are not gated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from manager_service.errors import NotLeading
from manager_service.malformed import OWN_SERVICES_PREFIX
from manager_service.rpc_errors import abort_with

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime classes are not generic
    _ServerInterceptor = grpc.aio.ServerInterceptor
    GenericHandler = grpc.GenericRpcHandler

Context = grpc.aio.ServicerContext[Any, Any]

# The methods a standby answers from the store.
READ_METHODS = frozenset(
    {
        "/dbmaint.v1.MaintenanceService/GetJob",
        "/dbmaint.v1.MaintenanceService/ListJobs",
        "/dbmaint.v1.MaintenanceService/WatchJob",
        "/dbmaint.v1.MaintenanceService/ListWorkers",
        "/dbmaint.v1.ScheduleService/GetSchedule",
        "/dbmaint.v1.ScheduleService/ListSchedules",
        "/dbmaint.v1.ScheduleService/ListFirings",
    }
)


class HandlerTable:
    """Stands in for a server when the generated ``add_*Servicer_to_server`` functions register a servicer:
    keeps its handlers, to be looked up per call."""

    def __init__(self) -> None:
        self._generic: list[GenericHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[GenericHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        pass  # the same handlers also come through add_generic_rpc_handlers

    def find(self, details: grpc.HandlerCallDetails) -> Handler | None:
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


def _refusing(handler: Handler, refusal: Callable[[], NotLeading]) -> Handler:
    """A handler of the same shape as ``handler`` that ends the call UNAVAILABLE with ``refusal()``."""
    parse, serialize = handler.request_deserializer, handler.response_serializer

    async def refuse(context: Context) -> None:
        await abort_with(context, refusal())

    if handler.request_streaming and handler.response_streaming:

        async def stream_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            await refuse(context)
            yield  # pragma: no cover - abort raises

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=parse, response_serializer=serialize
        )
    if handler.request_streaming:

        async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
            await refuse(context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, request_deserializer=parse, response_serializer=serialize
        )
    if handler.response_streaming:

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await refuse(context)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=parse, response_serializer=serialize
        )

    async def unary_unary(request: Any, context: Context) -> Any:
        await refuse(context)

    return grpc.unary_unary_rpc_method_handler(
        unary_unary, request_deserializer=parse, response_serializer=serialize
    )


class LeaderGate(_ServerInterceptor):
    """Routes dbmaint's calls to the leading term's handlers, or refuses them while standing by."""

    def __init__(self) -> None:
        self._table: HandlerTable | None = None
        self._reads: HandlerTable | None = None
        self._refusal = "this manager is starting"
        self._leader: Callable[[], str] = _unknown

    @property
    def leading(self) -> bool:
        return self._table is not None

    def lead(self, table: HandlerTable) -> None:
        self._table = table

    def stand_by(self, refusal: str, leader: Callable[[], str] | None = None) -> None:
        """From now on every new call to dbmaint's services ends UNAVAILABLE with ``refusal``, and the address
        ``leader()`` gives at that moment (if any) as the leader hint."""
        self._table = None
        self._refusal = refusal
        self._leader = leader or _unknown

    def leader_hint(self) -> str:
        """The leader's address a refusal names now ("" while this manager leads, or when it is not known)."""
        return "" if self._table is not None else self._leader()

    def serve_reads(self, table: HandlerTable | None) -> None:
        """While standing by, answer ``READ_METHODS`` with ``table``'s handlers (None: refuse them too)."""
        self._reads = table

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        if not handler_call_details.method.startswith(OWN_SERVICES_PREFIX):
            return await continuation(handler_call_details)
        table = self._table
        if table is not None:
            handler = table.find(handler_call_details)
            if handler is not None:
                return handler
        reads = self._reads
        if table is None and reads is not None and handler_call_details.method in READ_METHODS:
            handler = reads.find(handler_call_details)
            if handler is not None:
                return handler
        # The handler registered on the server (a servicer that implements nothing) gives the call's shape.
        registered = await continuation(handler_call_details)
        if registered is None or table is not None:
            return registered
        return _refusing(registered, lambda: NotLeading(self._refusal, self._leader()))


def _unknown() -> str:
    return ""
