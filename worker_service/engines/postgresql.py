"""PostgreSQL: VACUUM, ANALYZE, REINDEX CONCURRENTLY and a targeted VACUUM (ANALYZE), table by table.

Driver: psycopg 3 (SQLAlchemy URLs ``postgresql+psycopg://...``, or ``postgresql://...`` without a driver); any
other driver is refused at start (``check_url``, which needs no server: the worker starts while the database is
down). The URL's query items are passed to libpq as connection options (``sslmode``, ``connect_timeout``, ...),
except ``dbmaint_lock_timeout`` (seconds, default ``DEFAULT_LOCK_TIMEOUT``).

Each operation runs on its own **autocommit** connection (the maintenance commands refuse a transaction block),
one table per statement, largest first (``pg_total_relation_size`` descending, then schema and name):

=========  ============================================================================================
vacuum     ``VACUUM (SKIP_LOCKED) <table>``
analyze    ``ANALYZE (SKIP_LOCKED) <table>``
reindex    ``REINDEX TABLE CONCURRENTLY <table>``; afterwards the INVALID indexes named ``*_ccnew[N]`` or
           ``*_ccold[N]`` on those tables (and their TOAST tables) -- what a failed concurrent reindex leaves --
           are dropped with ``DROP INDEX CONCURRENTLY IF EXISTS`` and reported. An index of that name that a
           REINDEX/CREATE INDEX CONCURRENTLY is building right now is safe: that command holds the table's
           SHARE UPDATE EXCLUSIVE lock, so the drop runs into ``lock_timeout`` and is reported as not dropped.
optimize   ``VACUUM (ANALYZE, SKIP_LOCKED) <table>`` for the tables over an autovacuum threshold only:
           ``n_dead_tup > threshold + scale_factor * reltuples`` (autovacuum_vacuum_*) or
           ``n_mod_since_analyze > threshold + scale_factor * reltuples`` (autovacuum_analyze_*), with the
           server's settings and the table's own reloptions, as autovacuum computes them (50 + 0.2 * reltuples
           and 50 + 0.1 * reltuples by default; reltuples < 0, never counted, is 0). The notes say which
           tables were over and why (the figures), and which were below.
=========  ============================================================================================

MODE_AUTO (``run_parallel`` with ``actions``; ``worker_service.engines.auto`` chooses them): only the tables
chosen, in their urgency order, each with what its observations call for (``_Session.steps``): one ``VACUUM
([FREEZE, ][ANALYZE, ]SKIP_LOCKED)``, or ``ANALYZE (SKIP_LOCKED)``; each invalid index of the table, read again
at run time (one a CREATE INDEX is building now excepted), dropped (``DROP INDEX CONCURRENTLY IF EXISTS``: a
``*_ccnew``/``*_ccold`` leftover is a copy) or rebuilt (``REINDEX INDEX CONCURRENTLY``: anything else is an index
somebody asked for; ``REINDEX TABLE CONCURRENTLY`` would skip it); ``REINDEX TABLE CONCURRENTLY`` only for a
bloat estimate. Every table's outcome carries a ``TableReport`` (all modes): the action, ``dead_tuples``,
``modified_since_analyze`` and ``size_bytes`` before and after, the duration.

Names come from the catalog, never from the request: the ``TableScope`` is matched against ``pg_class`` /
``pg_namespace`` exactly (case-sensitive; a name is a catalog name, not SQL), and statements quote the catalog's
names with ``psycopg.sql.Identifier``. The default scope is every ordinary table and materialized view outside
``pg_catalog``, ``information_schema`` and the ``pg_toast``/``pg_temp`` schemas, partitions included one by one,
partitioned parents not (like vacuumdb); a partitioned table may be named explicitly. A scope table without a
schema is looked up in the scope's schemas if given, else in the connection's ``search_path``, first match
wins. An unknown name fails the operation (``OperationFailed`` naming every unknown name) before anything runs.

Resource lock (``worker_service.engines.fence``): right after the session settings, before anything is read,
the operation takes a session advisory lock on its own maintenance connection (``AdvisoryLock`` gives the keys)
and holds it until that connection closes; while another session holds it, the operation waits (try-lock every
0.25 s, stopped by a cancel or the deadline) and says so, naming the holder's backend pid from ``pg_locks``. A
killed worker's backend keeps the lock only as long as it runs: ``client_connection_check_interval`` makes it
notice the lost client within seconds, stop its statement and exit.

Session settings: ``lock_timeout`` (so no statement waits long behind another session's lock),
``statement_timeout`` = the time left to the deadline plus ``STATEMENT_TIMEOUT_MARGIN`` (0, none, without a
deadline: the job's deadline is the limit, not a role default), and, on servers >= 14,
``client_connection_check_interval`` so the server stops a statement whose worker died.

Skipped tables and the status:

* ``SKIP_LOCKED`` makes VACUUM/ANALYZE skip a table they cannot lock at once; PostgreSQL says so only with a
  WARNING ("skipping vacuum of "t" --- lock not available", SQLSTATE 55P03). The notices of each statement are
  captured: a skip warning naming the table (lock not available, relation gone, permission) marks it skipped.
* A statement that fails with ``lock_not_available`` (55P03, ``lock_timeout``: REINDEX CONCURRENTLY has no
  SKIP_LOCKED), ``deadlock_detected`` (40P01) or ``undefined_table`` (42P01, dropped since the catalog was
  read) skips that table with a note and the operation goes on.
* Any other error of a table's statement (a permission, a server-side cancel the worker did not ask for) fails
  that table, with a note naming the SQLSTATE, and the next table is tried; a lost connection stops at once.
  This is the failure policy of ``worker_service.engines.tables``, shared with MariaDB: the child is COMPLETED
  when every table was processed or skipped (``objects_processed``/``objects_skipped`` count tables, the notes
  say which and why, like vacuumdb --skip-locked, which exits 0), FAILED when a table failed, the error naming
  each failed table with its SQLSTATE (``reindex failed on 1 of 2 table(s): public.t: ...``) and the report
  attached. Optimize's below-threshold tables are neither processed nor skipped: the notes list them.
* An error outside the tables' statements (connection refused, the catalog read) stops the operation there:
  FAILED, the message naming what it was doing and the SQLSTATE, the report carrying the figures so far.

Sizes: ``bytes_before``/``bytes_after`` are ``pg_database_size(current_database())``; per table, the notes give
``pg_total_relation_size`` and ``n_dead_tup`` before and after (``pg_stat_get_dead_tuples``, what
``pg_stat_user_tables`` shows). Cumulative statistics may lag: another backend's counts reach shared memory when
it goes idle (at most about once a second, PostgreSQL 15) -- VACUUM and ANALYZE report theirs at once. Reading a
table's size takes ACCESS SHARE locks, so it is not attempted on a table (or its index or TOAST table) that
another session holds or awaits ACCESS EXCLUSIVE on: its size is "unknown" instead of a wait.

Cancellation and deadline: ``interrupting`` sends a PostgreSQL cancel request (libpq ``PQcancel`` on a cancel
object taken in the running thread, sent from a helper thread so the cancelling thread never blocks on the
network), repeated every ``CANCEL_RESEND_SECONDS`` until the statement stops (a request that arrives between two
statements is ignored by the server). The statement ends with SQLSTATE 57014 and the operation raises
``OperationCancelled`` or ``DeadlineExceeded``; the token and the deadline are also checked between tables.

Fault injection: ``slow:<op>=N`` runs ``SELECT pg_sleep(N)`` on the maintenance connection right before the
first table's statement: a real statement on the server for N seconds, interrupted by the same cancel path (the
report notes the fault).

Passwords never reach messages: errors name the database, host and port (no URL), and driver messages go
through ``worker_service.logs.redact`` (and a ``password=`` mask) first.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

from dbmaint.operations import Operation, OperationReport, Reason, TableAction, TableReport, TableScope
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from worker_service.cancel import CancelToken, check, seconds_left
from worker_service.engines import fence, tables
from worker_service.engines.base import (
    EVERYTHING,
    EngineUnavailable,
    Observed,
    OperationFailed,
    RunStatus,
    TableActions,
)
from worker_service.engines.observe_postgresql import observe_postgresql
from worker_service.faults import NO_FAULTS, FaultPlan
from worker_service.logs import redact

SUPPORTED_DRIVERNAMES = frozenset({"postgresql", "postgresql+psycopg"})
DATABASE_SIZE_SQL = "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())"
# The connections the server can still give an ordinary role: the parallel pool opens no more lanes than that.
FREE_CONNECTIONS_SQL = (
    "SELECT pg_catalog.current_setting('max_connections')::int"
    " - pg_catalog.current_setting('superuser_reserved_connections')::int"
    " - (SELECT count(*) FROM pg_catalog.pg_stat_activity)::int"
)
LOCK_TIMEOUT_PARAM = "dbmaint_lock_timeout"
DEFAULT_LOCK_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 10
APPLICATION_NAME = "dbmaint-worker"
# The server-side statement_timeout backs up the worker's own deadline timer (which fires first): it stops the
# statement even if the worker is gone.
STATEMENT_TIMEOUT_MARGIN = 1.0
# A backend whose worker died notices it (the socket closed) within this interval, even mid-VACUUM, stops and
# releases the resource lock (PostgreSQL >= 14).
CLIENT_CHECK_INTERVAL_MS = 2000
# key1 of the resource lock: the ASCII bytes "dbmt" as an int4.
ADVISORY_LOCK_CLASS = 0x64626D74
CANCEL_RESEND_SECONDS = 0.5
CANCEL_JOIN_SECONDS = 5.0
# A report travels in one gRPC message: optimize's below-threshold tables beyond this many are counted, not
# listed (the per-table notes have the cap of ``tables``).
MAX_LISTED_BELOW = 100
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
# VACUUM/ANALYZE (SKIP_LOCKED) skip warnings: lock not available, relation gone, permission (PostgreSQL >= 16).
SKIP_SQLSTATES = frozenset({"55P03", "42P01", "42501"})
# Statement errors that skip the table instead of failing the operation.
SKIP_ERRORS: tuple[type[psycopg.Error], ...] = (
    pg_errors.LockNotAvailable,
    pg_errors.DeadlockDetected,
    pg_errors.UndefinedTable,
)

STATEMENTS: dict[Operation, str] = {
    Operation.VACUUM: "VACUUM (SKIP_LOCKED) {}",
    Operation.ANALYZE: "ANALYZE (SKIP_LOCKED) {}",
    Operation.REINDEX: "REINDEX TABLE CONCURRENTLY {}",
    Operation.OPTIMIZE: "VACUUM (ANALYZE, SKIP_LOCKED) {}",
}

_USER_RELATIONS = """
    c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
