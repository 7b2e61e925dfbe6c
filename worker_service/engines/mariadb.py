"""MariaDB: OPTIMIZE, ANALYZE and an online rebuild, table by table (several at once with ``parallel``), over
PyMySQL. A ``ParallelEngine``: ``run`` is ``run_parallel`` with one lane.

URLs: ``mariadb+pymysql://user:pw@host:3306/db`` and ``mysql+pymysql://...`` (SQLAlchemy backend names
``mariadb`` and ``mysql``; the registry holds one ``MariadbEngine`` per dialect). Other drivers are refused at
start. The URL query may carry ``lock_wait_timeout=<seconds>`` (default 5) besides PyMySQL's own connection
options (``connect_timeout``, ``ssl_ca``, ``unix_socket``, ...), which are passed on through SQLAlchemy's
``create_connect_args``.

=============  ==========================================================
operation      statement, once per table
=============  ==========================================================
``vacuum``     ``OPTIMIZE NO_WRITE_TO_BINLOG TABLE `db`.`t```
``analyze``    ``ANALYZE NO_WRITE_TO_BINLOG TABLE `db`.`t```
``reindex``    ``ALTER TABLE `db`.`t` FORCE, ALGORITHM=INPLACE, LOCK=NONE``
``optimize``   ``OPTIMIZE NO_WRITE_TO_BINLOG TABLE `db`.`t```
=============  ==========================================================

MODE_AUTO (``run_parallel`` with ``actions``, from ``worker_service.engines.auto``): only the tables of the
actions that are in scope run, in the actions' order (most urgent first), each with the statement its actions
call for (``statement_for``): OPTIMIZE, VACUUM or FREEZE -> the OPTIMIZE statement (a rebuild, which also
analyzes); else REINDEX -> the ``ALTER ... FORCE`` rebuild; else ANALYZE -> the ANALYZE statement. An action
with no MariaDB statement (DROP_INVALID_INDEX) fails the operation before it connects; a table of the actions
no longer in the catalog is noted and not run.

Session. Each operation opens one autocommit connection, the main one (never a transaction), remembers its
``CONNECTION_ID()`` and sets ``lock_wait_timeout`` (metadata locks: a table another session holds is given up
after that many seconds instead of queueing the application's queries behind the maintenance statement) and
``lc_messages = 'en_US'`` (the ``Msg_text`` rows are matched in English). With a deadline, every statement runs
under ``max_statement_time`` = seconds left + 1: the server stops it on its own even if the worker is gone.

Parallel lanes (``_Session.open_lanes``, the pool of ``worker_service.engines.tables``). With ``parallel`` N > 1
and more than one table, up to N - 1 extra lanes run tables at the same time as the main connection, each the
next table in order. Each extra lane is an autocommit connection of its own with the same session settings and
its own ``KILL QUERY`` interrupter. The lanes are capped by the server's free connections (``extra_lanes``:
``@@max_connections`` - ``Threads_connected``, each extra lane counting two -- its own and the one its KILL
QUERY opens on a cancel -- and one kept for the main connection's KILL QUERY), so a cancel never finds the
server full. A lane that cannot connect is noted and the others run. A note says ``parallel: N lane(s) for M
table(s)`` and why (wanted, max_connections, connected). The resource lock stays on the main connection.

Tables. Names come from the catalog (``information_schema.TABLES``, ``TABLE_TYPE = 'BASE TABLE'``, system
databases excluded) and are quoted with backticks (backticks doubled); they run by schema and name (tables the
scope names: in the order named). The ``TableScope`` is matched against the catalog: schemas are MariaDB
databases; a table is ``"table"`` (in the URL's database, or in the only scope schema when the URL names none) or
``"db.table"``; without a scope, all base tables of the URL's database. A URL without a database is accepted (a
server-wide target), but then the request must name its databases: an operation with no scope fails rather than
touching every database. A name that is not in the catalog fails the operation (``OperationFailed`` naming it)
before any statement runs.

Resource lock (``worker_service.engines.fence``): right after the session settings the operation takes
``GET_LOCK(name, 0)`` on its work connection (``NamedLock`` gives the name) and holds it until that connection
closes; while another connection holds it, the operation waits (try-lock every 0.25 s, stopped by a cancel or
the deadline) and names the holder's connection id (``IS_USED_LOCK``).

Results. OPTIMIZE and ANALYZE answer with (Table, Op, Msg_type, Msg_text) rows: all are read and quoted in the
notes (InnoDB's "Table does not support optimize, doing recreate + analyze instead" followed by status OK is a
success). Each table ends one of three ways:

* processed -- no ``error`` row (and no exception);
* skipped -- the table could not be had or rebuilt without blocking: lock wait timeout or deadlock (another
  session holds a metadata lock), ALTER's "ALGORITHM=INPLACE / LOCK=NONE is not supported" (MyISAM, Aria,
  FULLTEXT indexes, ...), or the table was dropped meanwhile. The next table is tried;
* failed -- any other error (e.g. a MERGE table whose underlying table is gone). The next table is tried too;
  a lost connection stops the loop.

This is the failure policy of ``worker_service.engines.tables``, shared with PostgreSQL: the child is
COMPLETED when no table failed (``objects_skipped`` counts the skipped ones, each with a note saying why), and
FAILED when at least one failed: the error names every failed table with the server's message, and the report
(figures, notes) is attached. Cancel -> CANCELLED and deadline -> "deadline exceeded" win over both. The
per-table notes (a ``statement:`` note and an outcome note per table) are capped by ``tables.MAX_TABLE_NOTES``
tables, the skipped and failed ones kept first.

Per-table reports (``OperationReport.tables``, ``TableRun.table_reports``): every table run has a
``TableReport`` with ``before`` (and, processed, ``after``) figures ``data_bytes``, ``index_bytes`` and
``data_free_bytes`` from ``information_schema.TABLES`` and the ``duration_seconds`` of its statement. Its action:
the one run (vacuum and optimize -> OPTIMIZE, analyze -> ANALYZE, reindex -> REINDEX; with ``actions`` the
table's first action); a skipped table reads SKIP, with the reason code ``locked`` when another session held a
lock on it (a table that cannot be rebuilt online or was dropped has no reason code: its note says why); a
failed table keeps its action and has no figures after.

Sizes (``bytes_before``/``bytes_after``) are the sum of ``DATA_LENGTH + INDEX_LENGTH`` of the tables in scope
from ``information_schema.TABLES``; ``DATA_FREE`` (reclaimable) is noted per table and in total. For InnoDB
these figures come from its persistent statistics, refreshed by ANALYZE, by a rebuild and in the background
after 10% of the rows changed: a "before" figure can lag behind recent writes (``DATA_FREE`` is always
current). When ``mysql.innodb_table_stats.last_update`` is older than the table's ``UPDATE_TIME`` the notes say
so. ``objects_processed`` / ``objects_skipped`` count tables; a failed table counts as skipped.

Cancel and deadline. The running statement of each lane is stopped on the server with ``KILL QUERY <connection
id>`` from a connection of its own (``worker_service.cancel.interrupting``). The kill is sent from a thread of
its own (the cancel arrives on the worker's event loop, which must not wait for a connection) and repeated every
0.1 s while the statement is still running, so a statement that had not reached the server yet is caught too. An
interrupted OPTIMIZE answers with an ``error`` row "Query execution was interrupted" (ALTER raises 1317); the
cancel token and the clock decide what it was: ``OperationCancelled`` or ``DeadlineExceeded``. InnoDB rolls an
interrupted rebuild back: the table is left as it was.

Faults. ``DBMAINT_FAULTS`` ``slow:<op>=N`` runs ``SELECT SLEEP(N)`` on the work connection right before the
first table's statement: a real server statement, interrupted by ``KILL QUERY`` like any other (SLEEP then
returns 1 or raises 1317). It is noted in the report.

Secrets. Errors and notes never carry the URL or its password (server and driver messages go through
``worker_service.logs.redact``).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pymysql
from sqlalchemy.engine import URL

from dbmaint.operations import Operation, OperationReport, Reason, TableAction, TableReport, TableScope
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from worker_service.cancel import CancelToken, check, seconds_left
from worker_service.engines import fence
from worker_service.engines.base import (
    EVERYTHING,
    EngineUnavailable,
    Observed,
    OperationFailed,
    RunStatus,
    TableActions,
)
from worker_service.engines.observe import TableObservation
from worker_service.engines.observe_mariadb import observe_mariadb
from worker_service.engines.tables import (
    ConnectionLost,
    RepeatingInterrupter,
    RunOne,
    Stopped,
    TableOutcome,
    TableRun,
    TableStatus,
    interruptible,
    run_operation,
)
from worker_service.faults import NO_FAULTS, FaultPlan
from worker_service.logs import redact

log = logging.getLogger(__name__)

STATEMENTS: dict[Operation, str] = {
    Operation.VACUUM: "OPTIMIZE NO_WRITE_TO_BINLOG TABLE {table}",
    Operation.ANALYZE: "ANALYZE NO_WRITE_TO_BINLOG TABLE {table}",
    Operation.REINDEX: "ALTER TABLE {table} FORCE, ALGORITHM=INPLACE, LOCK=NONE",
    Operation.OPTIMIZE: "OPTIMIZE NO_WRITE_TO_BINLOG TABLE {table}",
}
# The TableAction a statement carries out, as the per-table reports give it.
ACTION_OF: dict[Operation, TableAction] = {
    Operation.VACUUM: TableAction.OPTIMIZE,
    Operation.ANALYZE: TableAction.ANALYZE,
    Operation.REINDEX: TableAction.REINDEX,
    Operation.OPTIMIZE: TableAction.OPTIMIZE,
}
# MODE_AUTO: the actions one OPTIMIZE carries out (on InnoDB a recreate + analyze: it also refreshes the
# statistics and rebuilds the indexes).
REBUILD_ACTIONS = frozenset({TableAction.OPTIMIZE, TableAction.VACUUM, TableAction.FREEZE})
DIALECTS = ("mariadb", "mysql")
SUPPORTED_DRIVERS = frozenset({"pymysql"})
SYSTEM_SCHEMAS = frozenset({"information_schema", "mysql", "performance_schema", "sys"})

LOCK_WAIT_OPTION = "lock_wait_timeout"
DEFAULT_LOCK_WAIT_TIMEOUT = 5
MAX_LOCK_WAIT_TIMEOUT = 31_536_000  # the server's maximum (one year)
DEFAULT_CONNECT_TIMEOUT = 10.0
KILL_CONNECT_TIMEOUT = 5.0
KILL_REPEAT_SECONDS = 0.1
# max_statement_time = seconds left + this: the worker's own KILL normally comes first (and is recognised as the
# deadline); the server's limit is the safety net when the worker is gone.
STATEMENT_TIME_MARGIN = 1.0
# With a deadline, the socket read timeout is the seconds left + this: a server that stops answering cannot
# hold the slot thread forever.
READ_TIMEOUT_MARGIN = 30.0

# The server's connections left for the parallel lanes (Threads_connected counts this connection too).
MAX_CONNECTIONS_SQL = "SELECT @@GLOBAL.max_connections"
THREADS_CONNECTED_SQL = "SHOW GLOBAL STATUS LIKE 'Threads_connected'"

ER_LOCK_WAIT_TIMEOUT = 1205
ER_LOCK_DEADLOCK = 1213
ER_NO_SUCH_TABLE = 1146
ER_BAD_DB_ERROR = 1049
ER_QUERY_INTERRUPTED = 1317
ER_ALTER_OPERATION_NOT_SUPPORTED = 1845
ER_ALTER_OPERATION_NOT_SUPPORTED_REASON = 1846
ER_STATEMENT_TIMEOUT = 1969
CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
LOCK_ERRORS = frozenset({ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK})
NOT_ONLINE_ERRORS = frozenset({ER_ALTER_OPERATION_NOT_SUPPORTED, ER_ALTER_OPERATION_NOT_SUPPORTED_REASON})
CONNECTION_ERRORS = frozenset({CR_SERVER_GONE_ERROR, CR_SERVER_LOST})

_LOCK_TEXT = re.compile(r"^(Lock wait timeout exceeded|Deadlock found)", re.IGNORECASE)
_INTERRUPTED_TEXT = re.compile(r"^Query execution was interrupted", re.IGNORECASE)
_PYMYSQL_OPTIONS = frozenset(inspect.signature(pymysql.connections.Connection.__init__).parameters) - {"self"}

PROCESSED, SKIPPED, FAILED = TableStatus.PROCESSED, TableStatus.SKIPPED, TableStatus.FAILED
INTERRUPTED_ELSEWHERE = "interrupted on the server by another session"


def statement_for(actions: Sequence[TableAction]) -> str | None:
    """MODE_AUTO: the statement template a table's actions call for. OPTIMIZE, VACUUM or FREEZE among them: the
    OPTIMIZE statement (a rebuild, which covers a REINDEX and an ANALYZE too); else REINDEX: the online rebuild
    (``ALTER ... FORCE``); else ANALYZE: the ANALYZE statement. None when no action has a MariaDB statement
    (SKIP, DROP_INVALID_INDEX)."""
    wanted = set(actions)
    if wanted & REBUILD_ACTIONS:
        return STATEMENTS[Operation.OPTIMIZE]
    if TableAction.REINDEX in wanted:
        return STATEMENTS[Operation.REINDEX]
    if TableAction.ANALYZE in wanted:
        return STATEMENTS[Operation.ANALYZE]
    return None


def _actions(observations: Sequence[TableObservation]) -> list[TableAction]:
    return [observation.action for observation in observations]


def extra_lanes(wanted: int, max_connections: int, connected: int) -> int:
    """How many extra parallel lanes the server leaves room for: at most ``wanted``. Each extra lane takes two of
    the server's free connections (``max_connections`` - ``Threads_connected``): its own, and the one its KILL
    QUERY opens on a cancel or at the deadline; one more stays free for the main connection's KILL QUERY, so a
    cancel is never refused for want of a connection."""
    free = max_connections - connected
    return max(0, min(wanted, (free - 1) // 2))


def quote_identifier(name: str) -> str:
    """A MariaDB identifier in backticks, backticks doubled."""
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True, slots=True, order=True)
class _Table:
    schema: str
    name: str

    @property
    def quoted(self) -> str:
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.name)}"


@dataclass(frozen=True, slots=True)
class _Size:
    data_length: int = 0
    index_length: int = 0
    data_free: int = 0
    update_time: datetime | None = None  # the table's last write, as InnoDB knows it (not kept over a restart)

    @property
    def bytes(self) -> int:
        return self.data_length + self.index_length

    def figures(self) -> dict[str, float]:
        """The figures of a ``TableReport``, the unit in the name."""
        return {
            "data_bytes": float(self.data_length),
            "index_bytes": float(self.index_length),
            "data_free_bytes": float(self.data_free),
        }


@dataclass(slots=True)
class _TableResult:
    table: _Table
    statement: str
    action: TableAction
    status: TableStatus = PROCESSED
    reason: str = ""
    locked: bool = False  # skipped because another session held a lock on the table
    duration: float = 0.0  # seconds the statement ran
    messages: list[str] = field(default_factory=list)

    def outcome(self, notes: tuple[str, ...] = (), report: TableReport | None = None) -> TableOutcome:
        """The loop's view of this table (the notes and report are written once the sizes after are known)."""
        return TableOutcome(self.table.quoted, self.status, notes, self.reason, report)

    def report(self, before: _Size, after: _Size | None) -> TableReport:
        """This table's ``TableReport``: the action run with the figures before and after (processed), SKIP
        with ``locked`` (a lock) or with no reason code (not online, dropped: the notes say which), or the
        action without figures after (failed)."""
        skipped = self.status is SKIPPED
        processed = self.status is PROCESSED and after is not None
        return TableReport(
            schema=self.table.schema,
            table=self.table.name,
            action=TableAction.SKIP if skipped else self.action,
            reasons=(Reason.LOCKED.value,) if skipped and self.locked else (),
            before=before.figures(),
            after=after.figures() if processed and after is not None else {},
            duration_seconds=self.duration,
        )


