"""The console's aiohttp app, served in the manager's own event loop next to grpc.aio (``Console``: started and
stopped with the manager), with the security middleware (its decisions are ``security``'s), the login form and
a minimal front page."""

from __future__ import annotations

import asyncio
import html
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from manager_service.auth import Role, bearer_token
from manager_service.console import security
from manager_service.console.api import Api, ApiError
from manager_service.console.events import ChangeFeed, EventStream
from manager_service.console.pages import Pages
from manager_service.console.security import Principal, Session, Sessions, Verdict

if TYPE_CHECKING:
    from manager_service.server import ManagerServer

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = web.RequestKey("principal", Principal)
# Pages and endpoints open without a login: the login form itself.
OPEN_PATHS = frozenset({"/login"})
STATIC_PREFIX = "/static/"  # the stylesheet and script: the login form needs them too


class Console:
    """The web console of one manager process."""

    def __init__(self, server: ManagerServer) -> None:
        self._server = server
        self._config = server.config
        self._sessions = Sessions()
        self._runner: web.AppRunner | None = None
        self._allowed_hosts: frozenset[str] = frozenset()
        self._closing = asyncio.Event()  # ends the event streams
        tls = self._config.http_tls
        self._ssl: ssl.SSLContext | None = None
        if tls is not None:
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            self._ssl.load_cert_chain(*tls)
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.on_response_prepare.append(_security_headers)
        app.add_routes(Api(self._server).routes())
        app.add_routes([web.get("/api/v1/events", EventStream(self._feed, self._closing).handle)])
        app.add_routes(
            [
                web.get("/login", self._login_form),
                web.post("/login", self._login),
                web.post("/logout", self._logout),
            ]
        )
        app.add_routes(Pages(self).routes())
        return app

    @property
    def server(self) -> ManagerServer:
        return self._server

    def principal(self, request: web.Request) -> Principal:
        return request[PRINCIPAL]

    def page_session(self, who: Principal) -> tuple[Session | None, bool]:
        """The session whose CSRF token a page's forms carry, and whether it was opened now (with auth off, a
        cookie-less visitor gets one; its cookie must then be set)."""
        if who.session is None and not self._config.auth.enabled and not who.by_bearer:
            return self._sessions.open(Role.CLIENT), True
        return who.session, False

    def set_session_cookie(self, response: web.StreamResponse, session: Session) -> None:
        self._set_cookie(response, session)

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        host, _, port = self._config.http_listen.rpartition(":")
        self._allowed_hosts = security.allowed_hosts(self._config.http_listen, self._server.advertised_address)
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=self._config.shutdown_grace
        )
        await runner.setup()
        site = web.TCPSite(runner, host.strip("[]") or None, int(port), ssl_context=self._ssl)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("web console on %s://%s:%d/", self.scheme, host, self.port)
        return self.port

    def _feed(self) -> ChangeFeed | None:
        servicers = self._server.servicers
        return servicers.changes if servicers is not None else None

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- security

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        is_api = request.path.startswith("/api/")
        if not security.host_allowed(request.headers.get("Host"), self._allowed_hosts):
            return _refusal(is_api, 421, "MISDIRECTED", "this console does not answer to that host name")
        writes = request.method not in ("GET", "HEAD", "OPTIONS")
        origin = request.headers.get("Origin")
        if writes and origin is not None and not _same_origin(origin, self._allowed_hosts):
            return _refusal(is_api, 403, "PERMISSION_DENIED", "a request from another site")
        if request.path in OPEN_PATHS or request.path.startswith(STATIC_PREFIX):
            return await handler(request)
        session = self._sessions.get(request.cookies.get(security.SESSION_COOKIE))
        bearer = bearer_token(request.headers.items()) if "Authorization" in request.headers else None
        who = security.principal(self._config.auth, bearer, session)
        csrf = request.headers.get(security.CSRF_HEADER)
        if csrf is None and writes and request.content_type == "application/x-www-form-urlencoded":
            csrf = str((await request.post()).get(security.CSRF_FIELD, ""))
        verdict = security.decide(who, writes, csrf, client_only=request.path != "/logout")
        if verdict is Verdict.UNAUTHENTICATED:
            if not is_api:
                raise web.HTTPSeeOther("/login")
            return ApiError(
                grpc.StatusCode.UNAUTHENTICATED, "log in, or send Authorization: Bearer <token>"
            ).response()
        if verdict is Verdict.CSRF:
            return _refusal(
                is_api, 403, "PERMISSION_DENIED", f"missing or wrong CSRF token ({security.CSRF_HEADER})"
            )
        if verdict is Verdict.FORBIDDEN:
            return _refusal(is_api, 403, "PERMISSION_DENIED", f"a {who.role} credential cannot do this")
        request[PRINCIPAL] = who
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()

    def _set_cookie(self, response: web.StreamResponse, session: Session) -> None:
        secure = self._ssl is not None
        response.set_cookie(
            security.SESSION_COOKIE, session.id, httponly=True, samesite="Strict", secure=secure, path="/"
        )

    # -- pages

    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        if not self._config.auth.enabled:
            raise web.HTTPSeeOther("/")
        return _page("Log in", _LOGIN_FORM.format(error=""))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        if not self._config.auth.enabled:
            raise web.HTTPSeeOther("/")
        form = await request.post()
        token = str(form.get("token", "")).strip()
        role = self._config.auth.role_of(token) if token else None
        if role not in security.CONSOLE_ROLES or role is None:
            error = '<p class="error" role="alert">That token is not valid here.</p>'
            return _page("Log in", _LOGIN_FORM.format(error=error), status=401)
        response = _see_other("/")
        self._set_cookie(response, self._sessions.open(role))
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        self._sessions.close(request.cookies.get(security.SESSION_COOKIE))
        response = _see_other("/login" if self._config.auth.enabled else "/")
        response.del_cookie(security.SESSION_COOKIE, path="/")
        return response


_LOGIN_FORM = (
    '<h1>dbmaint</h1><form method="post" action="/login">{error}'
    '<label for="token">Token</label> '
    '<input id="token" name="token" type="password" autocomplete="current-password" '
    'required autofocus> <button type="submit">Log in</button></form>'
)


def _page(title: str, body: str, status: int = 200, csrf: str = "") -> web.Response:
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/console.css">'
        f'<meta name="csrf-token" content="{html.escape(csrf)}"><title>{html.escape(title)}</title></head>'
        f'<body><main class="login">{body}</main></body></html>'
    )
    return web.Response(text=text, status=status, content_type="text/html")


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _refusal(is_api: bool, status: int, code: str, message: str) -> web.Response:
    if is_api:
        return web.json_response({"code": code, "message": message}, status=status)
    return web.Response(text=message, status=status)


def _same_origin(origin: str, allowed: frozenset[str]) -> bool:
    host = origin.partition("://")[2]
    return bool(host) and security.host_allowed(host, allowed)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(security.SECURITY_HEADERS)
