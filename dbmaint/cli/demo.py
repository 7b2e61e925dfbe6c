"""The demo: SQLite databases with reclaimable space, and a whole fleet (manager + two workers) run over them.

``make_demo_db`` is also the ``make-demo-db`` command, which the compose deployment's ``demo-init`` runs.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.text import Text

from dbmaint.cli.client import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_COMPLETED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    CliError,
    ManagerClient,
)
from dbmaint.cli.render import print_outcome, watch_view
from dbmaint.cli.render_tables import format_bytes, format_seconds
from dbmaint.cli.watch import WatchState, follow
from dbmaint.local import LocalFleet, ProcessExited, StartTimeout, free_port
from dbmaint.operations import Operation
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.wire import operation_to_proto

DEFAULT_ROWS = 20_000
# The demo table `make-demo-db` creates in a PostgreSQL database (dbmaint.cli.demo_postgres); here so that the
# CLI names it in its help without importing SQLAlchemy at every start.
DEMO_TABLE = "dbmaint_demo_events"
DEMO_TARGETS = {"alpha": DEFAULT_ROWS, "beta": DEFAULT_ROWS * 3 // 2}
WORKER_IDS = ("demo-worker-1", "demo-worker-2")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


# -- demo databases ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqliteStats:
    """Page figures of a SQLite file: what VACUUM can give back is ``freelist_count * page_size``."""

    page_size: int
    page_count: int
    freelist_count: int

    @property
    def size(self) -> int:
        return self.page_size * self.page_count

    @property
    def reclaimable(self) -> int:
        return self.page_size * self.freelist_count


def sqlite_stats(path: Path) -> SqliteStats:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        figures = [connection.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count")]
        freelist = connection.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        connection.close()
    return SqliteStats(page_size=figures[0], page_count=figures[1], freelist_count=freelist)


def make_demo_db(
    path: Path, rows: int = DEFAULT_ROWS, *, if_exists: Literal["fail", "replace", "keep"] = "fail"
) -> tuple[SqliteStats, bool]:
    """Creates a SQLite database of ``rows`` events (an index, random blobs), then deletes the older half.

    The deleted rows leave whole pages on the freelist, so VACUUM visibly shrinks the file. The file is built
    beside ``path`` and moved into place, so a reader never sees a half-built database. Returns the figures of
    the file and whether it was created (False: ``if_exists="keep"`` left an existing one alone).
    """
    if rows < 2:
        raise CliError("--rows must be at least 2", EXIT_REJECTED)
    if path.exists() and if_exists == "keep":
        try:
            return sqlite_stats(path), False
        except sqlite3.Error as error:
            raise CliError(f"{path} exists but is not a readable SQLite database: {error}", EXIT_FAILURE) from None
    if path.exists() and if_exists == "fail":
        raise CliError(f"{path} already exists (pass --force to replace it)", EXIT_REJECTED)
    try:
        return _build_demo_db(path, rows), True
    except (OSError, sqlite3.Error) as error:
        raise CliError(f"cannot create the demo database {path}: {error}", EXIT_FAILURE) from None


def _build_demo_db(path: Path, rows: int) -> SqliteStats:
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f".{path.name}.{os.getpid()}.building")
    building.unlink(missing_ok=True)
    connection = sqlite3.connect(building)
    try:
        connection.executescript(
            """
            PRAGMA journal_mode = DELETE;
            PRAGMA auto_vacuum = NONE;
            CREATE TABLE events (
                id INTEGER PRIMARY KEY,
                kind TEXT NOT NULL,
                created REAL NOT NULL,
                payload BLOB NOT NULL
            );
            CREATE INDEX events_kind_created ON events (kind, created);
            """
        )
        with connection:
            connection.execute(
                """
                WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?)
                INSERT INTO events (id, kind, created, payload)
                SELECT x, 'kind-' || (x % 17), 1700000000 + x * 7.5, randomblob(100 + abs(random()) % 200)
                FROM n
                """,
                (rows,),
            )
        with connection:
            connection.execute("DELETE FROM events WHERE id <= ?", (rows // 2,))
    finally:
        connection.close()
    for suffix in ("-wal", "-shm", "-journal"):  # a stale journal must never be replayed into the new file
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(building, path)
    return sqlite_stats(path)


def describe_demo_db(path: Path, stats: SqliteStats) -> str:
    share = 100 * stats.reclaimable / stats.size if stats.size else 0.0
    return (
        f"{path}: {format_bytes(stats.size)}, {format_bytes(stats.reclaimable)} reclaimable ({share:.0f}%, "
        f"{stats.freelist_count} free pages of {stats.page_size} bytes)"
    )


# -- the demo ---------------------------------------------------------------------------------------------------


class Demo:
    def __init__(self, workdir: Path, console: Console, rows: int, timeout: float) -> None:
        self.workdir = workdir
        self.console = console
        self.rows = rows
        self.timeout = timeout
        self.logs = workdir / "logs"
        self.databases = {name: workdir / f"{name}.db" for name in DEMO_TARGETS}
        self.fleet = LocalFleet(workdir, store_url=f"sqlite:///{workdir / 'manager.db'}", log_dir=self.logs)
        self.address = self.fleet.address
        # The manager's web console, on loopback: no token is needed there (it refuses other Host names).
        self.console_url = f"http://127.0.0.1:{free_port()}/"

    def say(self, text: str, style: str = "") -> None:
        self.console.print(Text(text, style=style))

    def prepare(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.say(f"demo workdir: {self.workdir}", "bold")
        for name, path in self.databases.items():
            rows = DEMO_TARGETS[name] * self.rows // DEFAULT_ROWS
            stats, _ = make_demo_db(path, rows, if_exists="replace")
            self.say(f"  target {name}: {describe_demo_db(path, stats)}")

    def start_fleet(self) -> None:
        """The manager, SERVING, then the workers, all connected: within START_TIMEOUT in all."""
        started = time.monotonic()
        self.say(f"starting the manager on {self.address} and {len(WORKER_IDS)} workers (logs: {self.logs})")
        try:
            listen = self.console_url.removeprefix("http://").rstrip("/")
            self.fleet.start_manager("--log-level", "INFO", "--http-listen", listen, timeout=START_TIMEOUT)
            self.say(f"  manager SERVING after {format_seconds(time.monotonic() - started)}")
            self.say(
                f"  web console: {self.console_url} (open it in a browser while the demo runs; --stay keeps it)"
            )
            targets = {name: f"sqlite:///{db}" for name, db in self.databases.items()}
            for worker_id in WORKER_IDS:
                self.fleet.start_worker(worker_id, "--log-level", "INFO", targets=targets, slots=2, wait=False)
            self.fleet.wait_workers(WORKER_IDS, max(0.0, started + START_TIMEOUT - time.monotonic()))
        except ProcessExited as error:
            raise CliError(error.headline, EXIT_FAILURE) from None
        except StartTimeout as error:
            raise CliError(error.headline, EXIT_UNREACHABLE) from None
        self.say(f"  workers {', '.join(WORKER_IDS)} connected after {format_seconds(time.monotonic() - started)}")

    def run_maintenance(self) -> tuple[WatchState, float]:
        request = pb.CreateMaintenanceRequest(
            targets=list(self.databases), operations=[operation_to_proto(op) for op in Operation]
        )
        started = time.monotonic()
        with ManagerClient(self.address, self.timeout) as client:
            created = client.create(request)
            self.say(f"created parent {created.parent.id}: {len(created.children)} children", "bold")
            state = follow(client, created.parent.id, watch_view(self.console))
        return state, time.monotonic() - started

    def report(self, state: WatchState, seconds: float) -> None:
        print_outcome(self.console, state)
        for name in self.databases:
            steps = [child for child in state.children if child.target == name and child.HasField("result")]
            if not steps:
                self.say(f"  {name}: no figures reported", "yellow")
                continue
            before, after = steps[0].result.bytes_before, steps[-1].result.bytes_after
            reclaimed = before - after
            share = 100 * reclaimed / before if before else 0.0
            self.say(
                f"  {name}: {format_bytes(before)} → {format_bytes(after)}, "
                f"reclaimed {format_bytes(reclaimed)} ({reclaimed} bytes, {share:.1f}%)"
            )
        self.say(f"maintenance took {format_seconds(seconds)} (create → parent terminal)")

    def stay(self) -> None:
        """Keep the fleet (and its console) running until Ctrl-C."""
        self.say(f"the fleet keeps running: web console at {self.console_url}; Ctrl-C stops it", "bold")
        try:
            while True:
                self.fleet.check_alive()
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.say("")
        except ProcessExited as error:
            raise CliError(error.headline, EXIT_FAILURE) from None

    def stop_fleet(self) -> bool:
        """SIGTERMs the workers (they drain), then the manager. True if every process exited 0 on SIGTERM."""
        codes = self.fleet.stop(STOP_TIMEOUT)
        for name, code in codes.items():
            log = self.fleet.log_path(name)
            if code is None:
                self.say(f"  {name} did not exit within {STOP_TIMEOUT:g}s and was killed (log: {log})", "yellow")
            elif code != 0:
                self.say(f"  {name} exited with code {code} (log: {log})", "yellow")
        return all(code == 0 for code in codes.values())


def run_demo(
    console: Console, workdir: Path | None, keep: bool, rows: int, timeout: float, stay: bool = False
) -> int:
    began = time.monotonic()
    temporary = workdir is None
    try:
        directory = Path(tempfile.mkdtemp(prefix="dbmaint-demo-")) if workdir is None else workdir.resolve()
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create the demo workdir: {error}", EXIT_FAILURE) from None
    demo = Demo(directory, console, rows, timeout)
    code = EXIT_FAILURE
    try:
        demo.prepare()
        demo.start_fleet()
        state, seconds = demo.run_maintenance()
        demo.report(state, seconds)
        code = EXIT_OK if state.completed else EXIT_NOT_COMPLETED
        if stay:
            demo.stay()
    except CliError as error:
        code = error.exit_code
        raise CliError(f"{error.message} (logs in {demo.logs})", error.exit_code) from None
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        raise
    finally:
        demo.say("stopping the workers and the manager (SIGTERM)")
        clean = demo.stop_fleet()
        if clean:
            demo.say("  all processes exited cleanly")
        demo.say(f"demo took {format_seconds(time.monotonic() - began)} in all")
        if code != EXIT_OK or not clean:
            demo.say(f"logs kept in {demo.logs}", "yellow")
        elif temporary and not keep:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            demo.say(f"workdir kept: {directory}")
    return code
