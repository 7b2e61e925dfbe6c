"""Entry point of ``dbmaint-manager`` / ``python -m manager_service``. Signals are handled here only."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from manager_service.config import ManagerConfig, parse_config
from manager_service.server import ManagerServer

log = logging.getLogger("manager_service")


async def run(config: ManagerConfig) -> int:
    server = ManagerServer(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, server, signum)
    try:
        await server.start()
    except Exception as error:
        log.error("cannot start: %s", error)
        await server.shutdown()
        return 1
    try:
        await server.wait()
    except Exception as error:
        log.critical("stopped after an internal failure: %r", error)
        return 1
    return 0


_background: set[asyncio.Task[None]] = set()


def _on_signal(server: ManagerServer, signum: int) -> None:
    log.info("received %s", signal.Signals(signum).name)
    task = asyncio.create_task(server.shutdown(), name="shutdown")
    _background.add(task)  # keep a reference until it is done
    task.add_done_callback(_background.discard)


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sys.exit(asyncio.run(run(config)))
