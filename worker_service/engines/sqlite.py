"""SQLite: VACUUM, ANALYZE, REINDEX and PRAGMA optimize on a database file.

Each operation runs on its own autocommit connection (``isolation_level=None``) opened with ``mode=rw``, so a
missing file fails instead of being created empty. Sizes come from ``PRAGMA page_count``, ``freelist_count``
and ``page_size`` before and after (bytes = page_count * page_size).

Resource lock (``worker_service.engines.fence``): before opening the database the operation takes an exclusive
``fcntl.flock`` on ``<database file>.dbmaint-lock`` (created next to the database if missing -- never the
database itself) and holds it to the end, waiting while another process (or slot) holds it. The kernel drops it
when the process dies, even by kill -9, and keeps it while the process is frozen. The holder writes its pid and
host into the file, so a waiter can name it.

The statement is interrupted two ways, whichever comes first: ``Connection.interrupt()`` called from the
cancelling thread (or the deadline timer), and a progress handler that returns non-zero once the token is
cancelled or the deadline passed (it also covers a cancel that arrives before the statement started). The
progress handler is also where ``DBMAINT_FAULTS`` slows a statement down (see ``worker_service.faults``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import URL

from dbmaint.operations import Operation, OperationReport, TableScope
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from worker_service.cancel import CancelToken, check, interrupting, interruption
from worker_service.engines import fence
from worker_service.engines.base import EVERYTHING, EngineUnavailable, Observed, OperationFailed, RunStatus
from worker_service.faults import NO_FAULTS, FaultPlan

STATEMENTS: dict[Operation, str] = {
    Operation.VACUUM: "VACUUM",
    Operation.ANALYZE: "ANALYZE",
    Operation.REINDEX: "REINDEX",
    Operation.OPTIMIZE: "PRAGMA optimize",
}
SUPPORTED_DRIVERS = frozenset({"pysqlite"})
DEFAULT_BUSY_TIMEOUT = 5.0
# VM instructions between progress-handler calls: often enough to stop within microseconds, rare enough to cost
# nothing. With a slow fault it is called on every instruction, so even a tiny statement gets slowed.
PROGRESS_INTERVAL = 1000
FAULT_STEP_SECONDS = 0.01
LOCK_FILE_SUFFIX = ".dbmaint-lock"
# A slow fault sleeps one step per VM instruction for this many instructions, then the rest of the time at once.
# VACUUM: far enough in that it holds its write lock (after ~42 steps), yet below the ~70 steps VACUUM takes even
# on a database without tables, so the full time is always reached. Other statements can be as short as 6 steps
# (PRAGMA optimize with nothing to do): they sleep the whole time on their first step.
FAULT_SPREAD_CALLS: dict[Operation, int] = {Operation.VACUUM: 48}
DEFAULT_FAULT_SPREAD_CALLS = 1


@dataclass(frozen=True, slots=True)
class _Size:
    page_count: int
    freelist_count: int
    page_size: int

    @property
    def bytes(self) -> int:
        return self.page_count * self.page_size


class _ProgressHandler:
    """SQLite's progress handler (called every few VM instructions): stop the statement when cancelled or past
    the deadline; sleep while a slow fault applies."""

    def __init__(
        self, cancel: CancelToken, deadline: datetime | None, slow_seconds: float, spread_calls: int = 1
    ) -> None:
        self._cancel = cancel
        self._deadline_ts = None if deadline is None else deadline.timestamp()
        self._slow_seconds = slow_seconds
        self._spread_calls = spread_calls
        self._slow_until = 0.0
        self.calls = 0

    def start(self) -> None:
        self._slow_until = time.monotonic() + self._slow_seconds
        self.calls = 0

    def _must_stop(self) -> bool:
        return self._cancel.cancelled or (self._deadline_ts is not None and time.time() >= self._deadline_ts)

    def __call__(self) -> int:
        self.calls += 1
        if self._must_stop():
            return 1
        # One step per call while spreading, then every step left: never past slow_until, stop checks in between.
        steps = 1 if self.calls < self._spread_calls else None
        while (left := self._slow_until - time.monotonic()) > 0 and steps != 0:
            time.sleep(min(FAULT_STEP_SECONDS, left))
            if self._must_stop():
                return 1
            steps = None if steps is None else steps - 1
        return 0


class FileLock:
    """The SQLite dialect part of the resource fence: an exclusive ``flock`` on ``<database>.dbmaint-lock``.

    ``flock`` locks belong to the open file, so two slots of one worker exclude each other too. Open on
    construction (OperationFailed if the lock file cannot be created); ``close`` releases it.
    """

    def __init__(self, database: str) -> None:
        self.path = database + LOCK_FILE_SUFFIX
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OperationFailed(f"cannot open the resource lock file {self.path}: {exc.strerror}") from None

    @property
    def description(self) -> str:
        return f"flock on {self.path}"

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        with contextlib.suppress(OSError):  # only for the waiters' message
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        return True

    def holder(self) -> str:
        try:
            written = os.pread(self._fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            written = ""
        return f"another process, {written}" if written.startswith("pid ") else "another process"

    def close(self) -> None:
        os.close(self._fd)  # closing the only descriptor of this open file releases the flock


def database_path(url: URL) -> str:
    """The absolute path of the database file a sqlite URL names."""
    return os.path.abspath(url.database or "")


def _read_size(conn: sqlite3.Connection) -> _Size:
    def pragma(name: str) -> int:
        row = conn.execute(f"PRAGMA {name}").fetchone()
        return int(row[0]) if row else 0

    return _Size(pragma("page_count"), pragma("freelist_count"), pragma("page_size"))


def _count_objects(conn: sqlite3.Connection) -> tuple[int, int]:
    """(tables, indexes), not counting SQLite's own (sqlite_*: stat tables, autoindexes)."""
    rows = conn.execute(
        "SELECT type, count(*) FROM sqlite_master WHERE type IN ('table', 'index') "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' GROUP BY type"
    ).fetchall()
    counts = {str(kind): int(n) for kind, n in rows}
    return counts.get("table", 0), counts.get("index", 0)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _scoped_statements(
    conn: sqlite3.Connection, operation: Operation, scope: TableScope
) -> tuple[list[str], str | None]:
    """The statements that cover ``scope``, with names taken from the catalog, and a note when SQLite cannot
    narrow the operation (VACUUM and PRAGMA optimize work on the whole file). OperationFailed names an unknown
    schema or table."""
    whole = [STATEMENTS[operation]]
    if scope.everything:
        return whole, None
    schemas = {str(row[1]) for row in conn.execute("PRAGMA database_list")} - {"temp"}
    for schema in scope.schemas:
        if schema not in schemas:
            raise OperationFailed(
                f"schema {schema!r} does not exist (this SQLite database has: {', '.join(sorted(schemas))})"
            )
    tables: list[tuple[str, str]] = []
    for name in scope.tables:
        named_schema, table = TableScope.split_table(name)
        schema = named_schema or "main"
        if schema not in schemas:
            raise OperationFailed(f"table {name!r}: schema {schema!r} does not exist")
        found = conn.execute(
            f"SELECT name FROM {quote_identifier(schema)}.sqlite_master WHERE type = 'table' AND name = ?",
            (table,),
        ).fetchone()
        if found is None:
            raise OperationFailed(f"table {name!r} does not exist in schema {schema!r}")
        tables.append((schema, str(found[0])))
    if operation in (Operation.VACUUM, Operation.OPTIMIZE):
        return whole, f"scope: SQLite runs {STATEMENTS[operation]} on the whole file; the names requested exist"
    if not scope.tables:
        for schema in scope.schemas:
            rows = conn.execute(
                f"SELECT name FROM {quote_identifier(schema)}.sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
            )
            tables.extend((schema, str(row[0])) for row in rows)
    keyword = STATEMENTS[operation]
    return [f"{keyword} {quote_identifier(s)}.{quote_identifier(t)}" for s, t in tables], None


