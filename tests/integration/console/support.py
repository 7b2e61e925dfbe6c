"""A running manager with its console on a free loopback port, and an HTTP client for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from manager_service.auth import AuthPolicy
from tests.support.manager import Manager, running_manager

CLIENT_TOKEN = "client-token-for-the-console"
READONLY_TOKEN = "readonly-token-for-the-console"
WORKER_TOKEN = "worker-token-for-the-console"
TOKENS = AuthPolicy(
    client_tokens=(CLIENT_TOKEN,), worker_tokens=(WORKER_TOKEN,), readonly_tokens=(READONLY_TOKEN,)
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Console:
    manager: Manager
    url: str

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A browser-like client: it keeps cookies (for an IP address too) and does not follow redirects."""
        return aiohttp.ClientSession(base_url=self.url, cookie_jar=aiohttp.CookieJar(unsafe=True), **kwargs)


@asynccontextmanager
async def console(tmp_path: Path, **overrides: Any) -> AsyncIterator[Console]:
    overrides.setdefault("http_listen", "127.0.0.1:0")
    async with running_manager(tmp_path, **overrides) as manager:
        scheme = "https" if manager.config.http_tls is not None else "http"
        yield Console(manager, f"{scheme}://127.0.0.1:{manager.server.http_port}")


@dataclass
class Event:
    id: str
    kind: str
    data: Any


class Stream:
    """An open event stream, read into ``events`` in the background."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.events: list[Event] = []
        self._response = response
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        async for raw in self._response.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if "event" in fields:
                    self.events.append(Event(fields.get("id", ""), fields["event"], json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    async def until(self, predicate: Any, timeout: float = 10.0) -> Event:
        async def look() -> Event:
            while True:
                found = next((e for e in self.events if predicate(e)), None)
                if found is not None:
                    return found
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(look(), timeout)


@asynccontextmanager
async def stream(c: Console, last_event_id: str | None = None, after: str | None = None) -> AsyncIterator[Stream]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    path = "/api/v1/events" + (f"?after={after}" if after is not None else "")
    async with c.client() as http, http.get(path, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        opened = Stream(response)
        try:
            yield opened
        finally:
            opened.task.cancel()
            await asyncio.gather(opened.task, return_exceptions=True)


def of(job_id: str, status: str | None = None) -> Any:
    return lambda e: e.kind == "job" and e.data["id"] == job_id and (status is None or e.data["status"] == status)
