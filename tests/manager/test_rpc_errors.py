"""The one map from domain errors to status codes."""

from __future__ import annotations

import inspect

import grpc

from manager_service import errors
from manager_service.events import WatcherDropped
from manager_service.rpc_errors import status_code_for


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