class SqliteEngine:
    """The SQLite engine (stdlib ``sqlite3``, SQLAlchemy URLs ``sqlite:///path`` / ``sqlite+pysqlite:///path``)."""

    name = "sqlite"
    dialect = "sqlite"

    def __init__(self, faults: FaultPlan = NO_FAULTS) -> None:
        self._faults = faults

    def check_url(self, url: URL) -> None:
        driver = url.get_driver_name()
        if driver not in SUPPORTED_DRIVERS:
            raise EngineUnavailable(
                f"sqlite driver {driver!r} is not supported (supported: {', '.join(sorted(SUPPORTED_DRIVERS))})"
            )
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:") or url.query.get("uri"):
            raise EngineUnavailable(
                "sqlite target must name a database file (sqlite:///relative/path.db or sqlite:////absolute/path.db);"
                " in-memory databases and URI filenames are not supported"
            )
        timeout = url.query.get("timeout")
        if timeout is not None:
            try:
                float(str(timeout))
            except ValueError:
                raise EngineUnavailable(f"sqlite timeout={timeout!r} is not a number of seconds") from None

    def _connect(self, path: str, url: URL, read_only: bool = False) -> sqlite3.Connection:
        timeout = url.query.get("timeout")
        busy_timeout = float(str(timeout)) if timeout is not None else DEFAULT_BUSY_TIMEOUT
        # mode=rw: never create the file (mode=ro for a plan: never write it either). isolation_level=None:
        # autocommit (VACUUM refuses a transaction).
        uri = f"file:{urllib.parse.quote(path)}?mode={'ro' if read_only else 'rw'}"
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)

    def run(
        self,
        operation: Operation,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope = EVERYTHING,
        status: RunStatus | None = None,
    ) -> OperationReport:
        operation = Operation(operation)
        path = database_path(url)
        check(cancel, deadline)
        if not os.path.exists(path):
            raise OperationFailed(f"sqlite database file does not exist: {path}")
        if not os.path.isfile(path):
            raise OperationFailed(f"sqlite database path is not a file: {path}")
        lock = FileLock(path)
        try:
            waited = fence.acquire(lock, cancel, deadline, status or RunStatus())
            report = self._run(operation, url, path, cancel, deadline, scope)
        finally:
            lock.close()
        return dataclasses.replace(report, notes=(*report.notes, fence.lock_note(lock, waited)))

    def observe(
        self,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> Observed:
        """``Engine.observe``: ``observe_sqlite`` on a read-only connection (``mode=ro``: the file stays
        byte-identical), without the resource lock (observing must not wait behind a running VACUUM) and without
        a maintenance statement. A cancel or the deadline interrupts its query. The size is the file's."""
        # Imported here: observe_sqlite uses quote_identifier from this module; a top-level import is a cycle.
        from worker_service.engines.observe_sqlite import observe_sqlite

        path = database_path(url)
        check(cancel, deadline)
        if not os.path.isfile(path):
            raise OperationFailed(f"sqlite database file does not exist or is not a file: {path}")
        try:
            conn = self._connect(path, url, read_only=True)
        except sqlite3.Error as exc:
            raise OperationFailed(f"cannot open sqlite database {path}: {exc}") from None
        try:
            with interrupting(conn.interrupt, cancel, deadline) as interrupts:
                try:
                    observations = observe_sqlite(conn, scope, thresholds)
                    size = _read_size(conn).bytes
                except sqlite3.Error as exc:
                    # An error the interrupt caused is the interruption: CANCELLED, or the deadline's failure.
                    stopped = interruption(cancel, deadline, deadline_reached=interrupts.deadline_reached)
                    raise (stopped or OperationFailed(f"cannot observe sqlite database {path}: {exc}")) from None
        finally:
            conn.close()
        check(cancel, deadline)  # a cancel after the last query: the observation ends CANCELLED all the same
        return Observed(observations, size)

    def _run(
        self,
        operation: Operation,
        url: URL,
        path: str,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
    ) -> OperationReport:
        statement = STATEMENTS[operation]
        started = time.monotonic()
        try:
            conn = self._connect(path, url)
        except sqlite3.Error as exc:
            raise OperationFailed(f"cannot open sqlite database {path}: {exc}") from None
        try:
            try:
                before = _read_size(conn)
                tables, indexes = _count_objects(conn)
                statements, scope_note = _scoped_statements(conn, operation, scope)
            except sqlite3.Error as exc:
                raise OperationFailed(f"cannot read sqlite database {path}: {exc}") from None

            slow = self._faults.slow_seconds(operation)
            spread = FAULT_SPREAD_CALLS.get(operation, DEFAULT_FAULT_SPREAD_CALLS)
            handler = _ProgressHandler(cancel, deadline, slow, spread)
            conn.set_progress_handler(handler, 1 if slow > 0 else PROGRESS_INTERVAL)
            try:
                with interrupting(conn.interrupt, cancel, deadline) as interrupts:
                    handler.start()
                    try:
                        for statement in statements:
                            conn.execute(statement).fetchall()
                    except sqlite3.Error as exc:
                        # An interrupt does not always say "interrupted" (VACUUM interrupted while attaching its
                        # scratch database reports "unable to open database"): the token and clock decide.
                        stopped = interruption(cancel, deadline, deadline_reached=interrupts.deadline_reached)
                        if stopped is not None:
                            raise stopped from None
                        raise OperationFailed(f"{statement} failed on {path}: {exc}") from None
            finally:
                conn.set_progress_handler(None, 0)

            try:
                after = _read_size(conn)
            except sqlite3.Error as exc:
                raise OperationFailed(f"{statement} ran, but reading the size of {path} failed: {exc}") from None
        finally:
            conn.close()

        notes = [
            *(f"statement: {statement}" for statement in statements),
            *([scope_note] if scope_note else []),
            f"page_size: {before.page_size} -> {after.page_size} bytes",
            f"page_count: {before.page_count} -> {after.page_count}",
            f"freelist_count: {before.freelist_count} -> {after.freelist_count}",
        ]
        if operation in (Operation.ANALYZE, Operation.REINDEX) and not scope.everything:
            objects = len(statements)
        elif operation in (Operation.ANALYZE, Operation.REINDEX):
            objects = tables + indexes
            notes.append(f"tables: {tables}, indexes: {indexes}")
        else:
            objects = 1
        if slow > 0:
            notes.append(f"fault injected: slow:{operation.value}={slow:g} ({handler.calls} progress calls)")
        return OperationReport(
            engine=self.name,
            duration_seconds=time.monotonic() - started,
            bytes_before=before.bytes,
            bytes_after=after.bytes,
            objects_processed=objects,
            objects_skipped=0,
            notes=tuple(notes),
        )