"""
CATALOG_SQL = f"""
SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_RELATIONS}
"""
# Figures of some tables. The size is only read when no other session holds or awaits ACCESS EXCLUSIVE on the
# table, one of its indexes or its TOAST table (pg_total_relation_size would wait for that lock).
FIGURES_SQL = """
WITH locked AS (
    SELECT l.relation FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_catalog.pg_backend_pid()
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
)
SELECT c.oid::int8,
       CASE WHEN NOT %(sizes)s OR c.oid IN (SELECT relation FROM locked)
                 OR c.reltoastrelid IN (SELECT relation FROM locked)
                 OR EXISTS (SELECT 1 FROM pg_catalog.pg_index x
                            WHERE x.indrelid = c.oid AND x.indexrelid IN (SELECT relation FROM locked))
            THEN NULL ELSE pg_catalog.pg_total_relation_size(c.oid) END,
       pg_catalog.pg_stat_get_dead_tuples(c.oid), pg_catalog.pg_stat_get_mod_since_analyze(c.oid),
       c.reltuples::float8, coalesce(c.reloptions, '{}'::text[]),
       (SELECT count(*) FROM pg_catalog.pg_index x WHERE x.indrelid = c.oid)
FROM pg_catalog.pg_class c
WHERE c.oid = ANY(%(oids)s::oid[])
"""
LEFTOVER_INDEXES_SQL = """
SELECT n.nspname, i.relname, tn.nspname || '.' || t.relname
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace
JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
WHERE NOT x.indisvalid AND i.relname ~ '_cc(new|old)[0-9]*$'
  AND (x.indrelid = ANY(%(oids)s::oid[])
       OR x.indrelid IN (SELECT c.reltoastrelid FROM pg_catalog.pg_class c WHERE c.oid = ANY(%(oids)s::oid[])))
