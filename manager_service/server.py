"""The manager's gRPC server: servicers, grpc.health.v1, reflection, the store lease (leader or standby);
``run`` and an idempotent ``shutdown``."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
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
from manager_service.console import Console
from manager_service.console.events import ChangeFeed
from manager_service.errors import CommitOutcomeUnknown, LeaseLost, LeaseNotRenewed, StoreUnavailable
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


@dataclass(frozen=True, slots=True)
class RoleServicers:
    """The servicers answering dbmaint's RPCs now: the term's own while leading (reads and writes), the
    standby's read servicers otherwise. The web console calls these very objects, so it reads and writes
    through the same paths (and validation) as the RPCs."""

    maintenance: MaintenanceReadServicer  # a MaintenanceServicer while leading
    schedules: ScheduleReadServicer  # a ScheduleServicer while leading
    changes: ChangeFeed  # the store's change feed, read through the same reader (the orchestrator or standby)

    @property
    def writes(self) -> tuple[MaintenanceServicer, ScheduleServicer] | None:
        """The write servicers, None on a standby."""
        if isinstance(self.maintenance, MaintenanceServicer) and isinstance(self.schedules, ScheduleServicer):
            return self.maintenance, self.schedules
        return None


MAINTENANCE_SERVICE = pb.DESCRIPTOR.services_by_name["MaintenanceService"].full_name
WORKER_SERVICE = pb.DESCRIPTOR.services_by_name["WorkerService"].full_name
SCHEDULE_SERVICE = spb.DESCRIPTOR.services_by_name["ScheduleService"].full_name
# SERVING only on the manager that holds the job store; the empty name is SERVING while the process runs.
GATED_SERVICES = (MAINTENANCE_SERVICE, WORKER_SERVICE, SCHEDULE_SERVICE)
# A standby looks at the lease this long after the holder's lease can lapse (the database's clock judges it).
LAPSE_SLACK = 0.1


class ManagerServer:
    """The gRPC server of one manager process. It serves while it runs; it ACTS only while it holds the job
    store's lease. Without it, it is a standby: health "" SERVING, dbmaint's services NOT_SERVING, the read
    methods answered from the store (``standby.StandbyReader``), writes and worker streams refused UNAVAILABLE
    (naming the holder, with the holder's advertised address as the ``dbmaint-leader`` hint while its lease is
    alive); it looks at the lease every third of its length, and right when the holder's lease can
    lapse. With it, an Orchestrator rebuilt from the store serves them, and the lease is renewed every third of
    its length.

    Stepping down, at once: when a renewal or any write raises LeaseLost, and, self-fencing, when the lease may
    be about to lapse unrenewed. The leader knows its lease holds until ``valid_until``: the monotonic time the
    last successful renewal was SENT plus the lease (the database set the expiry from its own now(), which came
    later). A watchdog steps down at ``valid_until`` minus a margin whether or not a renewal ever answers, so a
    leader cut off from the store (or frozen inside a renewal on a dead link) has stopped acting before a standby
    can take over.

    The trade-off of the lease's length: a crashed leader is replaced after at most one lease plus a moment
    (a standby wakes when it can lapse), so a short lease fails over fast. But a leader must renew within two
    thirds of it (minus the margin): a store whose commits stall longer (fsync on an overloaded disk) makes a
    healthy leader step down and take the lease again, a pause of the work, not a double run. Raise
    ``--store-lease`` where such stalls happen."""

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
        # While leading: the monotonic time until which the lease surely holds, and the task that steps down
        # before it.
        self._valid_until = 0.0
        self._watchdog: asyncio.Task[None] | None = None
        self._first_look = config.lease_renewal_period
        self._background: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._failure: asyncio.Future[None] = self._loop.create_future()
        self._stopped = asyncio.Event()
        self._shutdown_started = False
        self.metrics = ManagerMetrics()
        self.metrics_port = 0
        self._metrics_server: WSGIServer | None = None
        self._servicers: RoleServicers | None = None
        self.term = 0  # of the lease, as last seen
        self._console: Console | None = None
        self.http_port = 0

    @property
    def leading(self) -> bool:
        return self._orchestrator is not None

    @property
    def servicers(self) -> RoleServicers | None:
        """What answers the RPCs in the current role (None while starting or stopping)."""
        return self._servicers

    @property
    def leader_hint(self) -> str:
        """On a standby, the leader's advertised address while its lease is alive ("" otherwise)."""
        return self._gate.leader_hint()

    @property
    def advertised_address(self) -> str:
        """Where clients should reach this manager (``--advertise``); by default where it listens (a wildcard
        listener by its host name). Stored with the lease: standbys name it in their refusals."""
        if self.config.advertise:
            return self.config.advertise
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
        sent = time.monotonic()
        state = await asyncio.to_thread(
            self._store.acquire_lease, self.manager_id, self.config.store_lease, self.advertised_address
        )
        self._saw_term(state.term)
        if state.held:
            await self._lead(self._store, state, sent)
            self._first_look = self._first_renewal(sent)
        else:
            await self._stand_by(state, sent)
        await server.start()
        self._server = server
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        if self.config.http_listen:
            self._console = Console(self)
            self.http_port = await self._console.start()
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

    def _saw_term(self, term: int) -> None:
        self.term = term
        self.metrics.saw_term(term)

    def _open_store(self, migrate: bool) -> SQLAlchemyJobStore:
        store = open_store(
            self.config.database_url,
            migrate=migrate,
            idle_in_transaction_timeout=self.config.store_idle_timeout,
            notify=self.config.store_notify,
            link_timeout=self.config.lease_statement_timeout,
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

    async def _lead(self, store: SQLAlchemyJobStore, state: LeaseState, sent: float) -> None:
        """This manager took the lease (the call that took it was sent at monotonic ``sent``): rebuild the
        in-flight state from the store and serve."""
        orchestrator = Orchestrator(store, self.config.orchestrator_settings, self.metrics)
        try:
            await orchestrator.start()
        except BaseException:
            await asyncio.to_thread(_release_quietly, store)  # a standby need not wait for it to lapse
            await self._close_term(orchestrator)
            raise
        orchestrator.fatal.add_done_callback(lambda fatal: self._on_fatal(orchestrator, fatal))
        table = HandlerTable()
        maintenance = MaintenanceServicer(orchestrator, self.config.limits)
        schedules = ScheduleServicer(orchestrator, self.config.limits)
        pb_grpc.add_MaintenanceServiceServicer_to_server(maintenance, table)
        pb_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(orchestrator), table)
        spb_grpc.add_ScheduleServiceServicer_to_server(schedules, table)
        self._orchestrator = orchestrator
        self._servicers = RoleServicers(maintenance, schedules, orchestrator)
        self._valid_until = sent + self.config.store_lease
        self._watchdog = asyncio.create_task(self._watch_lease(orchestrator), name="store-lease-watchdog")
        self._gate.lead(table)
        self.metrics.became_leader(state.term)
        await self._publish_health()
        log.info("became leader (term %d): holding the job store, serving", state.term)

    async def _stand_by(self, state: LeaseState, sent: float) -> None:
        self._gate.stand_by(self._standby_refusal(state), self._leader_hint(state, sent))
        self._first_look = self._next_look(state)
        await self._serve_reads()
        await self._publish_health()
        log.info("standby: %s; taking over when its lease lapses", state.describe())

    async def _publish_health(self) -> None:
        """dbmaint's services SERVING while this manager leads, NOT_SERVING otherwise."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if self.leading else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in GATED_SERVICES:
            await self._health.set(service, status)

    def _standby_refusal(self, state: LeaseState) -> str:
        return f"this manager ({self.manager_id}) is a standby: {state.describe()}"

    def _leader_hint(self, state: LeaseState, sent: float) -> Callable[[], str]:
        """The gate's leader hint after a look at the lease sent at monotonic ``sent``: the holder's address
        until its lease can lapse (``sent`` + what was left of it: never later than the database's expiry)."""
        address = state.leader_hint if state.holder != self.manager_id else ""
        if not address:
            return _no_leader
        until = math.inf if state.expires_in is None else sent + state.expires_in
        return lambda: address if time.monotonic() < until else ""

    def _first_renewal(self, sent: float) -> float:
        """Seconds until the first renewal of a lease taken by a call sent at ``sent``: a period after taking
        it, however long rebuilding the state from the store took."""
        return max(0.0, sent + self.config.lease_renewal_period - time.monotonic())

    def _next_look(self, state: LeaseState) -> float:
        """Seconds until a standby looks at the lease again: every renewal period, and right after the holder's
        lease can lapse if that comes first."""
        period = self.config.lease_renewal_period
        if state.expires_in is None:
            return period
        return min(period, max(0.0, state.expires_in) + LAPSE_SLACK)

    async def _step_down(self, orchestrator: Orchestrator, why: LeaseLost | CommitOutcomeUnknown) -> None:
        """Stop acting at once: refuse new calls, fence the term's store, NOT_SERVING, end the term's streams,
        stand by. After a write whose outcome is unknown, or a lease it could not renew, the lease may still be
        ours: the next look takes it again (a new term) once the store answers, and rebuilds the in-flight state
        from the store, which is the only record to trust then."""
        if self._orchestrator is not orchestrator or self._shutdown_started:
            return  # already stepped down from this term
        # Nothing awaited before this point: from here no new call reaches the term, and its store writes nothing
        # more (a write already past its lease check is fenced by the database: a takeover waits for it).
        self._orchestrator = None
        self._servicers = None
        store, self._store = self._store, None
        if store is not None and isinstance(why, LeaseLost):
            store.stop_writing(why)
        hint = _no_leader
        if isinstance(why, LeaseNotRenewed):
            reason = f"{why}"
            refusal = (
                "is a standby: it could not renew its job store lease; taking it again once the store answers"
            )
        elif isinstance(why, LeaseLost):
            reason = f"lost the job store lease: {why}"
            holder = LeaseState(False, why.holder, why.address, 0, None).describe()
            if why.holder in ("", self.manager_id):  # it lapsed and nobody took it: the next look takes it
                holder = "its job store lease lapsed; taking it again"
            refusal = f"is a standby: {holder}"
            leader = why.leader
            hint = (lambda: leader) if leader else _no_leader
        else:
            reason = f"{why}; it rebuilds from the store once the store answers"
            refusal = "is rebuilding its state from the job store after a write whose outcome was unknown"
        self._gate.stand_by(f"this manager ({self.manager_id}) {refusal}", hint)
        self.metrics.stepped_down()
        self.metrics.watch_fleet(lambda: NO_FLEET)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = None
        log.warning("stepped down: %s; standing by", reason)
        async with self._role:
            await self._serve_reads()
            await self._publish_health()
        await self._close_term(orchestrator)

    async def _serve_reads(self) -> None:
        """Answer the read methods from the store while standing by (the reader is made once)."""
        if self._standby is None:
            # Not open_store: it would read the schema's revision, and a step-down after a store outage must not
            # wait for (or fail on) the store. The schema was brought up to date when this manager started.
            self._standby = StandbyReader(
                SQLAlchemyJobStore(
                    make_engine(self.config.database_url, link_timeout=self.config.lease_statement_timeout)
                ),
                max_watchers=self.config.max_watchers,
                max_watch_backlog=self.config.orchestrator_settings.max_watch_backlog,
                notify_conninfo=_listen_conninfo(self.config.database_url) if self.config.store_notify else None,
            )
            self._standby.start()
        table = HandlerTable()
        maintenance = MaintenanceReadServicer(self._standby, self.config.limits)
        schedules = ScheduleReadServicer(self._standby.schedules)
        pb_grpc.add_MaintenanceServiceServicer_to_server(maintenance, table)
        spb_grpc.add_ScheduleServiceServicer_to_server(schedules, table)
        self._gate.serve_reads(table)
        self._servicers = RoleServicers(maintenance, schedules, self._standby)

    async def _close_term(self, orchestrator: Orchestrator) -> None:
        """End a term's orchestrator and its store (a standby looks with a store of its own). Its worker streams
        end at once, whatever the store does (its store is fenced, or it never started: nothing is settled), and
        its store is closed without waiting for calls still in flight (on a link that swallows every byte they
        never end; what they write is fenced by the lease)."""
        await orchestrator.shutdown(settle=False)
        await asyncio.to_thread(orchestrator.close_store, wait=False)

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

    async def _watch_lease(self, orchestrator: Orchestrator) -> None:
        """Self-fencing: step down at ``valid_until`` minus the margin unless a renewal moved it on, whether or
        not the renewal in flight ever answers."""
        margin = self.config.lease_margin
        while self._orchestrator is orchestrator:
            left = self._valid_until - margin - time.monotonic()
            if left <= 0:
                since = time.monotonic() - (self._valid_until - self.config.store_lease)
                why = LeaseNotRenewed(
                    f"could not renew the job store lease (last renewed {since:.1f}s ago, lease "
                    f"{self.config.store_lease:g}s): stepping down {margin:.1f}s before it could lapse"
                )
                self._spawn(self._step_down(orchestrator, why))
                return
            await asyncio.sleep(left)

    async def _hold_lease(self) -> None:
        """Renew the lease while leading, every renewal period; look at it while standing by (``_next_look``)."""
        period = self.config.lease_renewal_period
        delay = self._first_look
        while True:
            await asyncio.sleep(delay)
            began = time.monotonic()
            delay = period
            try:
                orchestrator = self._orchestrator
                if self._shutdown_started:
                    return
                if orchestrator is not None:
                    # Not under the role lock: a renewal that hangs must not hold a step down up.
                    await self._renew(orchestrator)
                    delay = max(0.0, began + period - time.monotonic())
                else:
                    async with self._role:
                        if self._shutdown_started:
                            return
                        delay = await self._try_to_lead()
            except StoreUnavailable as error:
                log.warning("job store lease: %s; trying again in %.1fs", error, delay)

    async def _renew(self, orchestrator: Orchestrator) -> None:
        """One renewal. Waits for its answer only while the lease surely holds: the watchdog acts after that."""
        store = self._store
        if store is None or self._orchestrator is not orchestrator:
            return
        sent = time.monotonic()
        if sent >= self._valid_until:
            return  # too late to matter: the watchdog steps down
        try:
            state = await asyncio.wait_for(asyncio.to_thread(store.renew_lease), self._valid_until - sent)
        except TimeoutError:
            log.warning("job store lease: a renewal sent %.1fs ago has not been answered", time.monotonic() - sent)
            return
        except LeaseLost as lost:
            self._spawn(self._step_down(orchestrator, lost))
            return
        if self._orchestrator is orchestrator:
            self._valid_until = max(self._valid_until, sent + self.config.store_lease)
            self._saw_term(state.term)

    async def _try_to_lead(self) -> float:
        """One look at the lease by a standby: take it if it is free. Returns the seconds until the next look."""
        if self._store is None:
            self._store = await asyncio.to_thread(self._open_store, False)
        store = self._store
        sent = time.monotonic()
        state = await asyncio.to_thread(
            store.acquire_lease, self.manager_id, self.config.store_lease, self.advertised_address
        )
        self._saw_term(state.term)
        if state.held:
            await self._lead(store, state, sent)
            return self._first_renewal(sent)
        self._gate.stand_by(self._standby_refusal(state), self._leader_hint(state, sent))
        return self._next_look(state)

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
        if self._console is not None:
            await self._console.stop()
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._background:
            # A step down still closing its term (its store may be slow to fail): give it the grace period.
            await asyncio.wait(set(self._background), timeout=self.config.shutdown_grace)
        async with self._role:
            self._gate.stand_by("the manager is shutting down")
            self._gate.serve_reads(None)
            self._servicers = None
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


def _no_leader() -> str:
    return ""


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
