"""The optional ``grpc.health.v1`` server (``--health-listen``).

SERVING while the worker holds a welcomed stream to the manager; NOT_SERVING while it is disconnected or
draining. The status is published for the overall service ``""`` and for ``"dbmaint.worker"``.
"""

from __future__ import annotations

import asyncio
import logging

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

log = logging.getLogger(__name__)

SERVICE_NAMES = ("", "dbmaint.worker")


class HealthServerError(Exception):
    """The health server could not listen on its address."""


class HealthServer:
    """A small grpc.aio server with only the health service."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.port = 0
        self._servicer = HealthServicer()
        self._server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, self._server)
        self._serving: bool | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> int:
        """Listen (NOT_SERVING until told otherwise) and return the bound port."""
        try:
            self.port = self._server.add_insecure_port(self.listen)
        except RuntimeError as exc:
            raise HealthServerError(f"cannot listen on {self.listen} for health checks: {exc}") from None
        if self.port == 0:
            raise HealthServerError(f"cannot listen on {self.listen} for health checks")
        await self.set_serving(False)
        await self._server.start()
        log.info("health server listening on port %d", self.port)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        async with self._lock:  # one change at a time: both names always end with the latest status
            if serving == self._serving:
                return
            self._serving = serving
            status = (
                health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in SERVICE_NAMES:
                await self._servicer.set(name, status)

    async def stop(self) -> None:
        await self.set_serving(False)
        await self._server.stop(grace=0.5)
