"""The manager's gRPC server: servicers, grpc.health.v1, reflection; ``run`` and an idempotent ``shutdown``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from dbmaint.auth import TlsFiles
from dbmaint.metrics import serve_metrics
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from manager_service.auth import AuthInterceptor
from manager_service.config import ManagerConfig, is_loopback
from manager_service.malformed import MalformedRequestInterceptor
from manager_service.metrics import ManagerMetrics
from manager_service.orchestrator import Orchestrator
from manager_service.reflection import enable_reflection
from manager_service.servicers import MaintenanceServicer, WorkerServicer
from manager_service.store import open_store

log = logging.getLogger(__name__)

MAINTENANCE_SERVICE = pb.DESCRIPTOR.services_by_name["MaintenanceService"].full_name
WORKER_SERVICE = pb.DESCRIPTOR.services_by_name["WorkerService"].full_name
HEALTH_SERVICES = ("", MAINTENANCE_SERVICE, WORKER_SERVICE)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Keepalive, both ways, so a half-open link (a worker whose bytes vanish) ends its stream within seconds:
# - the manager pings each connection after KEEPALIVE_TIME_MS without reading from it and drops it when the
#   ping is not answered within KEEPALIVE_TIMEOUT_MS, however long it has sent no data (an idle stream);
# - it admits a client ping every MIN_PING_INTERVAL_MS, data or not: below the worker's keepalive time
#   (worker_service.stream.KEEPALIVE_TIME_MS, 5 s), with room for timer jitter. More frequent pings are strikes;
#   past MAX_PING_STRIKES the client gets GOAWAY ENHANCE_YOUR_CALM ("too_many_pings").
KEEPALIVE_TIME_MS = 5_000
KEEPALIVE_TIMEOUT_MS = 5_000
MIN_PING_INTERVAL_MS = 2_000
MAX_PING_STRIKES = 2
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # What actually ends the transport when a ping goes unanswered (gRPC core's own default is a minute).
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
]


class ManagerServer:
    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._orchestrator: Orchestrator | None = None
        self._health = HealthServicer()
        self._stopped = asyncio.Event()
        self._shutdown_started = False
        self.metrics = ManagerMetrics()
        self.metrics_port = 0
        self._metrics_server: WSGIServer | None = None

    async def start(self) -> int:
        """Open the store, rebuild the in-flight state, and start serving. Returns the bound port."""
        store = await asyncio.to_thread(open_store, self.config.database_url)
        self._orchestrator = Orchestrator(store, self.config.orchestrator_settings, self.metrics)
        await self._orchestrator.start()
        if self.config.metrics_listen:
            self._metrics_server = serve_metrics(self.config.metrics_listen, self.metrics.registry)
            self.metrics_port = int(self._metrics_server.server_port)
            log.info(
                "metrics on http://%s:%d/metrics", self.config.metrics_listen.rpartition(":")[0], self.metrics_port
            )
        auth = self.config.auth
        server = grpc.aio.server(
            # Auth first: a refused call is not even parsed. Then unparsable requests become INVALID_ARGUMENT.
            interceptors=[*([AuthInterceptor(auth)] if auth.enabled else []), MalformedRequestInterceptor()],
            options=SERVER_OPTIONS,
        )
        pb_grpc.add_MaintenanceServiceServicer_to_server(
            MaintenanceServicer(self._orchestrator, self.config.limits), server
        )
        pb_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(self._orchestrator), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.config.serves_reflection:
            enable_reflection(
                (MAINTENANCE_SERVICE, WORKER_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
                server,
            )
        tls = self.config.tls
        if tls is not None:
            self.port = server.add_secure_port(self.config.listen, tls.server_credentials())
        else:
            self.port = server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        self._server = server
        for service in HEALTH_SERVICES:
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        host = self.config.listen.rpartition(":")[0]
        log.info(
            "dbmaint-manager listening on %s:%d (%s; auth %s; reflection %s; store %s)",
            host,
            self.port,
            _transport(tls),
            "on" if auth.enabled else "off",
            "on" if self.config.serves_reflection else "off",
            _safe_url(self.config.database_url),
        )
        if not auth.enabled and not is_loopback(host):
            log.warning(
                "!!! listening on %s WITHOUT AUTHENTICATION: anyone who can reach this port can create and cancel "
                "jobs and connect as a worker. Set DBMAINT_CLIENT_TOKENS and DBMAINT_WORKER_TOKENS (and TLS).",
                host,
            )
        return self.port

    async def wait(self) -> None:
        """Until shutdown, or until a side task of the orchestrator dies (then raise its error)."""
        assert self._orchestrator is not None
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self._stopped.wait())
        fatal: asyncio.Future[Any] = self._orchestrator.fatal
        done, _ = await asyncio.wait({stopped, fatal}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if self._orchestrator.fatal in done:
            await self.shutdown()
            self._orchestrator.fatal.result()

    async def shutdown(self) -> None:
        """NOT_SERVING first, then stop dispatching, close worker streams cleanly, stop the server. Idempotent."""
        if self._shutdown_started:
            await self._stopped.wait()
            return
        self._shutdown_started = True
        log.info("shutting down: health NOT_SERVING, closing worker streams")
        await self._health.enter_graceful_shutdown()
        if self._orchestrator is not None:
            await self._orchestrator.shutdown()
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace)
        if self._orchestrator is not None:
            await asyncio.to_thread(self._orchestrator.close_store)
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)
        self._stopped.set()
        log.info("stopped")


def _transport(tls: TlsFiles | None) -> str:
    if tls is None:
        return "plaintext"
    return "TLS, client certificates required" if tls.ca is not None else "TLS"


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