def _lock_wait_timeout(url: URL) -> int:
    raw = url.query.get(LOCK_WAIT_OPTION)
    if raw is None:
        return DEFAULT_LOCK_WAIT_TIMEOUT
    text = raw if isinstance(raw, str) else (raw[-1] if raw else "")
    try:
        value = int(text)
    except ValueError:
        raise EngineUnavailable(f"{LOCK_WAIT_OPTION}={text!r} is not a whole number of seconds") from None
    if not 0 <= value <= MAX_LOCK_WAIT_TIMEOUT:
        raise EngineUnavailable(f"{LOCK_WAIT_OPTION}={value} is out of range (0 to {MAX_LOCK_WAIT_TIMEOUT})")
    return value


def _connect_args(url: URL) -> dict[str, Any]:
    """PyMySQL's keyword arguments for ``url`` (SQLAlchemy's own translation), without our options."""
    driver_url = url.difference_update_query([LOCK_WAIT_OPTION])
    dialect = driver_url.get_dialect()()
    try:
        args, kwargs = dialect.create_connect_args(driver_url)
    except Exception as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", [url])
        raise EngineUnavailable(f"unusable connection options: {detail}") from None
    if args:
        raise EngineUnavailable("unexpected positional connection arguments")
    unknown = sorted(set(kwargs) - _PYMYSQL_OPTIONS)
    if unknown:
        raise EngineUnavailable(
            f"unknown connection option(s) in the URL query: {', '.join(unknown)} "
            f"(PyMySQL options and {LOCK_WAIT_OPTION} are accepted)"
        )
    return dict(kwargs)