ORDER BY 1, 2
"""
# MODE_AUTO, an invalid-index proposal: the table's invalid indexes now (and its TOAST table's), those a CREATE
# INDEX is building excepted.
TABLE_INVALID_INDEXES_SQL = """
SELECT n.nspname, i.relname
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace
WHERE NOT x.indisvalid
  AND (x.indrelid = %(oid)s::oid
       OR x.indrelid = (SELECT c.reltoastrelid FROM pg_catalog.pg_class c WHERE c.oid = %(oid)s::oid))
  AND x.indexrelid NOT IN (SELECT p.index_relid FROM pg_catalog.pg_stat_progress_create_index p)
ORDER BY 1, 2
"""
LEFTOVER_INDEX = re.compile(r"_cc(new|old)[0-9]*$")
# The TableAction a MODE_ALL statement stands for in the per-table report.
ACTION_OF: dict[Operation, TableAction] = {
    Operation.VACUUM: TableAction.VACUUM,
    Operation.ANALYZE: TableAction.ANALYZE,
    Operation.REINDEX: TableAction.REINDEX,
    Operation.OPTIMIZE: TableAction.VACUUM,
}
_VACUUMS = frozenset({TableAction.FREEZE, TableAction.VACUUM, TableAction.OPTIMIZE})

THRESHOLD_SETTINGS = (
    "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_analyze_threshold",
    "autovacuum_analyze_scale_factor",
)

Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _Relation:
    """A maintainable relation from the catalog."""

    oid: int
    schema: str
    name: str
    relkind: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass(frozen=True, slots=True)
class _Figures:
    """A table's figures at one moment (``size`` None: not read, the table was locked)."""

    size: int | None
    dead_tuples: int
    mod_since_analyze: int
    reltuples: float
    reloptions: tuple[str, ...]
    indexes: int


@dataclass(frozen=True, slots=True)
class _Notice:
    severity: str
    sqlstate: str
    message: str


@dataclass(slots=True)
class _ReportDraft:
    """The report of the operation while it runs: the figures and notes gathered so far (``report`` ends it)."""

    engine: str
    started: float
    bytes_before: int = 0
    below_threshold: int | None = None
    notes: list[str] = field(default_factory=list)
    tail_notes: list[str] = field(default_factory=list)

    def report(
        self, run: tables.TableRun, bytes_after: int | None, unknown: str = "not read after the failure"
    ) -> OperationReport:
        summary = [
            f"database size: {self.bytes_before} -> "
            + (f"{bytes_after} bytes" if bytes_after is not None else f"unknown ({unknown})"),
            f"tables: {run.processed} processed, {run.skipped} skipped"
            + ("" if self.below_threshold is None else f", {self.below_threshold} below the thresholds"),
        ]
        return OperationReport(
            engine=self.engine,
            duration_seconds=time.monotonic() - self.started,
            bytes_before=self.bytes_before,
            bytes_after=self.bytes_before if bytes_after is None else bytes_after,
            objects_processed=run.processed,
            objects_skipped=run.skipped,
            notes=(*summary, *self.notes, *run.table_notes(), *self.tail_notes),
            tables=run.table_reports(),
        )


class _BackendCancel:
    """The PostgreSQL ``Sender``: a libpq cancel request for the connection's backend. The cancel object is
    taken up front, in the thread that owns the connection; ``PQcancel`` is thread-safe."""

    def __init__(self, conn: Connection) -> None:
        self._pgcancel = conn.pgconn.get_cancel()

    def send(self) -> None:
        with contextlib.suppress(Exception):  # a backend already gone needs no cancel; the next try may work
            self._pgcancel.cancel()

    def close(self) -> None:
        pass


def _canceller(conn: Connection) -> tables.RepeatingInterrupter:
    """The interrupt for ``interruptible``: cancel requests every ``CANCEL_RESEND_SECONDS`` from a helper
    thread, until stopped."""
    cancel = _BackendCancel(conn)
    return tables.RepeatingInterrupter(
        lambda: cancel, CANCEL_RESEND_SECONDS, CANCEL_JOIN_SECONDS, "dbmaint-pg-cancel"
    )


class AdvisoryLock:
    """The PostgreSQL dialect part of the resource fence: a session advisory lock on the maintenance connection.

    Keys: the two-int4 form ``pg_try_advisory_lock(key1, key2)``, with ``key1 = ADVISORY_LOCK_CLASS``
    (1684172148, the ASCII bytes "dbmt": dbmaint's space among the applications' own advisory locks) and
    ``key2`` = the OID of the target database (``pg_database.oid`` of ``current_database()``, as a signed
    int4). Advisory locks are already scoped to the database they are taken in, so every worker maintaining
    this database, whatever its URL (host alias, user), contends for the same lock; the OID in key2 just makes
    the lock self-describing in ``pg_locks`` (``locktype = 'advisory'``, ``classid = 1684172148``, ``objid =``
    the database OID, ``objsubid = 2``). A session lock: a transaction's end does not release it, the end of
    the session does (the connection closes, or the backend exits).
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        row = conn.execute(
            "SELECT oid::int8 FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()"
        ).fetchone()
        assert row is not None
        self.database_oid = int(row[0])
        self.keys = (
            ADVISORY_LOCK_CLASS,
            self.database_oid - 2**32 if self.database_oid >= 2**31 else self.database_oid,
        )

    @property
    def description(self) -> str:
        return f"session advisory lock {self.keys} on the maintenance connection"

    def try_acquire(self) -> bool:
        row = self._conn.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", self.keys).fetchone()
        return bool(row and row[0])

    def holder(self) -> str:
        row = self._conn.execute(
            "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            " AND classid = %s::int8::oid AND objid = %s::int8::oid"
            " AND database = %s::int8::oid",
            (ADVISORY_LOCK_CLASS, self.database_oid, self.database_oid),
        ).fetchone()
        return f"PostgreSQL backend pid {row[0]}" if row and row[0] is not None else "another PostgreSQL session"


def sanitize(text: str, url: URL) -> str:
    """A driver message fit for a job's error: one line, no URL, no password."""
    text = redact(text, [url])
    text = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def describe_target(url: URL) -> str:
    """The database, host and port a URL names (no user, no password), for messages."""
    host = url.host or str(url.query.get("host", "")) or "the default host"
    port = f":{url.port}" if url.port else ""
    return f"database {url.database or str(url.query.get('dbname', ''))!r} on {host}{port}"


