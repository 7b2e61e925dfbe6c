"""The one map from domain errors to status codes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from manager_service import errors
from manager_service.events import WatcherDropped
from manager_service.rpc_errors import status_code_for, trailing_metadata, translate_errors


def _domain_errors() -> list[type[errors.DomainError]]:
    found = [
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, errors.DomainError) and kind is not errors.DomainError
    ]
    return [*found, WatcherDropped]


def _instance(kind: type[errors.DomainError]) -> errors.DomainError:
    # Only the class decides the code: an instance without its constructor's arguments does.
    return kind.__new__(kind)


def test_every_domain_error_has_a_status_code_other_than_internal() -> None:
    unmapped = [k.__name__ for k in _domain_errors() if status_code_for(_instance(k)) is grpc.StatusCode.INTERNAL]
    assert unmapped == []


def test_store_and_lease_errors_end_unavailable_like_their_base() -> None:
    for kind in (errors.StoreUnavailable, errors.CommitOutcomeUnknown, errors.LeaseLost, errors.ShuttingDown):
        assert status_code_for(_instance(kind)) is grpc.StatusCode.UNAVAILABLE


def test_a_domain_error_missing_from_the_map_is_answered_internal() -> None:
    class Unmapped(errors.DomainError):
        pass

    assert status_code_for(Unmapped("a bug")) is grpc.StatusCode.INTERNAL


class _Context:
    """Records the status a call ended with; ``abort`` raises like gRPC's."""

    def __init__(self) -> None:
        self.ended: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        self.ended = (code, details)
        self.trailing_metadata = tuple(trailing_metadata)
        raise grpc.aio.AbortError()


class _Servicer:
    def __init__(self) -> None:
        self.closed = False

    @translate_errors
    async def Lookup(self, request: str, context: Any) -> str:
        raise errors.JobNotFound(request)

    @translate_errors
    async def Stream(self, request: str, context: Any) -> AsyncIterator[str]:
        try:
            yield "first"
            if request == "drop":
                raise WatcherDropped("too slow")
            if request == "bug":
                raise RuntimeError("a bug")
            yield "second"
        finally:
            self.closed = True


def _drain(servicer: _Servicer, request: str, context: _Context) -> list[str]:
    async def collect() -> list[str]:
        received = []
        with pytest.raises(grpc.aio.AbortError):
            async for response in servicer.Stream(request, context):
                received.append(response)
        return received

    return asyncio.run(collect())


def test_a_unary_method_ends_with_the_code_of_its_domain_error() -> None:
    context = _Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(_Servicer().Lookup("j-1", context))
    assert context.ended == (grpc.StatusCode.NOT_FOUND, "job 'j-1' not found")


def test_a_streaming_method_ends_with_the_code_of_an_error_raised_after_its_first_response() -> None:
    context = _Context()
    assert _drain(_Servicer(), "drop", context) == ["first"]
    assert context.ended == (grpc.StatusCode.UNAVAILABLE, "too slow")


def test_an_unexpected_error_in_a_streaming_method_ends_internal() -> None:
    context = _Context()
    assert _drain(_Servicer(), "bug", context) == ["first"]
    assert context.ended is not None and context.ended[0] is grpc.StatusCode.INTERNAL


def test_a_streaming_method_closed_early_runs_its_finally_at_once() -> None:
    servicer = _Servicer()

    async def take_one() -> None:
        responses = servicer.Stream("ok", _Context())
        assert await anext(responses) == "first"
        await responses.aclose()  # what gRPC does when the client hangs up
        assert servicer.closed, "the method's finally waits for the garbage collector"

    asyncio.run(take_one())


NOT_RUN = ("dbmaint-not-run", "1")


def test_a_refusal_by_a_manager_that_does_not_lead_names_the_leader_and_says_nothing_was_run() -> None:
    standby = errors.NotLeading("this manager is a standby", leader="10.0.0.2:50051")
    assert trailing_metadata(standby) == (("dbmaint-leader", "10.0.0.2:50051"), NOT_RUN)
    lost = errors.LeaseLost("another manager took the store", "m2", "10.0.0.2:50051", leader="10.0.0.2:50051")
    assert trailing_metadata(lost) == (("dbmaint-leader", "10.0.0.2:50051"), NOT_RUN)


def test_no_leader_hint_when_the_leader_is_unknown_and_no_not_run_mark_when_the_outcome_is_unknown() -> None:
    assert trailing_metadata(errors.NotLeading("this manager is starting")) == (NOT_RUN,)
    lapsed = errors.LeaseLost("the lease lapsed", "m2", "10.0.0.2:50051")  # named, but its lease is not alive
    assert trailing_metadata(lapsed) == (NOT_RUN,)
    assert trailing_metadata(errors.StoreUnavailable("the store is down")) == (NOT_RUN,)
    assert trailing_metadata(errors.ShuttingDown("the manager is shutting down")) == (NOT_RUN,)
    assert trailing_metadata(errors.CommitOutcomeUnknown("a COMMIT was cut")) == ()
    assert trailing_metadata(errors.JobNotFound("job-1")) == ()