def _server_error(exc: BaseException, url: URL) -> tuple[int | None, str]:
    """(error code, message) of a driver exception, the message free of URL and password."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], redact(str(args[1]), [url])
    return None, redact(f"{type(exc).__name__}: {exc}", [url])


def _close(conn: Any) -> None:
    """Close a connection that may already be broken (pymysql raises on a connection the server dropped)."""
    with contextlib.suppress(Exception):
        conn.close()


def _describe_error(code: int | None, message: str) -> str:
    return f"({code}) {message}" if code is not None else message


LOCK_NAME_PREFIX = "dbmaint:"
MAX_LOCK_NAME = 64  # GET_LOCK's limit


def lock_name(database: str) -> str:
    """The resource lock's name for a target database: ``dbmaint:<database>`` (``dbmaint:`` alone for a URL
    without a database, a server-wide target); a name over 64 characters (a long database name) becomes
    ``dbmaint:sha1:`` + the first 40 hex digits of the SHA-1 of the database name. ``GET_LOCK`` names are
    server-wide, hence the database in the name; MariaDB compares them case-insensitively."""
    name = LOCK_NAME_PREFIX + database
    if len(name) <= MAX_LOCK_NAME:
        return name
    return f"{LOCK_NAME_PREFIX}sha1:{hashlib.sha1(database.encode()).hexdigest()[:40]}"


class NamedLock:
    """The MariaDB dialect part of the resource fence: ``GET_LOCK(lock_name(database), 0)`` on the work
    connection, released when that connection ends (or by ``RELEASE_LOCK``)."""

    def __init__(self, cursor: Any, database: str) -> None:
        self._cursor = cursor
        self.name = lock_name(database)

    @property
    def description(self) -> str:
        return f"GET_LOCK({self.name!r}) on the work connection"

    def try_acquire(self) -> bool:
        self._cursor.execute("SELECT GET_LOCK(%s, 0)", (self.name,))
        row = self._cursor.fetchone()
        return bool(row and row[0] == 1)

    def holder(self) -> str:
        self._cursor.execute("SELECT IS_USED_LOCK(%s)", (self.name,))
        row = self._cursor.fetchone()
        return f"MariaDB connection id {row[0]}" if row and row[0] is not None else "another MariaDB connection"


class _Killer:
    """Stops the work connection's running statement with ``KILL QUERY`` from a connection of its own.

    ``interrupt`` never blocks (it is called on the worker's event loop): the skeleton's interrupter thread
    (``tables.RepeatingInterrupter``) connects and sends ``KILL QUERY`` every ``KILL_REPEAT_SECONDS`` while a
    statement runs (``statement()``), until ``close``. A KILL that lands between statements does nothing
    (MariaDB clears it when the next one starts); one that would land after the last statement cannot happen,
    as ``close`` waits for the thread first.
    """

    def __init__(self, connect_kwargs: Mapping[str, Any], connection_id: int, url: URL) -> None:
        self._kwargs = dict(connect_kwargs)
        self._kwargs.pop("database", None)
        self._kwargs["connect_timeout"] = min(
            float(self._kwargs.get("connect_timeout") or KILL_CONNECT_TIMEOUT), KILL_CONNECT_TIMEOUT
        )
        self._kwargs.pop("read_timeout", None)
        self.connection_id = int(connection_id)
        self.url = url
        self.busy = threading.Event()
        self._repeater = RepeatingInterrupter(
            self._open, KILL_REPEAT_SECONDS, KILL_CONNECT_TIMEOUT + 1.0, f"dbmaint-kill-{self.connection_id}"
        )
        self.kills = 0

    def interrupt(self) -> None:
        self._repeater()

    @contextmanager
    def statement(self) -> Iterator[None]:
        self.busy.set()
        try:
            yield
        finally:
            self.busy.clear()

    def _open(self) -> _KillSender | None:
        try:
            conn = pymysql.connect(autocommit=True, **self._kwargs)
        except Exception as exc:
            log.warning(
                "cannot stop MariaDB connection %s: connecting for KILL QUERY failed: %s",
                self.connection_id,
                _describe_error(*_server_error(exc, self.url)),
            )
            return None
        return _KillSender(self, conn)

    def close(self) -> None:
        self._repeater.stop()


class _KillSender:
    """The MariaDB ``Sender``: ``KILL QUERY <id>`` on the killer's own connection, while a statement runs."""

    def __init__(self, killer: _Killer, conn: Any) -> None:
        self._killer = killer
        self._conn = conn

    def send(self) -> None:
        killer = self._killer
        if not killer.busy.is_set():
            return
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(f"KILL QUERY {killer.connection_id}")
        except Exception as exc:
            code, message = _server_error(exc, killer.url)
            log.warning("KILL QUERY %s failed: %s", killer.connection_id, _describe_error(code, message))
            raise
        killer.kills += 1

    def close(self) -> None:
        _close(self._conn)


class MariadbEngine:
    """The MariaDB engine (PyMySQL). One instance serves one SQLAlchemy dialect: ``mariadb`` or ``mysql``."""

    name = "mariadb"

    def __init__(self, faults: FaultPlan = NO_FAULTS, dialect: str = "mariadb") -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"MariadbEngine serves dialects {DIALECTS}, not {dialect!r}")
        self._faults = faults
        self._dialect = dialect

    @property
    def dialect(self) -> str:
        return self._dialect

    @classmethod
    def per_dialect(cls, faults: FaultPlan = NO_FAULTS) -> tuple[MariadbEngine, ...]:
        """One engine per dialect it serves (``mariadb+pymysql://`` and ``mysql+pymysql://``): the registry
        holds one engine per dialect."""
        return tuple(cls(faults, dialect) for dialect in DIALECTS)

    def check_url(self, url: URL) -> None:
        """Driver, options and ``lock_wait_timeout``; never connects (the server may be down at start)."""
        driver = url.get_driver_name()
        if driver not in SUPPORTED_DRIVERS:
            raise EngineUnavailable(
                f"{url.get_backend_name()} driver {driver!r} is not supported: use "
                f"{self._dialect}+pymysql://user:password@host:3306/database"
            )
        _lock_wait_timeout(url)
        _connect_args(url)

    # -- connection and catalog

    def _connect(self, url: URL, deadline: datetime | None) -> tuple[Any, dict[str, Any]]:
        try:
            kwargs = _connect_args(url)
        except EngineUnavailable as exc:
            raise OperationFailed(f"unusable MariaDB URL: {exc}") from None
        kwargs.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        left = seconds_left(deadline)
        if left is not None:
            kwargs["connect_timeout"] = max(0.5, min(float(kwargs["connect_timeout"]), left))
            kwargs.setdefault("read_timeout", left + READ_TIMEOUT_MARGIN)
        where = f"{url.host or 'localhost'}:{url.port or 3306}"
        try:
            conn = pymysql.connect(autocommit=True, **kwargs)
        except Exception as exc:
            code, message = _server_error(exc, url)
            if code == ER_BAD_DB_ERROR:
                raise OperationFailed(f"MariaDB database {url.database!r} does not exist on {where}") from None
            raise OperationFailed(
                f"cannot connect to MariaDB at {where} as {url.username or ''!r}: {_describe_error(code, message)}"
            ) from None
        return conn, kwargs

    def _catalog(self, cursor: Any, schemas: Sequence[str]) -> dict[_Table, _Size]:
        """The base tables of ``schemas`` and their sizes, from information_schema.TABLES."""
        if not schemas:
            return {}
        marks = ", ".join(["%s"] * len(schemas))
        cursor.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME, DATA_LENGTH, INDEX_LENGTH, DATA_FREE, UPDATE_TIME"
            f" FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA IN ({marks})",
            list(schemas),
        )
        wanted = set(schemas)
        found: dict[_Table, _Size] = {}
        for schema, name, data_length, index_length, data_free, update_time in cursor.fetchall():
            if str(schema) in wanted:  # exact: the server may compare case-insensitively
                found[_Table(str(schema), str(name))] = _Size(
                    int(data_length or 0),
                    int(index_length or 0),
                    int(data_free or 0),
                    update_time if isinstance(update_time, datetime) else None,
                )
        return found

    def _stale_statistics(
        self, cursor: Any, tables: Sequence[_Table], sizes: Mapping[_Table, _Size]
    ) -> set[_Table]:
        """The InnoDB tables whose persistent statistics (where DATA_LENGTH and INDEX_LENGTH come from) are older
        than their last write: their size before may be out of date. Empty when the user may not read
        mysql.innodb_table_stats."""
        schemas = sorted({t.schema for t in tables})
        if not schemas:
            return set()
        marks = ", ".join(["%s"] * len(schemas))
        try:
            cursor.execute(
                "SELECT database_name, table_name, last_update FROM mysql.innodb_table_stats"
                f" WHERE database_name IN ({marks})",
                schemas,
            )
            computed = {_Table(str(s), str(n)): when for s, n, when in cursor.fetchall()}
        except pymysql.MySQLError:
            return set()
        stale: set[_Table] = set()
        for table in tables:
            written, analysed = sizes[table].update_time, computed.get(table)
            if isinstance(written, datetime) and isinstance(analysed, datetime) and written > analysed:
                stale.add(table)
        return stale

    def _resolve(self, cursor: Any, url: URL, scope: TableScope) -> tuple[list[_Table], dict[_Table, _Size]]:
        """The tables ``scope`` covers, taken from the catalog, with their sizes. OperationFailed names a
        database or table that does not exist (or a system database)."""
        url_database = url.database or None
        if scope.everything:
            if url_database is None:
                raise OperationFailed(
                    "the target URL names no database: the request must name the databases (schemas) or "
                    "tables (as database.table) to maintain"
                )
            wanted_schemas: list[str] = [url_database]
        else:
            wanted_schemas = list(scope.schemas)
        default_schema = url_database or (scope.schemas[0] if len(scope.schemas) == 1 else None)
        named: list[tuple[str, str, str]] = []  # (requested name, schema, table)
        for name in scope.tables:
            schema, table = TableScope.split_table(name)
            if schema is None:
                if default_schema is None:
                    raise OperationFailed(
                        f"table {name!r}: the target URL names no database; name it as database.table"
                    )
                schema = default_schema
            named.append((name, schema, table))
            wanted_schemas.append(schema)
        schemas = list(dict.fromkeys(wanted_schemas))
        for schema in schemas:
            if schema.lower() in SYSTEM_SCHEMAS:
                raise OperationFailed(f"database {schema!r} is a system database: it is not maintained")
        cursor.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        existing = {str(row[0]) for row in cursor.fetchall()}
        for schema in schemas:
            if schema not in existing:
                raise OperationFailed(f"database {schema!r} does not exist (or this user cannot see it)")
        catalog = self._catalog(cursor, schemas)
        if named:
            tables: list[_Table] = []
            for name, schema, table in named:
                wanted = _Table(schema, table)
                if wanted not in catalog:
                    raise OperationFailed(f"table {name!r} does not exist: no base table {table!r} in {schema!r}")
                tables.append(wanted)
            tables = list(dict.fromkeys(tables))
        else:
            tables = sorted(t for t in catalog if t.schema in schemas)
        return tables, catalog

    # -- the operation

    def run(
        self,
        operation: Operation,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope = EVERYTHING,
        status: RunStatus | None = None,
    ) -> OperationReport:
        return self.run_parallel(operation, url, cancel, deadline, scope, status, 1)

    def run_parallel(
        self,
        operation: Operation,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        status: RunStatus | None,
        parallel: int,
        actions: TableActions | None = None,
    ) -> OperationReport:
        """``ParallelEngine.run_parallel``: up to ``parallel`` tables at once, each extra lane on a connection of
        its own (``_Session.open_lanes``); 1 is ``run``. With ``actions`` (MODE_AUTO) only those tables of
        ``scope`` run, in that order, each with the statement ``statement_for`` its actions."""
        operation = Operation(operation)
        check(cancel, deadline)
        if actions is not None:
            unknown = sorted(
                {str(key) for key, wanted in actions.items() if statement_for(_actions(wanted)) is None}
            )
            if unknown:
                raise OperationFailed(f"no MariaDB statement for the actions asked on {', '.join(unknown)}")
        try:
            lock_wait = _lock_wait_timeout(url)
        except EngineUnavailable as exc:
            raise OperationFailed(f"unusable MariaDB URL: {exc}") from None
        conn, connect_kwargs = self._connect(url, deadline)
        try:
            session = _Session(self, conn, connect_kwargs, url, operation, cancel, deadline, scope, lock_wait)
            session.actions = actions
            slow = self._faults.slow_seconds(operation)
            return run_operation(
                session,
                operation.value,
                cancel,
                deadline,
                status or RunStatus(),
                slow,
                parallel=parallel,
                open_lanes=session.open_lanes,
            )
        finally:
            _close(conn)

    def observe(
        self,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> Observed:
        """``Engine.observe``: ``observe_mariadb`` on a connection of its own; no resource lock (observing must
        not wait behind a running OPTIMIZE), no maintenance statement. Its three catalog reads are quick: the
        deadline bounds them through the connection's read timeout, and a cancel is honoured before and after
        them. The size is the tables' data + index bytes."""
        check(cancel, deadline)
        conn, _ = self._connect(url, deadline)
        try:
            observations = observe_mariadb(conn, scope, thresholds)
        except pymysql.MySQLError as exc:
            raise OperationFailed(f"mariadb observe failed: {_describe_error(*_server_error(exc, url))}") from None
        finally:
            _close(conn)
        check(cancel, deadline)
        size = sum(o.evidence.get("data_bytes", 0.0) + o.evidence.get("index_bytes", 0.0) for o in observations)
        return Observed(observations, int(size))


def _table_notes(
    result: _TableResult, before: Mapping[_Table, _Size], after: Mapping[_Table, _Size], stale: set[_Table]
) -> tuple[str, str]:
    """A table's two notes: the statement, then its outcome, messages and sizes."""
    t = result.table
    size_before, size_after = before[t], after.get(t, _Size())
    outcome = result.status.value if not result.reason else f"{result.status.value}: {result.reason}"
    parts = [
        f"{t.quoted}: {outcome}",
        *(["messages: " + " | ".join(result.messages)] if result.messages else []),
        f"size {size_before.bytes} -> {size_after.bytes} bytes"
        + (" (size before from statistics older than the last write: may be out of date)" if t in stale else ""),
        f"data_free {size_before.data_free} -> {size_after.data_free} bytes",
    ]
    return f"statement: {result.statement}", "; ".join(parts)


class _Session:
    """One operation on the open work connection: the MariaDB dialect part ``tables.run_operation`` runs."""

    driver_errors = (pymysql.MySQLError,)

    def __init__(
        self,
        engine: MariadbEngine,
        conn: Any,
        connect_kwargs: dict[str, Any],
        url: URL,
        operation: Operation,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        lock_wait: int,
    ) -> None:
        self.engine = engine
        self.cursor = conn.cursor()
        self.connect_kwargs = connect_kwargs
        self.url = url
        self.operation = operation
        self.cancel = cancel
        self.deadline = deadline
        self.scope = scope
        self.lock_wait = lock_wait
        self.started = time.monotonic()
        self.killer: _Killer | None = None  # known once the connection id is
        self.mariadb = True
        self.reading_catalog = True  # what a driver error interrupted: the catalog, or a SET between statements
        self.tables: list[_Table] = []
        self.before: dict[_Table, _Size] = {}
        self.stale: set[_Table] = set()
        # Shared with the parallel lanes, each writing only its own tables' entries.
        self.results: dict[str, _TableResult] = {}
        self.notes: list[str] = []
        self.slow = 0.0
        self.actions: TableActions | None = None  # MODE_AUTO: the tables to run and their actions
        self.plan: dict[_Table, tuple[TableAction, str]] = {}  # per table: the action reported, the statement
        self.lane_killers: list[_Killer] = []

    def interrupt(self) -> None:
        if self.killer is not None:
            self.killer.interrupt()

    def stop_interrupting(self) -> None:
        if self.killer is not None:
            self.killer.close()

    def settings(self) -> str:
        """The session settings (module docstring) and this connection's killer; the server's version."""
        cursor = self.cursor
        cursor.execute("SELECT CONNECTION_ID(), VERSION()")
        connection_id, version = cursor.fetchone()
        self.mariadb = "mariadb" in str(version).lower()
        cursor.execute(f"SET SESSION lock_wait_timeout = {self.lock_wait}")
        cursor.execute("SET SESSION lc_messages = 'en_US'")
        self.killer = _Killer(self.connect_kwargs, int(connection_id), self.url)
        return str(version)

    def prepare(self, status: RunStatus) -> None:
        """Session settings, then the resource lock (waited for), noted."""
        version = self.settings()
        lock = NamedLock(self.cursor, self.url.database or "")
        waited = fence.acquire(lock, self.cancel, self.deadline, status)
        self.notes.append(f"server: {version}; lock_wait_timeout={self.lock_wait} s")
        self.notes.append(fence.lock_note(lock, waited))
        if self.deadline is not None:
            self.notes.append(
                "max_statement_time: seconds left to the deadline + 1"
                if self.mariadb
                else "max_statement_time: not set (the server is not MariaDB)"
            )

    def tables_in_scope(self) -> list[_Table]:
        """The scope's tables (by name), or with ``actions`` those of them in the actions' order; each table's
        action and statement in ``plan``."""
        in_scope, self.before = self.engine._resolve(self.cursor, self.url, self.scope)
        if self.actions is None:
            self.tables = in_scope
            action, statement = ACTION_OF[self.operation], STATEMENTS[self.operation]
            self.plan = {table: (action, statement) for table in in_scope}
        else:
            self.tables = self._chosen(in_scope, self.actions)
        self.stale = self.engine._stale_statistics(self.cursor, self.tables, self.before)
        self.reading_catalog = False
        return self.tables

    def _chosen(self, in_scope: Sequence[_Table], actions: TableActions) -> list[_Table]:
        """MODE_AUTO: the tables of ``actions`` that are in scope, in that order; the others (gone since they
        were observed) are noted and not run."""
        covered = set(in_scope)
        chosen: list[_Table] = []
        for (schema, name), wanted in actions.items():
            table = _Table(schema, name)
            statement = statement_for(_actions(wanted))
            if table not in covered or statement is None:
                self.notes.append(f"{table.quoted}: not in scope (or no longer in the catalog): not run")
                continue
            chosen.append(table)
            self.plan[table] = (wanted[0].action, statement)
        return chosen

    @contextmanager
    def open_lanes(self, wanted: int, tables: Sequence[_Table]) -> Iterator[list[RunOne[_Table]]]:
        """The parallel pool's extra lanes (``tables.OpenLanes``): at most ``wanted`` and no more than
        ``extra_lanes`` allows, each an autocommit connection with this session's settings and its own KILL
        QUERY interrupter, live while the block runs; noted. The resource lock stays on this (the main)
        connection. A lane that cannot connect is noted and the others run."""
        room = self._connection_room()
        if room is None:
            count, why = 0, "the server's connection count could not be read"
        else:
            count = extra_lanes(wanted, *room)
            why = (
                f"max_connections {room[0]}, {room[1]} connected; each extra lane counts two connections, "
                "its own and its KILL QUERY's"
            )
        with contextlib.ExitStack() as stack:
            lanes: list[RunOne[_Table]] = []
            for _ in range(count):
                try:
                    lanes.append(stack.enter_context(self._lane()))
                except OperationFailed as exc:
                    why += f"; a lane could not connect: {exc}"
                    break
                except pymysql.MySQLError as exc:
                    why += f"; a lane could not be set up: {_describe_error(*_server_error(exc, self.url))}"
                    break
            self.notes.append(
                f"parallel: {len(lanes) + 1} lane(s) for {len(tables)} table(s) ({wanted + 1} wanted; {why})"
            )
            yield lanes

    def _connection_room(self) -> tuple[int, int] | None:
        """(``max_connections``, ``Threads_connected``) now; None when the server would not say."""
        try:
            self.cursor.execute(MAX_CONNECTIONS_SQL)
            (max_connections,) = self.cursor.fetchone()
            self.cursor.execute(THREADS_CONNECTED_SQL)
            row = self.cursor.fetchone()
        except pymysql.MySQLError as exc:
            log.warning(
                "cannot read the server's connection count: %s", _describe_error(*_server_error(exc, self.url))
            )
            return None
        return (int(max_connections), int(row[1])) if row else None

    @contextmanager
    def _lane(self) -> Iterator[RunOne[_Table]]:
        """One extra lane: a connection of its own with the session settings, interrupted on cancel or at the
        deadline by its own killer, sharing this session's plan, figures before and results."""
        conn, connect_kwargs = self.engine._connect(self.url, self.deadline)
        try:
            lane = _Session(
                self.engine,
                conn,
                connect_kwargs,
                self.url,
                self.operation,
                self.cancel,
                self.deadline,
                self.scope,
                self.lock_wait,
            )
            lane.settings()
            lane.plan, lane.results = self.plan, self.results
            assert lane.killer is not None
            self.lane_killers.append(lane.killer)
            with interruptible(lane.interrupt, self.cancel, self.deadline):
                try:
                    yield lane.run_one
                finally:
                    lane.stop_interrupting()
        finally:
            _close(conn)

    def after_tables(self, run: TableRun) -> None:
        pass

    def failure(self, exc: Exception, run: TableRun) -> OperationFailed:
        error = _describe_error(*_server_error(exc, self.url))
        if self.reading_catalog:
            return OperationFailed(f"reading the MariaDB catalog failed: {error}")
        return OperationFailed(f"{self.operation.value}: {error}")

    def finish(self, run: TableRun) -> OperationReport:
        """The sizes after (not read after a lost connection) and the report."""
        after: dict[_Table, _Size] | None = None
        if not run.lost:
            try:
                after = self.engine._catalog(self.cursor, sorted({t.schema for t in self.tables}))
            except pymysql.MySQLError as exc:
                error = _describe_error(*_server_error(exc, self.url))
                self.notes.append(f"reading the sizes after failed: {error}")
        return self._report(run, after)

    # -- statements

    def _set_statement_time(self) -> None:
        left = seconds_left(self.deadline)
        if left is None or not self.mariadb:
            return
        self.cursor.execute(f"SET SESSION max_statement_time = {max(left, 0.0) + STATEMENT_TIME_MARGIN:.3f}")

    def inject_slow(self, seconds: float, stopped: Stopped) -> None:
        assert self.killer is not None
        self.slow = seconds
        self._set_statement_time()
        with self.killer.statement():
            try:
                self.cursor.execute(f"SELECT SLEEP({seconds:.3f})")
                row = self.cursor.fetchone()
                error: str | None = "SLEEP was interrupted" if row is not None and row[0] == 1 else None
            except pymysql.MySQLError as exc:
                error = _describe_error(*_server_error(exc, self.url))
        if error is not None:
            stop = stopped()
            if stop is not None:
                raise stop
            raise OperationFailed(f"the injected slow fault was interrupted on the server: {error}")

    def run_one(self, table: _Table) -> TableOutcome:
        assert self.killer is not None
        self._set_statement_time()
        return self._run_table(self.cursor, self.killer, table).outcome()

    def _run_table(self, cursor: Any, killer: _Killer, table: _Table) -> _TableResult:
        """Run the statement on one table: processed, skipped or failed; ConnectionLost if the connection died
        (an interrupt is for the caller to tell, ``tables.run_tables`` asks it after any error). The result is
        kept in ``results`` either way."""
        action, template = self.plan[table]
        statement = template.format(table=table.quoted)
        result = _TableResult(table, statement, action)
        self.results[table.quoted] = result
        error: tuple[int | None, str] | None = None
        started = time.monotonic()
        with killer.statement():
            try:
                cursor.execute(statement)
                rows = cursor.fetchall() or ()
            except pymysql.MySQLError as exc:
                error = _server_error(exc, self.url)
                rows = ()
        result.duration = time.monotonic() - started
        errors: list[tuple[int | None, str]] = []
        for row in rows:
            msg_type, msg_text = str(row[2]).lower(), redact(str(row[3]), [self.url])
            result.messages.append(f"{msg_type}: {msg_text}")
            # An error row fails (or skips) the table; a lone "Operation failed" status too.
            failed_status = msg_type == "status" and msg_text.lower() == "operation failed" and not errors
            if msg_type == "error" or failed_status:
                errors.append((None, msg_text))
        if error is not None:
            errors.append(error)
        if not errors:
            return result
        reasons = [self._skip_reason(code, text, table, self.lock_wait) for code, text in errors]
        if all(reason is not None for reason in reasons):
            result.status, result.reason = SKIPPED, "; ".join(dict.fromkeys(r for r in reasons if r))
            result.locked = any(self._is_lock(code, text) for code, text in errors)
            return result
        result.status = FAILED
        failures = [
            self._failure(code, text) for (code, text), reason in zip(errors, reasons, strict=True) if not reason
        ]
        # An OPTIMIZE interrupted by another session adds an "error: Corrupt" row that says nothing more.
        interrupted = [f for f in failures if f.startswith(INTERRUPTED_ELSEWHERE)]
        result.reason = "; ".join(dict.fromkeys(interrupted or failures))
        if error is not None and error[0] in CONNECTION_ERRORS:
            raise ConnectionLost(result.outcome())
        return result

    @staticmethod
    def _skip_reason(code: int | None, text: str, table: _Table, lock_wait: int) -> str | None:
        """Why a table is skipped rather than failed, or None when the error is a failure."""
        if _Session._is_lock(code, text):
            return (
                f"another session holds a lock on the table ({text}; gave up after lock_wait_timeout="
                f"{lock_wait} s)"
            )
        if code in NOT_ONLINE_ERRORS:
            return f"cannot be rebuilt online, without blocking writes ({text})"
        if code == ER_NO_SUCH_TABLE or text == f"Table '{table.schema}.{table.name}' doesn't exist":
            return "the table was dropped meanwhile"
        return None

    @staticmethod
    def _is_lock(code: int | None, text: str) -> bool:
        """Another session held a lock on the table (lock wait timeout, deadlock)."""
        return code in LOCK_ERRORS or (code is None and bool(_LOCK_TEXT.match(text)))

    @staticmethod
    def _failure(code: int | None, text: str) -> str:
        if code == ER_QUERY_INTERRUPTED or (code is None and _INTERRUPTED_TEXT.match(text)):
            return f"{INTERRUPTED_ELSEWHERE} ({text})"
        if code == ER_STATEMENT_TIMEOUT:
            return f"stopped by the server's max_statement_time ({text})"
        return _describe_error(code, text)

    def _report(self, run: TableRun, after: Mapping[_Table, _Size] | None) -> OperationReport:
        tables, before, stale, results, slow = self.tables, self.before, self.stale, self.results, self.slow
        killers = [*([self.killer] if self.killer is not None else []), *self.lane_killers]
        operation, kills = self.operation, sum(killer.kills for killer in killers)
        after_sizes = after if after is not None else before
        bytes_before = sum(before[t].bytes for t in tables)
        bytes_after = sum(after_sizes.get(t, _Size()).bytes for t in tables)
        free_before = sum(before[t].data_free for t in tables)
        free_after = sum(after_sizes.get(t, _Size()).data_free for t in tables)
        notes: list[str] = [*self.notes]
        if slow > 0:
            notes.append(
                f"fault injected: slow:{operation.value}={slow:g} "
                f"(SELECT SLEEP({slow:g}) on the work connection before the first statement)"
            )
        if not tables:
            notes.append("no tables in scope: nothing to do")
        finished = [results[o.name] for o in run.outcomes]
        run.outcomes = [
            result.outcome(
                _table_notes(result, before, after_sizes, stale),
                result.report(before[result.table], after.get(result.table) if after is not None else None),
            )
            for result in finished
        ]
        notes.extend(run.table_notes())
        notes.append(
            f"tables: {run.count(PROCESSED)} processed, {run.count(SKIPPED)} skipped, {run.count(FAILED)} failed"
            + (f", {run.not_run} not run" if run.not_run else "")
        )
        notes.append(
            f"size (data + index): {bytes_before} -> {bytes_after} bytes"
            + (
                f" (the statistics of {len(stale)} table(s) predate their last write: the size before may be out"
                " of date)"
                if stale
                else ""
            )
        )
        notes.append(f"data_free (reclaimable): {free_before} -> {free_after} bytes")
        if after is None:
            notes.append("sizes after: not read; the figures after are those before")
        if kills:
            notes.append(f"KILL QUERY sent {kills} time(s)")
        return OperationReport(
            engine=self.engine.name,
            duration_seconds=time.monotonic() - self.started,
            bytes_before=bytes_before,
            bytes_after=bytes_after,
            objects_processed=run.processed,
            objects_skipped=run.skipped,
            notes=tuple(notes),
            tables=run.table_reports(),
        )
