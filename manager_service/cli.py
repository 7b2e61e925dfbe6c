"""Entry point of ``dbmaint-manager [serve|migrate]`` / ``python -m manager_service``. Signals are handled
here only."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from dbmaint import runtime
from dbmaint.config import ConfigError, report
from dbmaint.logs import setup_logging
from manager_service.config import ManagerConfig, build_config, program
from manager_service.errors import StoreInUse
from manager_service.server import ManagerServer
from manager_service.store import migrations
from manager_service.store.sqlalchemy_store import make_engine

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("manager_service")

# Once the manager stopped, how long the process may still wait for threads inside store calls before it exits
# without them: on a link that swallows every byte without an error (a hung proxy in front of PostgreSQL) such a
# call never returns, and asyncio.run and the interpreter would wait for it forever.
EXIT_GRACE = 5.0

# `dbmaint-manager [serve]` runs the server (migrating the store first); `dbmaint-manager migrate` only migrates.
COMMANDS = ("serve", "migrate")


async def run(config: ManagerConfig) -> int:
    server = ManagerServer(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, server, signum)
    try:
        await server.start()
    except StoreInUse as error:
        log.error("cannot start: %s", error)  # a configuration error: one line, no traceback
        await server.shutdown()
        return 2
    except Exception as error:
        log.error("cannot start: %s", error)
        await server.shutdown()
        return 1
    runtime.freeze_startup_objects()
    try:
        await server.wait()
    except Exception as error:
        log.critical("stopped after an internal failure: %r", error)
        return 1
    return 0


async def serve(config: ManagerConfig) -> int:
    """``run``, then a bounded exit: the process ends ``EXIT_GRACE`` after the manager stopped even if threads
    are still stuck in store calls. By then the manager wrote or released all it could; what is stuck is fenced
    by the store (its lease, its idle-in-transaction timeout)."""
    code = await run(config)
    _exit_after(code, EXIT_GRACE)
    return code


def _exit_after(code: int, grace: float) -> None:
    """Exit with ``code`` after ``grace`` seconds unless the process has ended by then (a daemon thread: an exit
    that does not wait for stuck threads ends it first)."""

    def exit_now() -> None:
        time.sleep(grace)
        here = (threading.current_thread(), threading.main_thread())
        stuck = [thread.name for thread in threading.enumerate() if thread not in here]
        log.warning(
            "exiting %gs after stopping with threads still waiting on the job store (%s): a dead link",
            grace,
            ", ".join(stuck),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)

    threading.Thread(target=exit_now, name="bounded-exit", daemon=True).start()


_background: set[asyncio.Task[None]] = set()


def _on_signal(server: ManagerServer, signum: int) -> None:
    log.info("received %s", signal.Signals(signum).name)
    task = asyncio.create_task(server.shutdown(), name="shutdown")
    _background.add(task)  # keep a reference until it is done
    task.add_done_callback(_background.discard)


def migrate(config: ManagerConfig) -> int:
    """``dbmaint-manager migrate``: bring the job store's schema to the newest revision, then exit."""
    engine = make_engine(config.database_url)
    try:
        before, after = migrations.upgrade(engine)
    except Exception as error:
        log.error("migration failed: %s", str(error).splitlines()[0])
        return 1
    finally:
        engine.dispose()
    if before == after:
        log.info("job store schema already at revision %s", after)
    else:
        log.info("job store schema migrated from revision %s to %s", before or "(empty)", after)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "serve"
    manager = program(f"dbmaint-manager {command}" if command != "serve" else "dbmaint-manager")
    try:
        settings = manager.parse(args, os.environ)
        config = build_config(settings)
    except ConfigError as error:
        sys.exit(report(manager.prog, error))
    if settings.print_requested:
        print("\n".join(settings.lines()))
        sys.exit(0)
    setup_logging(config.log_level, config.log_format, TEXT_FORMAT)
    if command == "migrate":
        sys.exit(migrate(config))
    sys.exit(asyncio.run(serve(config)))
