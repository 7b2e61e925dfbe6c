"""The ``Worker``: a stop event, a concurrency limit (the executor's slots) and named side tasks.

Side tasks, each of which must run until the worker stops (an unexpected end or exception stops the worker
with an error, exit code 1):

* ``stream``         -- connect, ``Hello``, ``Welcome``, re-send the outbox, then read ``Assignment``,
                        ``Cancel`` and ``ResultAck`` until the stream ends; reconnect with backoff. Operations keep
                        running while the stream is down, and the next ``Hello`` lists them (and only them: a
                        finished attempt whose result waits for its ack is not running). With several managers
                        configured, every end or refusal moves to the next one (``dbmaint.managers``): the leader
                        a refusing standby names, if configured, else the next address in the list.
* ``heartbeater``    -- a ``Heartbeat`` listing the running attempts every ``heartbeat_interval`` (from
                        ``Welcome``), also while an operation runs (operations run on slot threads); at once
                        when an attempt starts or stops waiting for its target's resource lock.
* ``result-sender``  -- writes each outcome from the outbox to the current stream, once per stream. A manager
                        that sends acks (``Welcome.sends_acks``) has it forgotten on its ``ResultAck``; an older
                        one once written.
* ``drain``          -- only after ``request_drain``: ``Draining``, no new work, wait for running operations up
                        to ``grace`` then cancel them ("worker shutting down"), deliver the results and wait
                        for their acks (a few seconds at most), half-close the stream, stop (exit code 0).

An ``Assignment`` that arrives while draining (sent before the manager read our ``Draining``) is neither
started nor reported: the manager gets it back when this worker's stream ends, as for a lost worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import dbmaint
from dbmaint.managers import Move, next_manager
from dbmaint.operations import JobStatus
from worker_service.backoff import Backoff, RoundPacer, for_managers
from worker_service.config import WorkerConfig
from worker_service.executor import Assignment, Executor, Outcome, RunKey, failed
from worker_service.health import HealthServer
from worker_service.metrics import WorkerMetrics
from worker_service.outbox import Outbox
from worker_service.stream import (
    CancelRequest,
    DrainRequest,
    Hello,
    ManagerEvent,
    ManagerStream,
    ResultAcked,
    StreamClosed,
    Welcome,
    draining_message,
    heartbeat_message,
    results_message,
)
from worker_service.targets import BoundTarget

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "worker shutting down"
# Most results one WorkerMessage carries (a result is a few hundred bytes: far below the message size limit).
RESULTS_PER_MESSAGE = 256


@dataclass(frozen=True, slots=True)
class WorkerTimings:
    """Bounds of the parts of a drain and of a connection; not flags, tests shorten them."""

    welcome_timeout: float = 10.0
    # After the grace period: how long to wait for cancelled operations to stop.
    cancel_timeout: float = 5.0
    # How long a drain waits for the results to be delivered (written, and acknowledged by a manager that acks).
    deliver_timeout: float = 5.0
    # After the half-close: how long to wait for the manager to end the stream.
    close_timeout: float = 2.0
    # A stream that lasted this long resets the reconnect backoff.
    stable_after: float = 5.0


class WorkerFailed(Exception):
    """A side task died; the worker stopped."""


class Worker:
    """Runs maintenance operations assigned over one stream to the manager at a time."""

    def __init__(
        self,
        config: WorkerConfig,
        targets: Mapping[str, BoundTarget],
        *,
        health: HealthServer | None = None,
        timings: WorkerTimings | None = None,
        backoff: Backoff | None = None,
        executor: Executor | None = None,
        faults_active: bool = False,
    ) -> None:
        """``faults_active``: fault injection slows this worker's operations; its Hello says so."""
        self.config = config
        self._faults_active = faults_active
        self.timings = timings or WorkerTimings()
        self._health = health
        self._pacer = RoundPacer(backoff or for_managers(len(config.managers)))
        self._executor = executor or Executor(targets, config.slots)
        self._targets = targets
        self.metrics = WorkerMetrics()
        self._outbox = Outbox()
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._stream_changed = asyncio.Condition()
        self._heartbeat_now = asyncio.Event()  # set (from slot threads) when an attempt starts or stops waiting
        self._stream: ManagerStream | None = None
        self._welcome: Welcome | None = None
        self._drain_announced_on: ManagerStream | None = None
        self._children: dict[RunKey, asyncio.Task[None]] = {}
        self._side_tasks: dict[str, asyncio.Task[None]] = {}
        self._error: BaseException | None = None
        self._started = False
        self._draining = False
        self._drain_reason = ""
        self._closing = False

    # -- introspection (logs, health, tests) --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._stream is not None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def error(self) -> BaseException | None:
        return self._error

    def running(self) -> list[RunKey]:
        return self._executor.running()

    def undelivered(self) -> list[Outcome]:
        """The results the manager may not have: not written yet, or written and not acknowledged."""
        return self._outbox.pending()

    # -- life cycle -------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until drained (0) or a side task died (1)."""
        if self._started:
            raise RuntimeError("a Worker runs once")
        self._started = True
        loop = asyncio.get_running_loop()
        self._executor.watch_status(lambda: loop.call_soon_threadsafe(self._heartbeat_now.set))
        self._spawn("stream", self._stream_loop())
        self._spawn("heartbeater", self._heartbeat_loop())
        self._spawn("result-sender", self._send_loop())
        if self._draining:
            self._spawn("drain", self._drain(self._drain_reason))
        try:
            await self._stop.wait()
        finally:
            await self._teardown()
        if self._error is not None:
            log.error("worker stopped with an error: %s", self._error)
            return 1
        log.info("worker stopped")
        return 0

    def request_drain(self, reason: str) -> None:
        """Start draining (idempotent; safe to call from a signal handler installed on the loop)."""
        if self._draining:
            log.info("already draining (%s); ignoring %s", self._drain_reason, reason)
            return
        self._draining = True
        self._drain_reason = reason
        if self._started and not self._stop.is_set():
            self._spawn("drain", self._drain(reason))

    async def shutdown(self, reason: str = "shutdown") -> None:
        """Drain and wait until ``run`` returned (idempotent)."""
        self.request_drain(reason)
        if self._started:
            await self._finished.wait()

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"dbmaint-worker-{name}")
        self._side_tasks[name] = task
        task.add_done_callback(lambda t: self._side_task_done(name, t))

    def _side_task_done(self, name: str, task: asyncio.Task[None]) -> None:
        expected_end = self._closing or self._stop.is_set()
        if task.cancelled():
            if expected_end:
                return
            exc: BaseException | None = WorkerFailed(f"side task {name!r} was cancelled unexpectedly")
        else:
            exc = task.exception()
        if exc is None:
            if name == "drain" or expected_end:
                return
            exc = WorkerFailed(f"side task {name!r} ended unexpectedly")
        elif not isinstance(exc, WorkerFailed):
            log.error("side task %r died", name, exc_info=exc)
            exc = WorkerFailed(f"side task {name!r} died: {type(exc).__name__}: {exc}")
        if self._error is None:
            self._error = exc
        self._stop.set()

    async def _teardown(self) -> None:
        self._closing = True
        current = asyncio.current_task()
        side = [t for t in self._side_tasks.values() if t is not current]
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        if self._children:
            self._executor.cancel_all(SHUTDOWN_REASON)
            await asyncio.wait(list(self._children.values()), timeout=self.timings.cancel_timeout)
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        self._executor.close()
        if self._health is not None:
            await self._health.set_serving(False)
        self._finished.set()

    # -- the stream -------------------------------------------------------------------------------------------

    def _hello(self) -> Hello:
        return Hello(
            worker_id=self.config.worker_id,
            targets=self.config.target_names,
            slots=self.config.slots,
            running=tuple(self._executor.running()),
            version=dbmaint.__version__,
            waiting=self._executor.waiting_reasons(),
            faults_active=self._faults_active,
        )

    async def _set_stream(self, stream: ManagerStream | None, welcome: Welcome | None) -> None:
        async with self._stream_changed:
            self._stream = stream
            self._welcome = welcome
            self._stream_changed.notify_all()
        self.metrics.connected.set(1 if stream is not None else 0)
        if self._health is not None:
            await self._health.set_serving(stream is not None and not self._draining)

    async def _wait_for_stream(self, not_this: ManagerStream | None = None) -> tuple[ManagerStream, Welcome]:
        async with self._stream_changed:
            await self._stream_changed.wait_for(lambda: self._stream is not None and self._stream is not not_this)
            assert self._stream is not None and self._welcome is not None
            return self._stream, self._welcome

    async def _stream_loop(self) -> None:
        """Connect, serve, and on any end move to the next manager (``dbmaint.managers.next_manager``: the leader
        a refusing standby names if it is configured, else the next address) after a short backoff."""
        managers = self.config.managers
        address = next_manager(managers, None).address
        failures = 0
        # The last failure logged at INFO (address and reason): a new one is worth a line, a repeat is not.
        last_said = ""
        while not self._closing:
            try:
                stream, welcome = await ManagerStream.open(
                    address,
                    self._hello(),
                    welcome_timeout=self.timings.welcome_timeout,
                    tls=self.config.tls,
                    token=self.config.token,
                )
            except StreamClosed as exc:
                failures += 1
                failed, move = address, next_manager(managers, address, exc.leader_hint)
                delay = self._pacer.delay(failed, move.address)
                credentials = str(exc).startswith(("UNAUTHENTICATED", "PERMISSION_DENIED"))
                said = f"{failed}: {exc}"
                news = failures <= len(managers) or said != last_said
                last_said = said if news else last_said
                log.log(
                    # Refused credentials need an operator every time; a manager not up yet (or a standby) in the
                    # first round of the list, or when the reason changes (then the repeats stay quiet).
                    logging.WARNING if credentials else logging.INFO if news else logging.DEBUG,
                    "cannot connect to manager %s (attempt %d): %s; retrying in %.2fs",
                    failed,
                    failures,
                    exc,
                    delay,
                )
                address = self._moved(failed, move, quiet=failures > len(managers))
                await asyncio.sleep(delay)
                continue
            if self._closing:
                # A drain ended while this stream was being opened: it saw no stream to half-close, so none may
                # begin now (nothing would ever close it).
                await stream.close()
                break
            log.info(
                "connected to manager %s (manager_id=%s, heartbeat every %gs, lease %gs)%s",
                address,
                welcome.manager_id or "?",
                welcome.heartbeat_interval,
                welcome.lease_timeout,
                f" after {failures} failed attempt(s)" if failures else "",
            )
            failures = 0
            self._pacer.connected()
            began = time.monotonic()
            lost: StreamClosed | None = None
            try:
                await self._serve(stream, welcome)
            except StreamClosed as exc:
                lost = exc
                if not self._closing:
                    log.warning("stream to manager %s lost: %s; reconnecting", address, exc)
            finally:
                await self._set_stream(None, None)
                await stream.close()
            if self._closing:
                break
            if time.monotonic() - began >= self.timings.stable_after:
                self._pacer.reset()
            failed, move = address, next_manager(managers, address, (lost or StreamClosed("")).leader_hint)
            address = self._moved(failed, move)
            await asyncio.sleep(self._pacer.delay(failed, address))
        log.debug("stream loop done")

    @staticmethod
    def _moved(address: str, move: Move, *, quiet: bool = False) -> str:
        """Logs a move away from ``address`` (if it is one) and returns where to go."""
        if move.address != address:
            log.log(
                logging.DEBUG if quiet else logging.INFO, "moving to manager %s: %s", move.address, move.reason
            )
        return move.address

    async def _serve(self, stream: ManagerStream, welcome: Welcome) -> None:
        """Re-send the outbox (right after Hello), go live, then handle what the manager sends until the end."""
        await self._flush(stream, welcome)
        # A heartbeat right after the re-sent results: a manager holding a lease this worker did not list in its
        # Hello (an assignment that never arrived) learns at once that it does not run here, and frees its slot.
        self._heartbeat_now.set()
        await self._set_stream(stream, welcome)
        await self._announce_drain(stream)
        while True:
            for event in await stream.receive():
                self._handle(event)

    async def _announce_drain(self, stream: ManagerStream) -> None:
        if not self._draining or self._drain_announced_on is stream:
            return
        self._drain_announced_on = stream
        try:
            await stream.send(draining_message(self._drain_reason))
        except StreamClosed as exc:
            log.debug("could not send Draining: %s", exc)

    def _handle(self, event: ManagerEvent) -> None:
        if isinstance(event, Assignment):
            self._on_assignment(event)
        elif isinstance(event, CancelRequest):
            self._on_cancel(event)
        elif isinstance(event, ResultAcked):
            self._on_acked(event)
        elif isinstance(event, DrainRequest):
            log.info("the manager asks this worker to drain: %s", event.reason or "no reason given")
            self.request_drain(f"asked by the manager: {event.reason}" if event.reason else "asked by the manager")
        elif isinstance(event, Welcome):
            log.warning("ignoring a second Welcome on the same stream")
        else:
            log.debug("ignoring a manager message of a kind this worker does not know")

    def _on_assignment(self, assignment: Assignment) -> None:
        extra = assignment.log_extra
        if self._draining:
            log.warning("assignment arrived while draining: not started (the manager re-queues it)", extra=extra)
            return
        if self._executor.is_running(assignment.key):
            log.warning("assignment for an attempt that already runs here: ignored", extra=extra)
            return
        future = self._executor.start(assignment)
        if future.done():
            outcome = future.result()
            log.warning("refused %s: %s", assignment.operation or "assignment", outcome.error, extra=extra)
            self._outbox.put(outcome)
            return
        deadline = assignment.deadline.isoformat() if assignment.deadline else "none"
        log.info(
            "started %s (parent %s, deadline %s)",
            assignment.operation,
            assignment.parent_id or "-",
            deadline,
            extra=extra,
        )
        key = assignment.key
        self.metrics.running.inc()
        task = asyncio.get_running_loop().create_task(
            self._finish(assignment, future), name=f"dbmaint-child-{assignment.job_id}-{assignment.attempt}"
        )
        self._children[key] = task
        task.add_done_callback(lambda _: self._children.pop(key, None))

    async def _finish(self, assignment: Assignment, future: asyncio.Future[Outcome]) -> None:
        extra = assignment.log_extra
        try:
            outcome = await future
        except Exception as exc:  # run_assignment never raises; this is a last resort, not a crash
            log.exception("operation crashed", extra=extra)
            outcome = failed(assignment, f"worker error: {type(exc).__name__}: {exc}")
        report = outcome.report
        if outcome.status is JobStatus.COMPLETED and report is not None:
            log.info(
                "%s completed in %.2fs: %d -> %d bytes, %d object(s)",
                assignment.operation,
                report.duration_seconds,
                report.bytes_before,
                report.bytes_after,
                report.objects_processed,
                extra=extra,
            )
        elif outcome.status is JobStatus.CANCELLED:
            log.info("%s cancelled: %s", assignment.operation, outcome.error, extra=extra)
        else:
            log.warning("%s %s: %s", assignment.operation, outcome.status.value, outcome.error, extra=extra)
        self.metrics.running.dec()
        self._count(assignment, outcome)
        self._outbox.put(outcome)

    def _count(self, assignment: Assignment, outcome: Outcome) -> None:
        report = outcome.report
        target = self._targets.get(assignment.target)
        engine = report.engine if report else target.engine.name if target else "unknown"
        reclaimed = report.bytes_reclaimed if report else 0
        seconds = report.duration_seconds if report else None
        self.metrics.finished(engine, assignment.operation, outcome.status.value, seconds, reclaimed)

    def _on_cancel(self, request: CancelRequest) -> None:
        extra = {"job_id": request.job_id, "attempt": request.attempt}
        reason = request.reason or "cancelled by the manager"
        if self._executor.cancel(request.key, reason):
            log.info("cancelling: %s", reason, extra=extra)
        else:
            log.info("cancel for an attempt not running here (finished, or another attempt): ignored", extra=extra)

    def _on_acked(self, acked: ResultAcked) -> None:
        """The manager committed these results: forget them. An ack for a result not kept here is ignored."""
        for job_id, attempt in self._outbox.acknowledge(acked.keys):
            log.debug("result acknowledged", extra={"job_id": job_id, "attempt": attempt})

    # -- results and heartbeats -------------------------------------------------------------------------------

    async def _flush(self, stream: ManagerStream, welcome: Welcome) -> None:
        """Write every outcome ``stream`` has not carried yet, oldest first. A manager that sends acks has each
        kept until its ack (a written result may still die with the link); an older one has it forgotten once
        written. What finished meanwhile goes in one message: fewer, larger writes when many children end close
        together."""
        while batch := self._outbox.unsent(stream)[:RESULTS_PER_MESSAGE]:
            await stream.send(results_message(batch))
            if welcome.sends_acks:
                self._outbox.mark_sent([outcome.key for outcome in batch], stream)
            else:
                for outcome in batch:
                    self._outbox.remove(outcome.key)
            for outcome in batch:
                log.debug(
                    "result %s written%s",
                    outcome.status.value,
                    ", kept until acknowledged" if welcome.sends_acks else "",
                    extra={"job_id": outcome.job_id, "attempt": outcome.attempt},
                )

    async def _send_loop(self) -> None:
        while True:
            stream, welcome = await self._wait_for_stream()
            await self._outbox.wait_unsent(stream)
            if self._stream is not stream:
                continue  # that stream ended meanwhile; the next one carries everything right after its Hello
            try:
                await self._flush(stream, welcome)
            except StreamClosed as exc:
                log.debug("result not delivered, kept for the next stream: %s", exc)
                await stream.close()  # makes the reader see the end now
                await self._wait_for_stream(not_this=stream)

    async def _heartbeat_loop(self) -> None:
        while True:
            stream, welcome = await self._wait_for_stream()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heartbeat_now.wait(), welcome.heartbeat_interval)
            if self._stream is not stream:
                continue  # a wake-up stays set for the next stream
            self._heartbeat_now.clear()
            try:
                await stream.send(heartbeat_message(self._executor.running(), self._executor.waiting_reasons()))
            except StreamClosed as exc:
                log.debug("heartbeat not sent: %s", exc)
                await self._wait_for_stream(not_this=stream)

    # -- drain ------------------------------------------------------------------------------------------------

    async def _drain(self, reason: str) -> None:
        grace = self.config.grace
        children = list(self._children.values())
        log.info(
            "draining (%s): taking no new work; %d operation(s) running, grace %gs", reason, len(children), grace
        )
        if self._health is not None:
            await self._health.set_serving(False)
        if self._stream is not None:
            await self._announce_drain(self._stream)

        if children:
            _, pending = await asyncio.wait(children, timeout=grace)
            if pending:
                cancelled = self._executor.cancel_all(SHUTDOWN_REASON)
                log.warning("grace period of %gs is over: cancelling %d operation(s)", grace, cancelled)
                _, still = await asyncio.wait(pending, timeout=self.timings.cancel_timeout)
                if still:
                    log.error("%d operation(s) did not stop after cancel; leaving them", len(still))

        # Delivered means acknowledged, for a manager that sends acks: a result written into a dying link is lost.
        if len(self._outbox) and not await self._outbox.wait_empty(self.timings.deliver_timeout):
            log.warning(
                "%d result(s) not delivered within %gs (not written, or not acknowledged); "
                "the manager re-queues those children",
                len(self._outbox),
                self.timings.deliver_timeout,
            )

        self._closing = True
        stream = self._stream
        if stream is not None:
            await stream.half_close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timings.close_timeout):
                    async with self._stream_changed:
                        await self._stream_changed.wait_for(lambda: self._stream is not stream)
        log.info("drained")
        self._stop.set()