def lock_timeout_of(url: URL) -> float:
    """Seconds of ``lock_timeout``: ``?dbmaint_lock_timeout=`` or the default. ValueError if unusable."""
    value = url.query.get(LOCK_TIMEOUT_PARAM)
    if value is None:
        return DEFAULT_LOCK_TIMEOUT
    if not isinstance(value, str):
        raise ValueError(f"{LOCK_TIMEOUT_PARAM} is given more than once")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_PARAM}={value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{LOCK_TIMEOUT_PARAM}={value!r} must be a positive number of seconds")
    return seconds


def connection_params(url: URL, deadline: datetime | None = None) -> dict[str, str]:
    """libpq connection options for ``url`` (its query items pass through, ``dbmaint_*`` ones excepted)."""
    params: dict[str, str] = {}
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = str(url.port)
    if url.username:
        params["user"] = url.username
    if url.password is not None:
        params["password"] = str(url.password)
    if url.database:
        params["dbname"] = url.database
    for key, value in url.query.items():
        if key.startswith("dbmaint_"):
            continue
        if not isinstance(value, str):
            raise ValueError(f"URL query option {key!r} is given more than once")
        params[key] = value
    if "connect_timeout" not in params:
        timeout = float(DEFAULT_CONNECT_TIMEOUT)
        left = seconds_left(deadline)
        if left is not None:
            timeout = min(timeout, max(left, 2.0))  # libpq's minimum is 2 s
        params["connect_timeout"] = str(math.ceil(timeout))
    params.setdefault("application_name", APPLICATION_NAME)
    return params


def _milliseconds(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds * 1000))}ms"


def _reloption(options: Iterable[str], name: str) -> float | None:
    for option in options:
        key, _, value = option.partition("=")
        if key == name:
            with contextlib.suppress(ValueError):
                return float(value)
    return None


def _select(
    catalog: Sequence[_Relation], schemas: set[str], search_path: Sequence[str], scope: TableScope
) -> list[_Relation]:
    """The relations ``scope`` names, matched against the catalog. OperationFailed names every unknown name."""
    problems: list[str] = []
    for schema in scope.schemas:
        if schema in SYSTEM_SCHEMAS or re.match(r"pg_(toast|temp_)", schema):
            problems.append(f"schema {schema!r} is a system schema (not maintained)")
        elif schema not in schemas:
            problems.append(f"schema {schema!r} does not exist")
    by_name = {(rel.schema, rel.name): rel for rel in catalog}
    chosen: dict[int, _Relation] = {}
    for name in scope.tables:
        named_schema, table = TableScope.split_table(name)
        look_in = [named_schema] if named_schema is not None else list(scope.schemas or search_path)
        found = next((by_name[(s, table)] for s in look_in if (s, table) in by_name), None)
        if found is None:
            where = ", ".join(look_in) or "no schema (empty search_path)"
            problems.append(f"table {name!r} does not exist (looked in: {where})")
        else:
            chosen.setdefault(found.oid, found)
    if problems:
        raise OperationFailed("; ".join(problems))
    if scope.tables:
        return list(chosen.values())
    return [
        rel for rel in catalog if rel.relkind in ("r", "m") and (not scope.schemas or rel.schema in scope.schemas)
    ]


