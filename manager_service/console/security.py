"""The console's security decisions, pure (the aiohttp middleware in ``app`` only applies them): which Host
headers are served (DNS rebinding), who a request is (a session cookie or a bearer token), whether it may do what
it asks (401, 403, the CSRF token of a state-changing request), the session table, and the response headers."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from manager_service.auth import AuthPolicy, Role
from manager_service.config import is_loopback

SESSION_COOKIE = "dbmaint_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600.0
# Sessions kept at most: beyond it the oldest goes (with auth off, every cookie-less page view opens one).
MAX_SESSIONS = 10_000

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": with it a browser sends "Origin: null" on the console's own form POSTs, which the
    # cross-site check must refuse. "same-origin" sends the real Origin to the console and nothing elsewhere.
    "Referrer-Policy": "same-origin",
}

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def host_name(host_header: str) -> str:
    """The host of a Host header (or of HOST:PORT), lower case, without its port or IPv6 brackets."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value  # a bare name, or a bare IPv6 address


def allowed_hosts(listen: str, advertise: str) -> frozenset[str]:
    """The Host names the console answers to: the one it listens on, the advertised one, and the loopback names
    when it listens on loopback or on every address. Any other name may be an attacker's domain re-pointed at
    this address (DNS rebinding)."""
    listen_host = host_name(listen.rpartition(":")[0] or listen)
    names = {host_name(advertise.rpartition(":")[0])} if advertise else set()
    if listen_host not in WILDCARD_HOSTS:
        names.add(listen_host)
    if listen_host in WILDCARD_HOSTS or is_loopback(listen_host):
        names |= LOOPBACK_NAMES
    names.discard("")
    return frozenset(names)


def host_allowed(host_header: str | None, allowed: Iterable[str]) -> bool:
    return host_header is not None and host_name(host_header) in allowed


@dataclass(slots=True)
class Session:
    id: str = field(repr=False)
    role: Role
    csrf_token: str = field(repr=False)
    expires_at: float


class Sessions:
    """The server-side session table, in memory (a restart logs everyone out), each session ending
    ``SESSION_SECONDS`` after it began."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        lifetime: float = SESSION_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}

    def open(self, role: Role) -> Session:
        self._prune()
        while len(self._sessions) >= self._max_sessions:
            del self._sessions[next(iter(self._sessions))]  # the oldest: dicts keep insertion order
        session = Session(
            secrets.token_urlsafe(32), role, secrets.token_urlsafe(32), self._clock() + self._lifetime
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None or session.expires_at <= self._clock():
            self._sessions.pop(session_id, None)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self) -> None:
        now = self._clock()
        for expired in [key for key, session in self._sessions.items() if session.expires_at <= now]:
            del self._sessions[expired]


class Verdict(StrEnum):
    ALLOW = "allow"
    UNAUTHENTICATED = "unauthenticated"  # 401 (a page: to the login form)
    FORBIDDEN = "forbidden"  # 403: the role may not do this
    CSRF = "csrf"  # 403: a state-changing request without the session's CSRF token


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role | None  # None: nobody
    by_bearer: bool = False
    session: Session | None = None


CONSOLE_ROLES = frozenset({Role.CLIENT, Role.READONLY})


def principal(policy: AuthPolicy, bearer: str | None, session: Session | None) -> Principal:
    """Who makes the request: a bearer token wins over a cookie (a script); with auth off, anyone may do
    everything (a loopback-only console, see ``manager_service.config``)."""
    if bearer is not None:
        if not policy.enabled:
            return Principal(Role.CLIENT, by_bearer=True)
        return Principal(policy.role_of(bearer), by_bearer=True)
    if session is not None:
        return Principal(session.role, session=session)
    if not policy.enabled:
        return Principal(Role.CLIENT)
    return Principal(None)


def decide(who: Principal, writes: bool, csrf_sent: str | None, client_only: bool = True) -> Verdict:
    """May ``who`` make a request that reads (``writes`` False) or changes something (a POST)? A change needs
    the client role unless ``client_only`` is False (logging out).

    A bearer request needs no CSRF token: a browser never adds an Authorization header by itself, and a page of
    another origin cannot add one without a CORS preflight, which the console never grants. Every other
    state-changing request must carry its session's CSRF token (with auth off too: a page of another site could
    otherwise post to a console on loopback)."""
    if who.role is None:
        return Verdict.UNAUTHENTICATED
    if who.role not in CONSOLE_ROLES:
        return Verdict.FORBIDDEN  # a worker token
    if not writes:
        return Verdict.ALLOW
    if not who.by_bearer:
        expected = who.session.csrf_token if who.session is not None else None
        if expected is None or not csrf_sent or not hmac.compare_digest(csrf_sent.encode(), expected.encode()):
            return Verdict.CSRF
    if client_only and who.role is not Role.CLIENT:
        return Verdict.FORBIDDEN
    return Verdict.ALLOW
