"""Who may call what. Three roles with separate bearer tokens: clients call MaintenanceService and
ScheduleService, workers call WorkerService.Connect, and the read-only role (the web console's viewers, scripts
that only look) calls only the read methods (``manager_service.gate.READ_METHODS``, those a standby answers).
grpc.health.v1 and reflection stay open (reflection is switched by its own flag).

``decide`` is the whole policy, pure; ``AuthInterceptor`` applies it before any servicer runs, so a refused call
never reaches the orchestrator or the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import grpc

from dbmaint.auth import AUTHORIZATION, BEARER_PREFIX
from manager_service.gate import READ_METHODS

# How long a refused streaming call waits for the client's first message before ending.
REFUSAL_READ_SECONDS = 1.0


class Role(StrEnum):
    CLIENT = "client"
    WORKER = "worker"
    READONLY = "readonly"


# Method prefixes and the role they need; anything not listed is open (health, reflection) or unknown (gRPC
# answers UNIMPLEMENTED for those).
REQUIRED_ROLES: tuple[tuple[str, Role], ...] = (
    ("/dbmaint.v1.MaintenanceService/", Role.CLIENT),
    ("/dbmaint.v1.WorkerService/", Role.WORKER),
    ("/dbmaint.v1.ScheduleService/", Role.CLIENT),
)


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    # repr=False: a config printed in a log or a traceback never shows a token.
    client_tokens: tuple[str, ...] = field(default=(), repr=False)
    worker_tokens: tuple[str, ...] = field(default=(), repr=False)
    readonly_tokens: tuple[str, ...] = field(default=(), repr=False)

    @property
    def enabled(self) -> bool:
        """With no token configured at all, auth is off (the loopback quickstart)."""
        return bool(self.client_tokens or self.worker_tokens or self.readonly_tokens)

    def role_of(self, token: str) -> Role | None:
        """The role ``token`` grants. Every configured token is compared, each in constant time, so the time
        taken says nothing about which one (or how much of one) matched."""
        presented = token.encode()
        found: Role | None = None
        roles = (
            (Role.CLIENT, self.client_tokens),
            (Role.WORKER, self.worker_tokens),
            (Role.READONLY, self.readonly_tokens),
        )
        for role, tokens in roles:
            for candidate in tokens:
                if hmac.compare_digest(presented, candidate.encode()) and found is None:
                    found = role
        return found


@dataclass(frozen=True, slots=True)
class Refusal:
    code: grpc.StatusCode
    message: str


def required_role(method: str) -> Role | None:
    return next((role for prefix, role in REQUIRED_ROLES if method.startswith(prefix)), None)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of the first ``authorization: Bearer ...`` entry; None when there is none."""
    for key, value in metadata:
        if key.lower() == AUTHORIZATION:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if text[: len(BEARER_PREFIX)].lower() == BEARER_PREFIX.lower():
                return text[len(BEARER_PREFIX) :].strip()
            return None
    return None


def decide(policy: AuthPolicy, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> Refusal | None:
    """None when the call may go on; otherwise the status to end it with (no token is ever echoed back)."""
    needed = required_role(method)
    if needed is None or not policy.enabled:
        return None
    token = bearer_token(metadata)
    if not token:
        return Refusal(grpc.StatusCode.UNAUTHENTICATED, "missing credentials: send authorization: Bearer <token>")
    role = policy.role_of(token)
    if role is None:
        return Refusal(grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
    if role is Role.READONLY and needed is Role.CLIENT and method in READ_METHODS:
        return None
    if role is not needed:
        return Refusal(grpc.StatusCode.PERMISSION_DENIED, f"a {role} credential cannot call {method}")
    return None


if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime classes are not generic
    _ServerInterceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_ServerInterceptor):
    def __init__(self, policy: AuthPolicy) -> None:
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        refusal = decide(self._policy, handler_call_details.method, handler_call_details.invocation_metadata or ())
        handler = await continuation(handler_call_details)
        if refusal is None or handler is None:
            return handler
        return _refusing(handler, refusal)


def _refusing(handler: Handler, refusal: Refusal) -> Handler:
    """A handler of the same shape as ``handler`` that ends the call with ``refusal`` and reads nothing."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(refusal.code, refusal.message)

    async def refuse_streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if handler.request_streaming:
            # Let the client's first message arrive before ending the call: a bidi call refused mid-write can
            # reach the client as a bare INTERNAL instead of the status sent here.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(anext(aiter(request)), REFUSAL_READ_SECONDS)
        await context.abort(refusal.code, refusal.message)
        yield  # never reached: this makes it the async generator a streaming response needs

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    behavior = refuse_streaming if handler.response_streaming else refuse
    return make(  # type: ignore[no-any-return]
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