class _Session:
    """One operation on one open autocommit connection."""

    driver_errors = (psycopg.Error,)

    def __init__(
        self,
        conn: Connection,
        url: URL,
        operation: Operation,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        lock_timeout: float,
        draft: _ReportDraft,
        actions: TableActions | None = None,
    ) -> None:
        self.conn = conn
        self.actions = actions
        self.url = url
        self.operation = operation
        self.cancel = cancel
        self.deadline = deadline
        self.scope = scope
        self.lock_timeout = lock_timeout
        self.draft = draft
        self.notices: list[_Notice] = []
        self.current = "reading the catalog"
        self.interrupt = _canceller(conn)
        self.in_scope: list[_Relation] = []
        self.before: dict[int, _Figures] = {}
        self.reasons: dict[int, str] = {}  # optimize: why a table is over a threshold
        # Opens one more connection to the target for a parallel lane (None: this session runs serially).
        self.connect_lane: Callable[[], Connection] | None = None
        conn.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        # A Diagnostic is only valid during the call: keep its fields.
        severity = diag.severity_nonlocalized or diag.severity or ""
        self.notices.append(_Notice(severity, diag.sqlstate or "", diag.message_primary or ""))

    # -- reading

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    def setting(self, name: str, value: str) -> None:
        self.conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))

    def figures(self, relations: Sequence[_Relation]) -> dict[int, _Figures]:
        """Current figures; sizes left out (None) where reading them would wait for a lock."""
        self.conn.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
        params = {"oids": [rel.oid for rel in relations], "sizes": True}
        try:
            rows = self.rows(FIGURES_SQL, params)
        except pg_errors.LockNotAvailable:  # a lock taken since the guard looked: figures without sizes
            rows = self.rows(FIGURES_SQL, {**params, "sizes": False})
        return {
            int(oid): _Figures(
                None if size is None else int(size),
                int(dead),
                int(mod),
                float(reltuples),
                tuple(str(o) for o in options),
                int(indexes),
            )
            for oid, size, dead, mod, reltuples, options, indexes in rows
        }

    def database_size(self) -> int:
        row = self.conn.execute(DATABASE_SIZE_SQL).fetchone()
        return int(row[0]) if row else 0

    def relations(self, scope: TableScope) -> list[_Relation]:
        catalog = [_Relation(int(o), str(s), str(n), str(k)) for o, s, n, k in self.rows(CATALOG_SQL)]
        schemas = {str(row[0]) for row in self.rows("SELECT nspname FROM pg_catalog.pg_namespace")}
        row = self.conn.execute("SELECT pg_catalog.current_schemas(false)").fetchone()
        search_path = [str(s) for s in (row[0] if row else [])]
        return _select(catalog, schemas, search_path, scope)

    # -- running

    # -- the operation, as ``tables.run_operation`` runs it

    def stop_interrupting(self) -> None:
        self.interrupt.stop()

    def prepare(self, status: RunStatus) -> None:
        """Session settings, then the resource lock (waited for), noted."""
        self.draft.notes.append(self.settings(self.lock_timeout))
        self.current = "waiting for the resource lock"
        lock = AdvisoryLock(self.conn)
        waited = fence.acquire(lock, self.cancel, self.deadline, status)
        self.draft.notes.append(fence.lock_note(lock, waited))

    def tables_in_scope(self) -> list[_Relation]:
        """The scope's relations that still exist, largest first (optimize: those over a threshold); with
        ``actions`` (MODE_AUTO), those tables in that order."""
        self.current = "reading the catalog"
        self.draft.bytes_before = self.database_size()
        relations = self.relations(self.scope)
        if self.actions is not None:
            return self.chosen(relations, self.actions)
        self.before = self.figures(relations)
        relations = [rel for rel in relations if rel.oid in self.before]  # dropped since the catalog read
        relations.sort(key=lambda rel: (-(self.before[rel.oid].size or 0), rel.schema, rel.name))
        self.in_scope = relations
        if self.operation == Operation.OPTIMIZE:
            return self.over_thresholds(relations, self.before, self.reasons)
        if not relations:
            self.draft.tail_notes.append("no table in scope: nothing to do")
        return relations

    def chosen(self, relations: Sequence[_Relation], actions: TableActions) -> list[_Relation]:
        """MODE_AUTO: the tables of ``actions`` in its order (urgency), those dropped since observed noted."""
        by_key = {(rel.schema, rel.name): rel for rel in relations}
        chosen = [by_key[key] for key in actions if key in by_key]
        gone = [f"{schema}.{table}" for schema, table in actions if (schema, table) not in by_key]
        self.before = self.figures(chosen)
        chosen = [rel for rel in chosen if rel.oid in self.before]
        self.in_scope = chosen
        if gone:
            self.draft.tail_notes.append(f"gone since observed, not run: {', '.join(gone)}")
        return chosen

    def inject_slow(self, seconds: float, stopped: tables.Stopped) -> None:
        self.current = f"running the injected fault pg_sleep({seconds:g})"
        self.execute(sql.SQL("SELECT pg_catalog.pg_sleep({})").format(sql.Literal(seconds)))
        self.draft.notes.append(
            f"fault injected: slow:{self.operation.value}={seconds:g} "
            "(SELECT pg_sleep on the maintenance connection before the first statement)"
        )

    def run_one(self, relation: _Relation) -> tables.TableOutcome:
        self.current = f"processing table {relation.qualified}"
        return self.process(relation, self.before[relation.oid], self.reasons.get(relation.oid, ""))

    @contextlib.contextmanager
    def open_lanes(self, wanted: int, relations: Sequence[_Relation]) -> Iterator[list[tables.RunOne[_Relation]]]:
        """The parallel pool's extra lanes (``tables.OpenLanes``): at most ``wanted``, and no more than the
        server's free connections (``max_connections`` - ``superuser_reserved_connections`` - the backends
        now), each an autocommit connection with this session's settings and its own backend canceller, live
        while the block runs; noted. The resource lock stays on this (the main) connection."""
        if self.connect_lane is None:
            yield []
            return
        self.current = "opening the parallel lanes"
        row = self.conn.execute(FREE_CONNECTIONS_SQL).fetchone()
        free = max(0, int(row[0])) if row else 0
        count = min(wanted, free)
        self.draft.notes.append(
            f"parallel: {count + 1} lane(s) for {len(relations)} table(s) "
            f"({wanted + 1} wanted, {free} connection(s) free on the server)"
        )
        with contextlib.ExitStack() as stack:
            lanes: list[tables.RunOne[_Relation]] = []
            for _ in range(count):
                lanes.append(stack.enter_context(self._lane()))
            yield lanes

    @contextlib.contextmanager
    def _lane(self) -> Iterator[tables.RunOne[_Relation]]:
        """One extra lane: a connection of its own, interrupted on cancel or at the deadline by its own
        canceller, sharing this session's figures before."""
        assert self.connect_lane is not None
        conn = self.connect_lane()
        try:
            lane = _Session(
                conn,
                self.url,
                self.operation,
                self.cancel,
                self.deadline,
                self.scope,
                self.lock_timeout,
                self.draft,
                self.actions,
            )
            lane.before, lane.reasons = self.before, self.reasons
            lane.settings(self.lock_timeout)
            with tables.interruptible(lane.interrupt, self.cancel, self.deadline):
                try:
                    yield lane.run_one
                finally:
                    lane.stop_interrupting()
        finally:
            conn.close()

    def after_tables(self, run: tables.TableRun) -> None:
        # MODE_AUTO deals with each table's invalid indexes in its own step (``steps``).
        if self.operation == Operation.REINDEX and self.actions is None:
            self.current = "dropping invalid indexes left by REINDEX CONCURRENTLY"
            self.drop_leftover_indexes(self.in_scope)

    def finish(self, run: tables.TableRun) -> OperationReport:
        """The database size after and the report (the size is not read after a lost connection)."""
        if run.lost:
            return self.draft.report(run, None, "the connection was lost")
        try:
            bytes_after = self.database_size()
        except pg_errors.QueryCanceled:
            # The work is done; a late cancel request (or statement_timeout) hit the size query: the tables'
            # outcome decides, with the size after unknown.
            return self.draft.report(run, None, "the size query after the work was interrupted")
        except psycopg.Error as exc:
            raise OperationFailed(
                f"postgresql {self.operation.value} ran, but reading the database size failed: "
                f"{sanitize(str(exc), self.url)}",
                self.draft.report(run, None),
            ) from None
        return self.draft.report(run, bytes_after)

    # -- statements

    def settings(self, lock_timeout: float) -> str:
        """Session settings; returns the note that says what they are."""
        self.setting("lock_timeout", _milliseconds(lock_timeout))
        self.setting("statement_timeout", "0")
        if self.conn.info.server_version >= 140000:
            self.setting("client_connection_check_interval", str(CLIENT_CHECK_INTERVAL_MS))
        limit = "the deadline + 1s" if self.deadline is not None else "none (no deadline)"
        return f"session: autocommit, lock_timeout {lock_timeout:g}s, statement_timeout {limit}"

    def execute(self, statement: sql.Composed) -> None:
        """Run one statement under the deadline's statement_timeout; its notices are in ``self.notices``."""
        check(self.cancel, self.deadline)
        left = seconds_left(self.deadline)
        if left is not None:
            self.setting("statement_timeout", _milliseconds(left + STATEMENT_TIMEOUT_MARGIN))
        self.notices.clear()
        self.conn.execute(statement)

    def text(self, statement: sql.Composed) -> str:
        return statement.as_string(self.conn)

    def server_said(self) -> str:
        said = [f"{notice.severity}: {notice.message}" for notice in self.notices]
        return "; server said: " + " | ".join(said) if said else ""

    def skip_warning(self, relation: _Relation) -> str | None:
        """The warning with which VACUUM/ANALYZE (SKIP_LOCKED) skipped this table, if it did."""
        quoted = f'"{relation.name}"'
        for notice in self.notices:
            if notice.severity != "WARNING" or quoted not in notice.message:
                continue
            if notice.sqlstate in SKIP_SQLSTATES or "skipping" in notice.message:
                return notice.message
        return None

    def steps(self, relation: _Relation) -> list[tuple[TableAction, sql.Composed]]:
        """The statements for one table: the operation's (MODE_ALL), or those its observations call for
        (MODE_AUTO): one VACUUM with FREEZE and ANALYZE as proposed; an ANALYZE; each invalid index dropped (a
        REINDEX CONCURRENTLY leftover) or rebuilt on its own; a REINDEX TABLE CONCURRENTLY for bloat."""
        name = relation.identifier
        if self.actions is None:
            return [(ACTION_OF[self.operation], sql.SQL(STATEMENTS[self.operation]).format(name))]
        acting = self.actions[(relation.schema, relation.name)]
        actions = {o.action for o in acting}
        steps: list[tuple[TableAction, sql.Composed]] = []
        if actions & _VACUUMS:
            options = [
                *(["FREEZE"] if TableAction.FREEZE in actions else []),
                *(["ANALYZE"] if TableAction.ANALYZE in actions else []),
                "SKIP_LOCKED",
            ]
            action = TableAction.FREEZE if TableAction.FREEZE in actions else TableAction.VACUUM
            steps.append((action, sql.SQL(f"VACUUM ({', '.join(options)}) {{}}").format(name)))
        elif TableAction.ANALYZE in actions:
            steps.append((TableAction.ANALYZE, sql.SQL(STATEMENTS[Operation.ANALYZE]).format(name)))
        if any(Reason.INVALID_INDEX.value in o.reasons for o in acting):
            steps.extend(self.invalid_index_steps(relation))
        if any(o.action is TableAction.REINDEX and Reason.BLOAT_ESTIMATE.value in o.reasons for o in acting):
            steps.append((TableAction.REINDEX, sql.SQL(STATEMENTS[Operation.REINDEX]).format(name)))
        return steps

    def invalid_index_steps(self, relation: _Relation) -> list[tuple[TableAction, sql.Composed]]:
        """Each invalid index of the table now: a REINDEX CONCURRENTLY leftover (a copy) dropped, any other
        (a failed CREATE INDEX CONCURRENTLY: somebody wants that index) rebuilt."""
        steps: list[tuple[TableAction, sql.Composed]] = []
        for schema, index in self.rows(TABLE_INVALID_INDEXES_SQL, {"oid": relation.oid}):
            identifier = sql.Identifier(str(schema), str(index))
            if LEFTOVER_INDEX.search(str(index)):
                drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(identifier)
                steps.append((TableAction.DROP_INVALID_INDEX, drop))
            else:
                steps.append((TableAction.REINDEX, sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(identifier)))
        return steps

    def process(self, relation: _Relation, before: _Figures, why: str = "") -> tables.TableOutcome:
        """Run the table's statement(s) (``steps``): processed, skipped or failed (``tables``' policy)."""
        steps = self.steps(relation)
        texts = [self.text(statement) for _, statement in steps]
        text = "; ".join(texts) or "nothing to run (no invalid index left)"
        started = time.monotonic()
        for action, statement in steps:
            try:
                self.execute(statement)
            except psycopg.Error as exc:
                return self.table_error(relation, text, exc, before, steps[0][0], started)
            warning = self.skip_warning(relation) if action in (*_VACUUMS, TableAction.ANALYZE) else None
            if warning is not None:
                note = f"skipped table {relation.qualified}: {text} -- {warning}"
                report = self.table_report(relation, TableAction.SKIP, before, None, started, Reason.LOCKED)
                return tables.TableOutcome(
                    relation.qualified, tables.TableStatus.SKIPPED, (note,), warning, report
                )
        elapsed = time.monotonic() - started
        try:
            after: _Figures | str | None = self.figures([relation]).get(relation.oid)
        except pg_errors.QueryCanceled:
            # The statement is done: a cancel (or the deadline's statement_timeout) landing on this bookkeeping
            # query must not undo it. The figures are unknown; the next statement's check stops the operation.
            after = "unknown (interrupted)"
        note = (
            f"table {relation.qualified}: {text}{why} -- "
            + _changes(before, after)
            + (f", indexes {before.indexes}" if self.operation == Operation.REINDEX else "")
            + f", {elapsed:.3f}s"
            + self.server_said()
        )
        figures_after = after if isinstance(after, _Figures) else None
        action = steps[0][0] if steps else ACTION_OF[self.operation]
        report = self.table_report(relation, action, before, figures_after, started)
        return tables.TableOutcome(relation.qualified, tables.TableStatus.PROCESSED, (note,), report=report)

    @staticmethod
    def table_report(
        relation: _Relation,
        action: TableAction,
        before: _Figures,
        after: _Figures | None,
        started: float,
        reason: Reason | None = None,
    ) -> TableReport:
        """The table's report of this run: the action, the figures before and after, the duration."""
        return TableReport(
            schema=relation.schema,
            table=relation.name,
            action=action,
            reasons=(reason.value,) if reason is not None else (),
            before=_figure_map(before),
            after=_figure_map(after) if after is not None else {},
            duration_seconds=time.monotonic() - started,
        )

    def table_error(
        self,
        relation: _Relation,
        text: str,
        exc: psycopg.Error,
        before: _Figures,
        action: TableAction,
        started: float,
    ) -> tables.TableOutcome:
        """A table's statement failed: skipped (SKIP_ERRORS), failed, or the connection is lost."""
        reason = f"{sanitize(str(exc), self.url)} (SQLSTATE {exc.sqlstate})"
        if isinstance(exc, SKIP_ERRORS):
            note = f"skipped table {relation.qualified}: {text} -- {reason}"
            report = self.table_report(relation, TableAction.SKIP, before, None, started, Reason.LOCKED)
            return tables.TableOutcome(relation.qualified, tables.TableStatus.SKIPPED, (note,), reason, report)
        note = f"failed table {relation.qualified}: {text} -- {reason}"
        report = self.table_report(relation, action, before, None, started)
        outcome = tables.TableOutcome(relation.qualified, tables.TableStatus.FAILED, (note,), reason, report)
        if self.conn.broken:
            raise tables.ConnectionLost(outcome)
        return outcome

    def over_thresholds(
        self, relations: Sequence[_Relation], before: dict[int, _Figures], reasons: dict[int, str]
    ) -> list[_Relation]:
        """Optimize's tables: those over an autovacuum threshold (``reasons`` gets why); the notes list the
        others."""
        thresholds = self.thresholds()
        chosen: list[_Relation] = []
        below: list[str] = []
        for relation in relations:
            over, figures_text = _optimize_reason(before[relation.oid], thresholds)
            if over:
                chosen.append(relation)
                reasons[relation.oid] = f" (over a threshold: {figures_text})"
            else:
                below.append(f"{relation.qualified} ({figures_text})")
        self.draft.below_threshold = len(below)
        listed = "; ".join(below[:MAX_LISTED_BELOW])
        if len(below) > MAX_LISTED_BELOW:
            listed += f"; and {len(below) - MAX_LISTED_BELOW} more"
        self.draft.tail_notes.append(
            f"below the autovacuum thresholds, not vacuumed: {listed}"
            if below
            else "below the autovacuum thresholds: no table"
        )
        if not chosen:
            self.draft.tail_notes.append("no table over the autovacuum thresholds: nothing to do")
        return chosen

    def thresholds(self) -> _Thresholds:
        row = self.conn.execute(
            "SELECT " + ", ".join(f"pg_catalog.current_setting('{name}')::float8" for name in THRESHOLD_SETTINGS)
        ).fetchone()
        assert row is not None
        return _Thresholds(*(float(value) for value in row))

    def failure(self, exc: Exception, run: tables.TableRun) -> OperationFailed:
        """The OperationFailed for an error that is not an interruption, with the figures gathered so far."""
        bytes_after: int | None = None
        if not self.conn.broken:
            with contextlib.suppress(psycopg.Error):
                bytes_after = self.database_size()
        sqlstate = getattr(exc, "sqlstate", None)
        code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        return OperationFailed(
            f"postgresql {self.operation.value} failed while {self.current}: {sanitize(str(exc), self.url)}{code}",
            self.draft.report(run, bytes_after),
        )

    def drop_leftover_indexes(self, relations: Sequence[_Relation]) -> None:
        """Drop the invalid ``*_ccnew``/``*_ccold`` indexes a failed REINDEX CONCURRENTLY left on these tables."""
        leftovers = self.rows(LEFTOVER_INDEXES_SQL, {"oids": [rel.oid for rel in relations]})
        for schema, index, table in leftovers:
            statement = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, index))
            try:
                self.execute(statement)
            except psycopg.Error as exc:
                # Interrupted or disconnected: the operation stops. Anything else (a lock, a permission, a TOAST
                # index the server will not drop): the reindex itself is done, the note says what is left.
                if isinstance(exc, pg_errors.QueryCanceled) or self.conn.broken:
                    raise
                self.draft.tail_notes.append(
                    f"invalid index {schema}.{index} on {table} (left by a failed REINDEX CONCURRENTLY) "
                    f"not dropped: {sanitize(str(exc), self.url)} (SQLSTATE {exc.sqlstate})"
                )
                continue
            self.draft.tail_notes.append(
                f"dropped invalid index {schema}.{index} on {table} (left by a failed REINDEX CONCURRENTLY): "
                f"{self.text(statement)}"
            )
        if not leftovers:
            self.draft.tail_notes.append("no invalid *_ccnew/*_ccold index left on these tables")


