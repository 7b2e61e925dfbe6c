"""Bytes that do not parse as the request message end the call with INVALID_ARGUMENT.

Left to itself, gRPC answers a request it cannot deserialize with UNKNOWN ("Unexpected DecodeError"), which
tells the caller nothing and looks like a server bug. This interceptor parses leniently: a message that fails
to parse becomes a ``Malformed`` marker, and the call is aborted with INVALID_ARGUMENT before the servicer sees
it (for a streaming request, when the stream reaches that message).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from manager_service.errors import MessageMalformed
from manager_service.rpc_errors import abort_with

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime classes are not generic
    _ServerInterceptor = grpc.aio.ServerInterceptor

Context = grpc.aio.ServicerContext[Any, Any]
OWN_SERVICES_PREFIX = "/dbmaint.v1."


class Malformed:
    """Stands for a request message that did not parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return Malformed(str(error) or "cannot parse the message")

    return parse


async def _refuse(context: Context, item: Malformed) -> None:
    await abort_with(context, MessageMalformed(item.reason))


async def _checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    async for item in requests:
        if isinstance(item, Malformed):
            await _refuse(context, item)
        yield item


def guarded(handler: Handler) -> Handler:
    """``handler`` with lenient parsing and the Malformed check in front of its behavior."""
    parse = _lenient(handler.request_deserializer) if handler.request_deserializer else None
    serialize = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        stream_stream: Any = handler.stream_stream

        async def stream_stream_behavior(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for response in stream_stream(_checked(requests, context), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            stream_stream_behavior, request_deserializer=parse, response_serializer=serialize
        )
    if handler.request_streaming:
        stream_unary: Any = handler.stream_unary

        async def stream_unary_behavior(requests: AsyncIterator[Any], context: Context) -> Any:
            return await stream_unary(_checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary_behavior, request_deserializer=parse, response_serializer=serialize
        )
    if handler.response_streaming:
        unary_stream: Any = handler.unary_stream

        async def unary_stream_behavior(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await _refuse(context, request)
            async for response in unary_stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream_behavior, request_deserializer=parse, response_serializer=serialize
        )
    unary_unary: Any = handler.unary_unary

    async def unary_unary_behavior(request: Any, context: Context) -> Any:
        if isinstance(request, Malformed):
            await _refuse(context, request)
        return await unary_unary(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary_unary_behavior, request_deserializer=parse, response_serializer=serialize
    )


class MalformedRequestInterceptor(_ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        # Only dbmaint's own services: health and reflection are gRPC's, and some of their streaming handlers
        # write through the context instead of yielding, which this wrapper does not handle.
        ours = handler_call_details.method.startswith(OWN_SERVICES_PREFIX)
        if handler is None or handler.request_deserializer is None or not ours:
            return handler
        return guarded(handler)
