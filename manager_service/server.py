"""The manager's gRPC server: servicers, grpc.health.v1, reflection, the store lease (leader or standby);
``run`` and an idempotent ``shutdown``."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Coroutine
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from dbmaint.auth import TlsFiles
from dbmaint.metrics import serve_metrics
from dbmaint.transport import SERVER_OPTIONS
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from manager_service.auth import AuthInterceptor
from manager_service.config import ManagerConfig, is_loopback
from manager_service.errors import CommitOutcomeUnknown, LeaseLost, StoreUnavailable
from manager_service.gate import HandlerTable, LeaderGate
from manager_service.malformed import MalformedRequestInterceptor
from manager_service.metrics import NO_FLEET, ManagerMetrics
from manager_service.orchestrator import Orchestrator
from manager_service.reflection import enable_reflection
from manager_service.schedule_servicer import ScheduleReadServicer, ScheduleServicer
from manager_service.servicers import MaintenanceReadServicer, MaintenanceServicer, WorkerServicer
from manager_service.standby import StandbyReader
from manager_service.store import SQLAlchemyJobStore, open_store
from manager_service.store.base import LeaseState
from manager_service.store.sqlalchemy_store import make_engine

log = logging.getLogger(__name__)

MAINTENANCE_SERVICE = pb.DESCRIPTOR.services_by_name["MaintenanceService"].full_name
WORKER_SERVICE = pb.DESCRIPTOR.services_by_name["WorkerService"].full_name
SCHEDULE_SERVICE = spb.DESCRIPTOR.services_by_name["ScheduleService"].full_name
# SERVING only on the manager that holds the job store; the empty name is SERVING while the process runs.
GATED_SERVICES = (MAINTENANCE_SERVICE, WORKER_SERVICE, SCHEDULE_SERVICE)


class ManagerServer:
    """The gRPC server of one manager process. It serves while it runs; it ACTS only while it holds the job
    store's lease. Without it, it is a standby: health "" SERVING, dbmaint's services NOT_SERVING, the read
    methods answered from the store (``standby.StandbyReader``), writes and worker streams refused UNAVAILABLE
    (naming the holder), the lease polled every third of its length. With it, an Orchestrator
    rebuilt from the store serves them, and the lease is renewed every third of its length; losing it (a
    renewal or any write raising LeaseLost) steps down to standby at once."""

    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.port = 0
        # Who holds the lease: unique per process, so a restarted manager takes a new term.
        self.manager_id = uuid.uuid4().hex[:12]
        self._server: grpc.aio.Server | None = None
        self._store: SQLAlchemyJobStore | None = None  # of the current term, or polled by the standby
        self._orchestrator: Orchestrator | None = None  # only while this manager holds the lease
        # The reads a standby serves from the store: made when this manager first stands by, kept until it stops
        # (its watches go on across a takeover by this manager).
        self._standby: StandbyReader | None = None
        self._gate = LeaderGate()
        self._health = HealthServicer()
        self._role = asyncio.Lock()  # one change of role at a time
        self._lease_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._failure: asyncio.Future[None] = self._loop.create_future()
        self._stopped = asyncio.Event()
        self._shutdown_started = False
        self.metrics = ManagerMetrics()
        self.metrics_port = 0
        self._metrics_server: WSGIServer | None = None

    @property
    def leading(self) -> bool:
        return self._orchestrator is not None

    @property
    def advertised_address(self) -> str:
        """Where this manager listens, as a standby names it (a wildcard listener by its host name)."""
        host = self.config.listen.rpartition(":")[0]
        if host in ("0.0.0.0", "[::]", "::", ""):
            host = socket.gethostname()
        return f"{host}:{self.port}"

    async def start(self) -> int:
        """Open the store, bind, take the store lease (or stand by), and start serving. Returns the bound port.
        A SQLite store that another manager holds raises StoreInUse."""
        self._store = await asyncio.to_thread(self._open_store, True)
        if self.config.metrics_listen:
            self._metrics_server = serve_metrics(self.config.metrics_listen, self.metrics.registry)
            self.metrics_port = int(self._metrics_server.server_port)
            log.info(
                "metrics on http://%s:%d/metrics", self.config.metrics_listen.rpartition(":")[0], self.metrics_port
            )
        auth = self.config.auth
        server = grpc.aio.server(
            # Auth first: a refused call is not even parsed. Then unparsable requests become INVALID_ARGUMENT.
            # The gate last: it picks the handlers of the leading term, or refuses on a standby.
            interceptors=[
                *([AuthInterceptor(auth)] if auth.enabled else []),
                MalformedRequestInterceptor(),
                self._gate,
            ],
            options=SERVER_OPTIONS,
        )
        # Servicers that implement nothing: they give the gate each method's shape; a term's own servicers
        # answer while this manager leads.
        pb_grpc.add_MaintenanceServiceServicer_to_server(pb_grpc.MaintenanceServiceServicer(), server)
        pb_grpc.add_WorkerServiceServicer_to_server(pb_grpc.WorkerServiceServicer(), server)
        spb_grpc.add_ScheduleServiceServicer_to_server(spb_grpc.ScheduleServiceServicer(), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.config.serves_reflection:
            enable_reflection(
                (*GATED_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
                server,
            )
        tls = self.config.tls
        if tls is not None:
            self.port = server.add_secure_port(self.config.listen, tls.server_credentials())
        else:
            self.port = server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        state = await asyncio.to_thread(
            self._store.acquire_lease, self.manager_id, self.config.store_lease, self.advertised_address
        )
        if state.held:
            await self._lead(self._store, state)
        else:
            await self._stand_by(state)
        await server.start()
        self._server = server
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._lease_task = asyncio.create_task(self._hold_lease(), name="store-lease")
        self._lease_task.add_done_callback(self._on_lease_task_done)
        host = self.config.listen.rpartition(":")[0]
        log.info(
            "dbmaint-manager %s listening on %s:%d (%s; auth %s; reflection %s; store %s; %s)",
            self.manager_id,
            host,
            self.port,
            _transport(tls),
            "on" if auth.enabled else "off",
            "on" if self.config.serves_reflection else "off",
            _safe_url(self.config.database_url),
            "leading" if self.leading else "standby",
        )
        if not auth.enabled and not is_loopback(host):
            log.warning(
                "!!! listening on %s WITHOUT AUTHENTICATION: anyone who can reach this port can create and cancel "
                "jobs and connect as a worker. Set DBMAINT_CLIENT_TOKENS and DBMAINT_WORKER_TOKENS (and TLS).",
                host,
            )
        return self.port

    def _open_store(self, migrate: bool) -> SQLAlchemyJobStore:
        store = open_store(
            self.config.database_url,
            migrate=migrate,
            idle_in_transaction_timeout=self.config.store_idle_timeout,
            notify=self.config.store_notify,
        )

        # Called on the thread of the write that found the lease gone: the step down runs on the loop.
        def on_stop(why: LeaseLost | CommitOutcomeUnknown) -> None:
            self._loop.call_soon_threadsafe(self._store_stopped, store, why)

        store.on_stop = on_stop
        return store

    async def wait(self) -> None:
        """Until shutdown, or until something fails for another reason than a lost lease (then stop and raise
        its error). A fatal LeaseLost (or CommitOutcomeUnknown) of the orchestrator is not a failure: the manager
        steps down to standby (and, after an unknown commit, takes the store again and rebuilds)."""
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self._stopped.wait())
        done, _ = await asyncio.wait({stopped, self._failure}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if self._failure in done:
            await self.shutdown()
            self._failure.result()

    # -- roles

    async def _lead(self, store: SQLAlchemyJobStore, state: LeaseState) -> None:
        """This manager took the lease: rebuild the in-flight state from the store and serve."""
        orchestrator = Orchestrator(store, self.config.orchestrator_settings, self.metrics)
        try:
            await orchestrator.start()
        except BaseException:
            await asyncio.to_thread(_release_quietly, store)  # a standby need not wait for it to lapse
            await self._close_term(orchestrator)
            raise
        orchestrator.fatal.add_done_callback(lambda fatal: self._on_fatal(orchestrator, fatal))
        table = HandlerTable()
        pb_grpc.add_MaintenanceServiceServicer_to_server(
            MaintenanceServicer(orchestrator, self.config.limits), table
        )
        pb_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(orchestrator), table)
        spb_grpc.add_ScheduleServiceServicer_to_server(ScheduleServicer(orchestrator, self.config.limits), table)
        self._orchestrator = orchestrator
        self._gate.lead(table)
        for service in GATED_SERVICES:
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("holding the job store (term %d): serving", state.term)

    async def _stand_by(self, state: LeaseState) -> None:
        self._gate.stand_by(f"this manager ({self.manager_id}) is a standby: {state.describe()}")
        await self._serve_reads()
        for service in GATED_SERVICES:
            await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        log.info("standby: %s; taking over when its lease lapses", state.describe())

    async def _step_down(self, orchestrator: Orchestrator, why: LeaseLost | CommitOutcomeUnknown) -> None:
        """Stop acting at once: refuse new calls, NOT_SERVING, end the term's streams, stand by. After a write
        whose outcome is unknown the lease is still ours: the next poll takes it again (a new term) and rebuilds
        the in-flight state from the store, which is the only record to trust then."""
        async with self._role:
            if self._orchestrator is not orchestrator or self._shutdown_started:
                return  # already stepped down from this term
            self._orchestrator = None
            if isinstance(why, LeaseLost):
                holder = LeaseState(False, why.holder, why.address, 0, None).describe()
                if why.holder in ("", self.manager_id):  # it lapsed and nobody took it: the next poll takes it
                    holder = "its job store lease lapsed; taking it again"
                refusal = f"is a standby: {holder}"
                log.warning("lost the job store lease: %s; standing by", why)
            else:
                refusal = "is rebuilding its state from the job store after a write whose outcome was unknown"
                log.warning("%s: ending this term; it rebuilds from the store once the store answers", why)
            self._gate.stand_by(f"this manager ({self.manager_id}) {refusal}")
            await self._serve_reads()
            for service in GATED_SERVICES:
                await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            self.metrics.watch_fleet(lambda: NO_FLEET)
            await self._close_term(orchestrator)

    async def _serve_reads(self) -> None:
        """Answer the read methods from the store while standing by (the reader is made once)."""
        if self._standby is None:
            # Not open_store: it would read the schema's revision, and a step-down after a store outage must not
            # wait for (or fail on) the store. The schema was brought up to date when this manager started.
            self._standby = StandbyReader(
                SQLAlchemyJobStore(make_engine(self.config.database_url)),
                max_watchers=self.config.max_watchers,
                max_watch_backlog=self.config.orchestrator_settings.max_watch_backlog,
                notify_conninfo=_listen_conninfo(self.config.database_url) if self.config.store_notify else None,
            )
            self._standby.start()
        table = HandlerTable()
        pb_grpc.add_MaintenanceServiceServicer_to_server(
            MaintenanceReadServicer(self._standby, self.config.limits), table
        )
        spb_grpc.add_ScheduleServiceServicer_to_server(ScheduleReadServicer(self._standby.schedules), table)
        self._gate.serve_reads(table)

    async def _close_term(self, orchestrator: Orchestrator) -> None:
        """End a term's orchestrator and its store (a standby polls with a store of its own)."""
        await orchestrator.shutdown()
        await asyncio.to_thread(orchestrator.close_store)
        self._store = None

    def _store_stopped(self, store: SQLAlchemyJobStore, why: LeaseLost | CommitOutcomeUnknown) -> None:
        """``store`` stopped writing: the lease is gone, or a write's outcome is unknown (called on the loop)."""
        orchestrator = self._orchestrator
        if orchestrator is not None and self._store is store:
            self._spawn(self._step_down(orchestrator, why))

    def _on_fatal(self, orchestrator: Orchestrator, fatal: asyncio.Future[None]) -> None:
        error = None if fatal.cancelled() else fatal.exception()
        if error is None:
            return
        if isinstance(error, (LeaseLost, CommitOutcomeUnknown)):
            self._spawn(self._step_down(orchestrator, error))
        elif not self._failure.done():
            self._failure.set_exception(error)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)

    async def _hold_lease(self) -> None:
        """Renew the lease while leading; poll it while standing by. Every third of the lease."""
        period = self.config.store_lease / 3
        while True:
            await asyncio.sleep(period)
            try:
                async with self._role:
                    if self._shutdown_started:
                        return
                    if self._orchestrator is not None:
                        await self._renew(self._orchestrator)
                    else:
                        await self._try_to_lead()
            except StoreUnavailable as error:
                log.warning("job store lease: %s; trying again in %.1fs", error, period)

    async def _renew(self, orchestrator: Orchestrator) -> None:
        store = self._store
        assert store is not None
        try:
            await asyncio.to_thread(store.renew_lease)
        except LeaseLost as lost:
            self._spawn(self._step_down(orchestrator, lost))

    async def _try_to_lead(self) -> None:
        if self._store is None:
            self._store = await asyncio.to_thread(self._open_store, False)
        store = self._store
        state = await asyncio.to_thread(
            store.acquire_lease, self.manager_id, self.config.store_lease, self.advertised_address
        )
        if state.held:
            log.info("the job store lease was free: taking over (term %d)", state.term)
            await self._lead(store, state)
        else:
            self._gate.stand_by(f"this manager ({self.manager_id}) is a standby: {state.describe()}")

    def _on_lease_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._shutdown_started:
            return
        error = task.exception() or RuntimeError("the store lease task stopped")
        log.critical("the store lease task died: %r; stopping the manager", error)
        if not self._failure.done():
            self._failure.set_exception(error)

    async def shutdown(self) -> None:
        """NOT_SERVING first, then stop dispatching, close worker streams cleanly, stop the server, and give the
        lease up so a standby takes over at once. Idempotent."""
        if self._shutdown_started:
            await self._stopped.wait()
            return
        self._shutdown_started = True
        log.info("shutting down: health NOT_SERVING, closing worker streams")
        await self._health.enter_graceful_shutdown()
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
        async with self._role:
            self._gate.stand_by("the manager is shutting down")
            self._gate.serve_reads(None)
            if self._standby is not None:
                await self._standby.close()  # its watches end before the server stops
            orchestrator, store = self._orchestrator, self._store
            if orchestrator is not None:
                await orchestrator.shutdown()
            if self._server is not None:
                await self._server.stop(self.config.shutdown_grace)
                # Freed here, on the loop's thread. Left to the cycle collector, it may be freed on a store
                # thread, where gRPC's asyncio teardown (the last server or channel of the process) hangs.
                self._server = None
            if orchestrator is not None and store is not None:
                # After the server stopped: no write of this manager can be in flight any more (and the release
                # waits for one that is, FOR SHARE).
                await asyncio.to_thread(_release_quietly, store)
            if orchestrator is not None:
                await asyncio.to_thread(orchestrator.close_store)
            elif store is not None:
                await asyncio.to_thread(store.close)
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)
            self._metrics_server.server_close()  # shutdown() stops serving; this closes the listening socket
        self._stopped.set()
        log.info("stopped")


def _release_quietly(store: SQLAlchemyJobStore) -> None:
    try:
        store.release_lease()
    except (StoreUnavailable, LeaseLost) as error:
        log.warning("could not give the job store lease up (%s); a standby takes over when it lapses", error)


def _listen_conninfo(database_url: str) -> str | None:
    """The libpq URI a standby LISTENs on (None: the store is not PostgreSQL)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


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