def _figure_map(figures: _Figures) -> dict[str, float]:
    """A table's figures for its report, the unit in each name (no size when it was not read)."""
    named = {"dead_tuples": float(figures.dead_tuples), "modified_since_analyze": float(figures.mod_since_analyze)}
    if figures.size is not None:
        named["size_bytes"] = float(figures.size)
    return named


def _size(value: int | None) -> str:
    return "unknown (locked)" if value is None else str(value)


def _changes(before: _Figures, after: _Figures | str | None) -> str:
    if isinstance(after, str):
        return f"dead tuples {before.dead_tuples}, size {_size(before.size)} bytes before; figures after: {after}"
    if after is None:
        return f"dead tuples {before.dead_tuples} -> ?, size {_size(before.size)} -> ? bytes (table gone)"
    return (
        f"dead tuples {before.dead_tuples} -> {after.dead_tuples}, "
        f"size {_size(before.size)} -> {_size(after.size)} bytes"
    )


@dataclass(frozen=True, slots=True)
class _Thresholds:
    vacuum_base: float
    vacuum_scale: float
    analyze_base: float
    analyze_scale: float

    def for_table(self, figures: _Figures) -> tuple[float, float]:
        """(dead tuples threshold, changes-since-analyze threshold), as autovacuum computes them."""
        reltuples = max(figures.reltuples, 0.0)

        def pick(name: str, default: float) -> float:
            value = _reloption(figures.reloptions, name)
            return default if value is None or value < 0 else value

        vacuum = (
            pick("autovacuum_vacuum_threshold", self.vacuum_base)
            + pick("autovacuum_vacuum_scale_factor", self.vacuum_scale) * reltuples
        )
        analyze = (
            pick("autovacuum_analyze_threshold", self.analyze_base)
            + pick("autovacuum_analyze_scale_factor", self.analyze_scale) * reltuples
        )
        return vacuum, analyze


