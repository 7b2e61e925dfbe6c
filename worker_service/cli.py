"""``dbmaint-worker`` / ``python -m worker_service``: parse the configuration, bind targets, run the worker.

This is the only place that installs signal handlers: SIGTERM and SIGINT start a drain (a second signal is
logged and otherwise ignored: the grace period bounds the drain).

Exit codes: 0 after a drain (or ``--print-config``), 1 when the worker stopped on an internal error, 2 for a
configuration problem (invalid flag or variable, a target no engine serves, a bad ``DBMAINT_FAULTS`` or one
without the opt-in, a health address that cannot be bound).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping, Sequence

from dbmaint import runtime
from dbmaint.config import CONFIG_ERROR_EXIT, ConfigError, report
from dbmaint.logs import setup_logging
from dbmaint.metrics import MetricsServerError, serve_metrics
from worker_service.config import WORKER, WorkerConfig, build_config
from worker_service.engines import EngineUnavailable, default_registry
from worker_service.health import HealthServer, HealthServerError
from worker_service.logs import FORMAT, ContextFilter
from worker_service.targets import BoundTarget, bind_targets
from worker_service.worker import Worker

log = logging.getLogger("worker_service")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = CONFIG_ERROR_EXIT


def start_line(config: WorkerConfig) -> str:
    return (
        f"dbmaint-worker {config.worker_id} serving targets {', '.join(config.target_names)} "
        f"(slots={config.slots}) -> manager {', '.join(config.managers)}"
    )


async def serve(config: WorkerConfig, targets: Mapping[str, BoundTarget], faults_active: bool = False) -> int:
    """Run a worker until it drained; SIGTERM/SIGINT start the drain. ``faults_active``: the targets' engines
    inject faults (the worker tells the manager)."""
    health: HealthServer | None = None
    if config.health_listen:
        health = HealthServer(config.health_listen)
        try:
            await health.start()
        except HealthServerError as exc:
            log.error("%s", exc)
            return EXIT_CONFIG
    worker = Worker(config, targets, health=health, faults_active=faults_active)
    metrics_server = None
    if config.metrics_listen:
        try:
            metrics_server = serve_metrics(config.metrics_listen, worker.metrics.registry)
        except MetricsServerError as exc:
            log.error("%s", exc)
            return EXIT_CONFIG
        log.info(
            "metrics on http://%s:%d/metrics", config.metrics_listen.rpartition(":")[0], metrics_server.server_port
        )
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, worker.request_drain, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or a platform without it
            log.debug("cannot install a handler for %s", sig.name)
    log.info("%s", start_line(config))
    runtime.freeze_startup_objects()
    try:
        return await worker.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if health is not None:
            await health.stop()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        settings = WORKER.parse(argv, env)
        config = build_config(settings, env)
    except ConfigError as exc:
        return report(WORKER.prog, exc)
    if settings.print_requested:
        print("\n".join(settings.lines()))
        return EXIT_OK
    setup_logging(config.log_level, config.log_format, FORMAT, ContextFilter(config.worker_id))
    try:
        targets = bind_targets(config.targets, default_registry(config.faults))
    except EngineUnavailable as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    if not config.faults.empty:
        log.warning("fault injection active: %s", dict(config.faults.slow))
    for target in targets.values():
        log.info("target %s: %s (engine %s)", target.name, target.display_url, target.engine.name)
    try:
        return asyncio.run(serve(config, targets, faults_active=not config.faults.empty))
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return EXIT_ERROR
