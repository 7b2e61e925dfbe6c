"""A running manager with its console on a free loopback port, and an HTTP client for it."""

from __future__ import annotations

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