def _optimize_reason(figures: _Figures, thresholds: _Thresholds) -> tuple[bool, str]:
    vacuum, analyze = thresholds.for_table(figures)
    dead, changed = figures.dead_tuples, figures.mod_since_analyze
    over_dead, over_changed = dead > vacuum, changed > analyze
    figures_text = (
        f"dead tuples {dead} {'>' if over_dead else '<='} {vacuum:g}, "
        f"changed since analyze {changed} {'>' if over_changed else '<='} {analyze:g} "
        f"(reltuples {max(figures.reltuples, 0.0):g})"
    )
    return over_dead or over_changed, figures_text


class PostgresqlEngine:
    """The PostgreSQL engine (psycopg 3)."""

    name = "postgresql"
    dialect = "postgresql"

    def __init__(self, faults: FaultPlan = NO_FAULTS) -> None:
        self._faults = faults

    def check_url(self, url: URL) -> None:
        if url.drivername not in SUPPORTED_DRIVERNAMES:
            raise EngineUnavailable(
                f"postgresql driver {url.get_driver_name()!r} is not supported: this worker uses psycopg 3 "
                "(write postgresql+psycopg://user@host:port/database or postgresql://...)"
            )
        if not url.database and not url.query.get("dbname"):
            raise EngineUnavailable("postgresql target must name a database (postgresql+psycopg://host/database)")
        try:
            lock_timeout_of(url)
            make_conninfo("", **connection_params(url))
        except (ValueError, psycopg.Error) as exc:
            raise EngineUnavailable(f"postgresql target URL is not usable: {sanitize(str(exc), url)}") from None

    def _connect(self, url: URL, deadline: datetime | None) -> Connection:
        try:
            return psycopg.connect(make_conninfo("", **connection_params(url, deadline)), autocommit=True)
        except (psycopg.Error, ValueError) as exc:
            raise OperationFailed(
                f"cannot connect to PostgreSQL {describe_target(url)}: {sanitize(str(exc), url)}"
            ) from None

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
        """``ParallelEngine.run_parallel``: up to ``parallel`` tables at once, each on its own connection
        (``_Session.open_lanes``); 1 is ``run``. With ``actions`` (MODE_AUTO) those tables only, in that order,
        each with the statements its observations call for (``_Session.steps``)."""
        operation = Operation(operation)
        check(cancel, deadline)
        try:
            lock_timeout = lock_timeout_of(url)
        except ValueError as exc:
            raise OperationFailed(f"postgresql target URL is not usable: {exc}") from None
        draft = _ReportDraft(self.name, time.monotonic())
        conn = self._connect(url, deadline)
        try:
            session = _Session(conn, url, operation, cancel, deadline, scope, lock_timeout, draft, actions)
            session.connect_lane = lambda: self._connect(url, deadline)
            slow = self._faults.slow_seconds(operation)
            return tables.run_operation(
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
            conn.close()

    def observe(
        self,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> Observed:
        """``Engine.observe``: ``observe_postgresql`` on an autocommit connection of its own, then the database's
        size; no resource lock (observing must not wait behind a running VACUUM), no maintenance statement. A
        cancel or the deadline cancels the running catalog query on the server."""
        check(cancel, deadline)
        conn = self._connect(url, deadline)
        canceller = _canceller(conn)
        try:
            with tables.interruptible(canceller, cancel, deadline) as stopped:
                try:
                    observations = observe_postgresql(conn, scope, thresholds)
                    row = conn.execute(DATABASE_SIZE_SQL).fetchone()
                except psycopg.Error as exc:
                    # An error the interrupt caused is the interruption: CANCELLED, or the deadline's failure.
                    raise (
                        stopped() or OperationFailed(f"postgresql observe failed: {sanitize(str(exc), url)}")
                    ) from None
                finally:
                    canceller.stop()
                stop = stopped()  # a cancel after the last query: the observation ends CANCELLED all the same
                if stop is not None:
                    raise stop
        finally:
            conn.close()
        return Observed(observations, int(row[0]) if row else 0)
