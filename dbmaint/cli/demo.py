"""The demo: SQLite databases with reclaimable space, and a whole fleet (manager + two workers) run over them.

``make_demo_db`` is also the ``make-demo-db`` command, which the compose deployment's ``demo-init`` runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
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
    MANAGER,
    CliError,
    ManagerClient,
    health_status,
)
from dbmaint.cli.render import format_bytes, format_seconds, print_outcome, watch_view
from dbmaint.cli.watch import WatchState, follow
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


# -- processes --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_environment() -> dict[str, str]:
    """This environment without DBMAINT_* settings (the demo passes everything as flags), unbuffered."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DBMAINT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Service:
    """A manager or worker process of the demo, its output going to ``log``."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_environment(),
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops the fleet in order
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise CliError(
                f"{self.name} exited with code {self.process.returncode}{self.last_words()}", EXIT_FAILURE
            )

    def last_words(self) -> str:
        """The last line of the log as ": <line>" ("" for an empty log), to say why the process ended."""
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f": {lines[-1].strip()}" if lines else ""

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Waits up to ``timeout`` for the exit, then SIGKILLs. Returns the exit code (None if never started)."""
        process = self.process
        if process is None:
            return None
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return process.returncode


# -- the demo ---------------------------------------------------------------------------------------------------


class Demo:
    def __init__(self, workdir: Path, console: Console, rows: int, timeout: float) -> None:
        self.workdir = workdir
        self.console = console
        self.rows = rows
        self.timeout = timeout
        self.logs = workdir / "logs"
        self.address = f"127.0.0.1:{free_port()}"
        self.databases = {name: workdir / f"{name}.db" for name in DEMO_TARGETS}
        python = sys.executable
        self.manager = Service(
            "manager",
            [
                *(python, "-m", "manager_service"),
                *("--listen", self.address),
                *("--database-url", f"sqlite:///{workdir / 'manager.db'}"),
                *("--log-level", "INFO"),
            ],
            self.logs / "manager.log",
        )
        targets = [arg for name, db in self.databases.items() for arg in ("--target", f"{name}=sqlite:///{db}")]
        self.workers = [
            Service(
                worker_id,
                [
                    *(python, "-m", "worker_service"),
                    *("--manager", self.address),
                    *targets,
                    *("--slots", "2"),
                    *("--worker-id", worker_id),
                    *("--log-level", "INFO"),
                ],
                self.logs / f"{worker_id}.log",
            )
            for worker_id in WORKER_IDS
        ]

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
        started = time.monotonic()
        self.say(f"starting the manager on {self.address} and {len(self.workers)} workers (logs: {self.logs})")
        self.manager.start()
        deadline = started + START_TIMEOUT
        while True:
            self.manager.check_alive()
            try:
                if health_status(self.address, timeout=1.0, what=MANAGER) == "SERVING":
                    break
            except CliError as error:
                if time.monotonic() > deadline:
                    raise CliError(f"{error.message} (after {START_TIMEOUT:g}s)", EXIT_UNREACHABLE) from None
            time.sleep(0.1)
        self.say(f"  manager SERVING after {format_seconds(time.monotonic() - started)}")
        for worker in self.workers:
            worker.start()
        with ManagerClient(self.address, self.timeout) as client:
            while True:
                for service in (self.manager, *self.workers):
                    service.check_alive()
                connected = {worker.worker_id for worker in client.workers().workers}
                if connected >= set(WORKER_IDS):
                    break
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(set(WORKER_IDS) - connected))
                    raise CliError(
                        f"workers {missing} did not connect within {START_TIMEOUT:g}s", EXIT_UNREACHABLE
                    )
                time.sleep(0.1)
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

    def stop_fleet(self) -> bool:
        """SIGTERMs the workers (they drain), then the manager. True if every process exited 0 on SIGTERM."""
        clean = True
        for group in (self.workers, [self.manager]):
            started = [service for service in group if service.process is not None]
            for service in started:
                service.terminate()
            for service in started:
                code = service.wait(STOP_TIMEOUT)
                if code != 0:
                    clean = False
                    self.say(f"  {service.name} exited with code {code} (log: {service.log})", "yellow")
        return clean


def run_demo(console: Console, workdir: Path | None, keep: bool, rows: int, timeout: float) -> int:
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
