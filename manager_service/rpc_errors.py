"""The RPC edge of the domain errors: the ONE map from a domain error to the gRPC status a client sees, and the
``translate_errors`` decorator that applies it to every servicer method, unary and streaming alike.

Rules: a DomainError ends the call with its mapped code and its own message (a refusal by a manager that does
not lead, NotLeading or LeaseLost, also with the leader's address in the trailing metadata key
``dbmaint-leader`` when it is known; an error raised before anything changed, ``not_run``, also with the key
``dbmaint-not-run``); any other exception is a bug,
logged with its traceback and answered INTERNAL (never a crash of the process); a cancelled call and a call
already ended by ``context.abort`` pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc

from dbmaint.transport import LEADER_METADATA_KEY, NOT_RUN_METADATA_KEY
from manager_service.errors import (
    DomainError,
    JobAlreadyFinished,
    JobNotFound,
    LeaseLost,
    LimitReached,
    MessageMalformed,
    NotLeading,
    RequestIdReused,
    RequestInvalid,
    ScheduleChanged,
    ScheduleExists,
    ScheduleNotFound,
    SlotAlreadyRecorded,
    Unavailable,
    WorkerAlreadyConnected,
    WorkerNotFound,
)
from manager_service.events import WatcherDropped

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# Subclasses follow their base (LeaseLost, StoreUnavailable, ShuttingDown are Unavailable: ask again, maybe
# another manager).
STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    RequestInvalid: grpc.StatusCode.INVALID_ARGUMENT,
    MessageMalformed: grpc.StatusCode.INVALID_ARGUMENT,
    JobNotFound: grpc.StatusCode.NOT_FOUND,
    WorkerNotFound: grpc.StatusCode.NOT_FOUND,
    ScheduleNotFound: grpc.StatusCode.NOT_FOUND,
    ScheduleExists: grpc.StatusCode.ALREADY_EXISTS,
    # A manual firing raced the scheduler (or another manager) on the same instant: try again.
    ScheduleChanged: grpc.StatusCode.ABORTED,
    SlotAlreadyRecorded: grpc.StatusCode.ABORTED,
    JobAlreadyFinished: grpc.StatusCode.FAILED_PRECONDITION,
    RequestIdReused: grpc.StatusCode.ALREADY_EXISTS,
    WorkerAlreadyConnected: grpc.StatusCode.ALREADY_EXISTS,
    LimitReached: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    WatcherDropped: grpc.StatusCode.UNAVAILABLE,
}


def status_code_for(error: DomainError) -> grpc.StatusCode:
    """The code of ``error``'s nearest class in the map (a domain error missing from it is a bug: INTERNAL)."""
    nearest = next((kind for kind in type(error).__mro__ if kind in STATUS_CODES), None)
    return STATUS_CODES[nearest] if nearest is not None else grpc.StatusCode.INTERNAL


async def abort_with(context: Context, error: BaseException, method: str = "the call") -> NoReturn:
    """End the call for ``error``: its mapped status if it is a domain error, INTERNAL (logged) otherwise."""
    if isinstance(error, DomainError):
        await context.abort(status_code_for(error), str(error), trailing_metadata(error))
    log.exception("%s failed unexpectedly", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method} failed unexpectedly; see the manager log")


def trailing_metadata(error: DomainError) -> tuple[tuple[str, str], ...]:
    """What a refused client reads besides the status: the leader's address if ``error`` knows it, and the
    mark that the call was not carried out (``error.not_run``)."""
    leader = error.leader if isinstance(error, (NotLeading, LeaseLost)) else ""
    hint = ((LEADER_METADATA_KEY, leader),) if leader else ()
    return hint + (((NOT_RUN_METADATA_KEY, "1"),) if error.not_run else ())


Method = TypeVar("Method", bound=Callable[..., Any])


def translate_errors(method: Method) -> Method:
    """``method`` (a servicer method: a coroutine, or an async generator for a streaming response) with its
    errors ended as statuses by ``abort_with``."""
    name = method.__name__
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streaming(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                # aclosing: however this generator ends (closed by gRPC on a hang-up too), the method's own
                # finally blocks run now, not when the garbage collector gets to it.
                async with contextlib.aclosing(method(self, request, context)) as responses:
                    async for response in responses:
                        yield response
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as error:
                await abort_with(context, error, name)

        return cast(Method, streaming)

    unary = cast(Callable[[Any, Any, Context], Awaitable[Any]], method)

    @functools.wraps(method)
    async def answering(self: Any, request: Any, context: Context) -> Any:
        try:
            return await unary(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as error:
            await abort_with(context, error, name)

    return cast(Method, answering)
