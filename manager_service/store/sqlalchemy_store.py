"""The SQLAlchemy 2 adapter of JobStore: every database operation of the manager is in this module.

Each public method is one transaction. Child changes are guarded by their expected status and attempt (the
fence), and move the parent's counters in the same transaction, so a crash between two statements can never
leave a parent that disagrees with its children.

Once a store has taken the lease (``acquire_lease``), every write transaction first reads the lease row FOR SHARE
with this store's holder and term, unexpired by the database's ``now()``; no row means LeaseLost and nothing is
written. A takeover UPDATEs that row, so it waits for every write of the old holder still in flight, and
PostgreSQL ends a session idle in a transaction after ``idle_in_transaction_timeout`` (set below the lease), so a
frozen manager cannot hold a takeover up for long. A SQLite store admits one manager: an OS lock on a companion
file, held while the store is open.

Every write transaction that inserts or changes jobs appends, just before its COMMIT, one ``job_changes`` row per
job it touched (the job as it leaves it; a new parent's children excepted: nobody can watch them before it
exists), under a transaction-level advisory lock on PostgreSQL: ``change_seq`` values are taken and committed
one transaction at a time, so a reader that has seen ``change_seq`` N has seen every committed change before it
(the leader's writes are serialized anyway: one writer thread, fenced by the lease). With ``notify``, such a
transaction also sends ONE ``pg_notify`` on ``CHANGES_CHANNEL``: a hint for the standbys' pollers, never the
only way they learn of a change.

No call of a manager's store can hang forever on a dead link (``link_timeout``): connecting gives up after
``connect_timeout``, TCP keepalives and ``tcp_user_timeout`` end a connection whose peer stopped answering, and
the lease statements run under ``statement_timeout`` and ``lock_timeout``, so a renewal fails (StoreUnavailable)
instead of waiting past the lease. ``stop_writing`` fences a store from the inside: a leader that stepped down by
itself writes nothing more, even if the link comes back.

Every write stamps the rows it writes with a fresh ``commit_token``. When the link breaks during COMMIT, the
store reconnects and reads the token back from one of those rows: committed, the write's outcome is returned;
not committed, StoreUnavailable (nothing changed); the store still unreachable, CommitOutcomeUnknown.
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Interval,
    Row,
    Update,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from dbmaint.operations import CHILD_JOB_TYPE, PARENT_JOB_TYPE, JobStatus, Operation, OperationReport
from manager_service import state_machine
from manager_service.domain import (
    BatchOutcome,
    CancelOutcome,
    ChildOutcome,
    CreateOutcome,
    Firing,
    FiringOutcome,
    FiringPlan,
    FiringRecord,
    FiringsOutcome,
    Job,
    JobChange,
    JobFilter,
    MaintenanceSpec,
    Progress,
    Schedule,
    ScheduleSpec,
    StartRequest,
    Transition,
    job_to_dict,
    utcnow,
)
from manager_service.errors import (
    CommitOutcomeUnknown,
    JobAlreadyFinished,
    JobNotFound,
    LeaseLost,
    RequestIdReused,
    ScheduleChanged,
    ScheduleExists,
    ScheduleNotFound,
    SlotAlreadyRecorded,
    StoreInUse,
    StoreUnavailable,
)
from manager_service.store import migrations, transitions
from manager_service.store.base import ChildrenPage, LeaseState, Page
from manager_service.store.models import job_changes, jobs, schedule_firings, schedules, store_lease, workers
from manager_service.validation import DEFAULT_CHILDREN_PAGE_SIZE
from manager_service.workers import WorkerView

UNFINISHED = (JobStatus.PENDING.value, JobStatus.RUNNING.value)

# The statements of the group-commit hot path, built once: constructing a statement costs more than running it
# (SQLAlchemy memoizes the cache key of a statement object, so these are also compiled only once).
FIND_BY_IDS = select(jobs).where(jobs.c.id.in_(bindparam("ids", expanding=True)))
FIND_BY_IDS_LOCKED = FIND_BY_IDS.order_by(jobs.c.id).with_for_update()
PARENTS_OF = select(jobs.c.parent_id).where(jobs.c.id.in_(bindparam("ids", expanding=True))).distinct()
LOCK_IDS = (
    select(jobs.c.seq).where(jobs.c.id.in_(bindparam("ids", expanding=True))).order_by(jobs.c.id).with_for_update()
)
SEQS_OF_CHILDREN = select(jobs.c.id, jobs.c.seq).where(jobs.c.parent_id == bindparam("b_parent"))
# The lease check at the start of every write transaction (PostgreSQL). FOR SHARE: writes of one holder do not
# block each other, but a takeover's UPDATE of the row waits until they end.
CHECK_LEASE = (
    select(store_lease.c.term)
    .where(
        store_lease.c.name == bindparam("b_name"),
        store_lease.c.holder == bindparam("b_holder"),
        store_lease.c.term == bindparam("b_term"),
        store_lease.c.expires_at > func.now(),
    )
    .with_for_update(read=True)
)
_EXPIRES_IN = func.extract("epoch", store_lease.c.expires_at - func.now()).label("expires_in")
_UNTIL = func.now() + bindparam("b_ttl", type_=Interval())
_OURS = (
    store_lease.c.name == bindparam("b_name"),
    store_lease.c.holder == bindparam("b_holder"),
    store_lease.c.term == bindparam("b_term"),
)
# Free (released), lapsed by the database's clock, or ours already: the term grows, fencing every older one.
TAKE_LEASE = (
    update(store_lease)
    .where(
        store_lease.c.name == bindparam("b_name"),
        or_(
            store_lease.c.holder == bindparam("b_holder"),
            store_lease.c.holder == "",
            store_lease.c.expires_at <= func.now(),
        ),
    )
    .values(
        holder=bindparam("b_holder"),
        address=bindparam("b_address"),
        term=store_lease.c.term + 1,
        expires_at=_UNTIL,
    )
    .returning(store_lease.c.term, _EXPIRES_IN)
)
LEASE_STATE = select(store_lease.c.holder, store_lease.c.address, store_lease.c.term, _EXPIRES_IN).where(
    store_lease.c.name == bindparam("b_name")
)
RENEW_LEASE = (
    update(store_lease).where(*_OURS).values(expires_at=_UNTIL).returning(store_lease.c.address, _EXPIRES_IN)
)
# Both for the rest of the transaction only (SET LOCAL), in one round trip.
LEASE_TIMEOUTS = select(
    func.set_config("statement_timeout", bindparam("b_timeout"), True),
    func.set_config("lock_timeout", bindparam("b_timeout"), True),
)
RELEASE_LEASE = update(store_lease).where(*_OURS).values(holder="", address="", expires_at=func.now())
COMMIT_TOKEN_OF = select(jobs.c.commit_token).where(jobs.c.id == bindparam("b_id"))
SCHEDULE_TOKEN_OF = select(schedules.c.commit_token).where(schedules.c.key == bindparam("b_id"))
# A probe naming a schedule row (its key) rather than a job row (its id).
SCHEDULE_PROBE = "schedule:"
# A page of a parent's children by keyset on (parent_id, position), the index ix_jobs_parent_position: the
# database reads one page of rows (+1, to know whether more follow), however many children the parent has.
CHILDREN_AFTER = (
    select(jobs)
    .where(jobs.c.parent_id == bindparam("b_parent"), jobs.c.position > bindparam("b_after"))
    .order_by(jobs.c.position)
    .limit(bindparam("b_limit"))
)
CHILDREN_AFTER_WITH_STATUS = CHILDREN_AFTER.where(jobs.c.status.in_(bindparam("b_statuses", expanding=True)))
# The children a repeated request_id answers with (the first page; GetJob reads the rest).
FIRST_CHILDREN_PAGE = DEFAULT_CHILDREN_PAGE_SIZE
LEASE_NAME = "manager"
# Pauses before each look for a write's marker after the link broke during its COMMIT (bounded: the caller
# waits on it).
RECONCILE_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)
# Keys of a write transaction's connection.info: its marker and the id of one row it stamped.
TOKEN_KEY = "dbmaint_commit_token"
PROBE_KEY = "dbmaint_commit_probe"
# IN lists are sent in chunks of this many ids, under every backend's bind-parameter limit.
IN_CHUNK = 500
# The key of connection.info that collects the jobs a write transaction inserted or changed (by id: the last
# state wins), written to ``job_changes`` before its COMMIT.
CHANGES_KEY = "dbmaint_job_changes"
# The transaction-level advisory lock held while a write appends its ``job_changes`` rows and commits.
CHANGES_LOCK_KEY = 0x64626D6368616E67  # "dbmchang"
# The channel of the hint NOTIFY (its payload is empty: the listener only wakes its poller).
CHANGES_CHANNEL = "dbmaint_job_changes"
NOTIFY_CHANGES = text(f"SELECT pg_notify('{CHANGES_CHANNEL}', '')")
LOCK_CHANGES = text(f"SELECT pg_advisory_xact_lock({CHANGES_LOCK_KEY})")
CHANGES_AFTER = (
    select(job_changes)
    .where(job_changes.c.change_seq > bindparam("b_after"))
    .order_by(job_changes.c.change_seq)
    .limit(bindparam("b_limit"))
)


@functools.cache
def _transition_statement(columns: tuple[str, ...], fenced: bool) -> Update:
    """The UPDATE of one job row by a transition that writes ``columns`` (bound as ``b_<column>``). Fenced, the
    row must still have the status and attempt it was read with (``b_was_status``, ``b_was_attempt``). Cached:
    each transition's statement is built, and compiled, once."""
    where = [jobs.c.id == bindparam("b_id")]
    if fenced:
        where += [jobs.c.status == bindparam("b_was_status"), jobs.c.attempt == bindparam("b_was_attempt")]
    return (
        update(jobs)
        .where(*where)
        .values(
            **{column: bindparam(f"b_{column}") for column in columns},
            updated_at=bindparam("b_now"),
            version=jobs.c.version + 1,
            commit_token=bindparam("b_token"),
        )
    )


def open_store(
    url: str,
    *,
    migrate: bool = True,
    idle_in_transaction_timeout: float | None = None,
    link_timeout: float | None = None,
    notify: bool = True,
) -> SQLAlchemyJobStore:
    """Open the store at a SQLAlchemy URL, bringing its schema to the newest migration first (unless
    ``migrate`` is False: then a schema that is not current is an error). ``idle_in_transaction_timeout``
    (PostgreSQL): seconds after which the server ends a session of this store idle inside a transaction; a
    manager sets it below its store lease. ``link_timeout`` (PostgreSQL): seconds after which a connection
    attempt, a silent peer or a lease statement gives up (see the module docstring); a manager sets it well
    below its store lease. ``notify`` (PostgreSQL): each write transaction that changed jobs sends one NOTIFY on
    ``CHANGES_CHANNEL`` (off behind PgBouncer in transaction pooling)."""
    engine = make_engine(url, idle_in_transaction_timeout=idle_in_transaction_timeout, link_timeout=link_timeout)
    if migrate:
        migrations.upgrade(engine)
    else:
        try:
            with _store_errors():  # a standby opening a store it cannot reach tries again later
                current = migrations.current_revision(engine)
        except StoreUnavailable:
            engine.dispose()
            raise
        head = migrations.head_revision()
        if current != head:
            engine.dispose()
            raise RuntimeError(
                f"the job store schema is at revision {current}, not {head}: run dbmaint-manager migrate"
            )
    return SQLAlchemyJobStore(engine, lease_statement_timeout=link_timeout, notify=notify)


def make_engine(
    url: str, *, idle_in_transaction_timeout: float | None = None, link_timeout: float | None = None
) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        connect_args = _postgres_connect_args(parsed, idle_in_transaction_timeout, link_timeout)
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    _configure_sqlite(engine)
    return engine


def _postgres_connect_args(
    parsed: URL, idle_in_transaction_timeout: float | None, link_timeout: float | None
) -> dict[str, Any]:
    """libpq connection parameters of a manager's store. A parameter given in the URL wins.

    ``link_timeout`` bounds how long a dead link can hold a call: ``connect_timeout`` (whole seconds, at least 2
    as libpq wants), keepalives that probe an idle connection after ``link_timeout`` and give up after three
    unanswered probes a second apart, and ``tcp_user_timeout``: data unacknowledged for ``link_timeout`` ends the
    connection (keepalives alone do not cover a request sent into a dead link)."""
    args: dict[str, Any] = {}
    if idle_in_transaction_timeout is not None:
        setting = f"-c idle_in_transaction_session_timeout={max(1, round(idle_in_transaction_timeout * 1000))}"
        options = parsed.query.get("options")
        given = " ".join(options) if isinstance(options, tuple) else options
        args["options"] = f"{given} {setting}" if given else setting
    if link_timeout is not None:
        link = {
            "connect_timeout": max(2, math.ceil(link_timeout)),
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(link_timeout)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": max(1, round(link_timeout * 1000)),
        }
        args.update({key: value for key, value in link.items() if key not in parsed.query})
    return args


def _configure_sqlite(engine: Engine) -> None:
    """WAL (readers never block the writer), a busy timeout, FULL sync (a commit survives a crash), and
    explicit BEGIN so SQLAlchemy owns the transaction boundaries (the pysqlite recipe)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start : start + IN_CHUNK]


def _row_to_job(row: Row[Any]) -> Job:
    m = row._mapping
    is_parent = m["parent_id"] is None
    return Job(
        id=m["id"],
        seq=m["seq"],
        type=m["type"],
        status=JobStatus(m["status"]),
        config=json.loads(m["config"]),
        created_at=_aware(m["created_at"]) or utcnow(),
        version=m["version"],
        parent_id=m["parent_id"],
        target=m["target"],
        operation=Operation(m["operation"]) if m["operation"] else None,
        position=m["position"],
        attempt=m["attempt"],
        max_attempts=m["max_attempts"],
        worker_id=m["worker_id"],
        error=m["error"],
        report=OperationReport.from_dict(json.loads(m["result"])) if m["result"] else None,
        request_id=m["request_id"],
        cancel_requested=bool(m["cancel_requested"]),
        progress=Progress(
            total=m["total"],
            pending=m["pending"],
            running=m["running"],
            succeeded=m["succeeded"],
            failed=m["failed"],
            cancelled=m["cancelled"],
        )
        if is_parent
        else None,
        started_at=_aware(m["started_at"]),
        finished_at=_aware(m["finished_at"]),
        schedule_id=m["schedule_id"],
        scheduled_time=_aware(m["scheduled_time"]),
        window=json.loads(m["window"]) if m["window"] else None,
    )


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return text.splitlines()[0] if text else type(error).__name__


def _stamp(conn: Connection, job_id: str) -> str:
    """The marker of the write transaction on ``conn``, to set on every row it writes; remembers ``job_id`` as
    the row to look at if the outcome of the COMMIT is unknown."""
    conn.info.setdefault(PROBE_KEY, job_id)
    token: str = conn.info[TOKEN_KEY]
    return token


def _stamp_schedule(conn: Connection, key: str) -> str:
    """``_stamp`` for a schedule row (the probe then names the schedules table)."""
    return _stamp(conn, SCHEDULE_PROBE + key)


def _token_query(probe: str) -> tuple[Any, dict[str, str]]:
    """The statement that reads the commit marker of the row ``probe`` names, and its parameters."""
    if probe.startswith(SCHEDULE_PROBE):
        return SCHEDULE_TOKEN_OF, {"b_id": probe.removeprefix(SCHEDULE_PROBE)}
    return COMMIT_TOKEN_OF, {"b_id": probe}


def _note_changes(conn: Connection, changed: Sequence[Job]) -> None:
    """Remember the jobs this write transaction inserted or changed, as they are after it (``_append_changes``
    writes them to ``job_changes`` before the COMMIT)."""
    conn.info.setdefault(CHANGES_KEY, {}).update((job.id, job) for job in changed)


def _row_to_change(row: Row[Any]) -> JobChange:
    m = row._mapping
    return JobChange(
        change_seq=m["change_seq"],
        job_id=m["job_id"],
        parent_id=m["parent_id"],
        version=m["version"],
        at=_aware(m["at"]) or utcnow(),
        snapshot=m["snapshot"],
    )


def _worker_row(worker: WorkerView, term: int) -> dict[str, Any]:
    return {
        "worker_id": worker.worker_id,
        "term": term,
        "peer": worker.peer,
        "targets": json.dumps(sorted(worker.targets)),
        "slots": worker.slots,
        "running_job_ids": json.dumps(list(worker.running_job_ids)),
        "draining": worker.draining,
        "faults_active": worker.faults_active,
        "connected_at": worker.connected_at,
        "last_heartbeat": worker.last_heartbeat,
    }


def _row_to_worker(row: Row[Any]) -> WorkerView:
    m = row._mapping
    return WorkerView(
        worker_id=m["worker_id"],
        targets=frozenset(json.loads(m["targets"])),
        slots=m["slots"],
        running_job_ids=tuple(json.loads(m["running_job_ids"])),
        last_heartbeat=_aware(m["last_heartbeat"]) or utcnow(),
        connected_at=_aware(m["connected_at"]) or utcnow(),
        draining=bool(m["draining"]),
        peer=m["peer"],
        faults_active=bool(m["faults_active"]),
    )


def _row_to_schedule(row: Row[Any]) -> Schedule:
    m = row._mapping
    return Schedule(
        key=m["key"],
        spec=ScheduleSpec.from_dict(json.loads(m["spec"])),
        paused=bool(m["paused"]),
        created_at=_aware(m["created_at"]) or utcnow(),
        updated_at=_aware(m["updated_at"]) or utcnow(),
        version=m["version"],
        last_slot=_aware(m["last_slot"]),
        buffered_slot=_aware(m["buffered_slot"]),
        last_parent_id=m["last_parent_id"],
    )


def _row_to_firing(row: Row[Any], schedule_id: str) -> Firing:
    m = row._mapping
    return Firing(
        schedule_key=m["schedule_key"],
        schedule_id=schedule_id,
        scheduled_time=_aware(m["scheduled_time"]) or utcnow(),
        outcome=FiringOutcome(m["outcome"]),
        recorded_at=_aware(m["recorded_at"]) or utcnow(),
        parent_id=m["parent_id"],
        reason=m["reason"],
        missed_count=m["missed_count"],
    )


def _sqlite_lock_path(engine: Engine) -> Path | None:
    """The companion lock file of a SQLite store (None for an in-memory database, shared with nobody)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve().with_name(Path(database).name + ".manager-lock")


def _lock_sqlite_store(path: Path, holder: str, address: str) -> IO[str]:
    """Hold an exclusive OS lock on ``path`` (released when the process dies) or raise StoreInUse naming it."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip()
        handle.close()
        raise StoreInUse(
            f"the SQLite job store is in use by another manager ({owner or 'unknown'}): it holds the lock file "
            f"{path}. A SQLite store admits one manager; stop the other one, or use PostgreSQL to run a standby"
        ) from None
    handle.truncate(0)
    handle.write(f"manager {holder} pid {os.getpid()}{f' at {address}' if address else ''}\n")
    handle.flush()
    return handle


def _link_lost(error: DBAPIError) -> bool:
    """Is this the connection failing (lost, refused, ended by the server) rather than the statement?"""
    return isinstance(error, (OperationalError, InterfaceError)) or error.connection_invalidated


@contextmanager
def _store_errors() -> Iterator[None]:
    """A lost or refused connection is the store being unavailable (the request may be retried); any other
    database error is a bug and stays what it is."""
    try:
        yield
    except DBAPIError as error:
        if not _link_lost(error):
            raise
        raise StoreUnavailable(f"the job store is unavailable: {_first_line(error)}") from error


CHILD_INSERT_COLUMNS = (
    "id",
    "type",
    "parent_id",
    "status",
    "target",
    "operation",
    "position",
    "config",
    "attempt",
    "max_attempts",
    "created_at",
    "updated_at",
    "commit_token",
    "schedule_id",
    "scheduled_time",
    "window",
)
# What every child of one parent shares, converted once per insert.
CHILD_SHARED_COLUMNS = ("created_at", "updated_at", "schedule_id", "scheduled_time", "window")
# The other columns of a new child (their model defaults).
CHILD_INSERT_DEFAULTS: dict[str, Any] = {
    "cancel_requested": False,
    "total": 0,
    "pending": 0,
    "running": 0,
    "succeeded": 0,
    "failed": 0,
    "cancelled": 0,
    "version": 1,
}
_COMPILED_INSERTS: dict[str, tuple[str, tuple[str, ...] | None]] = {}


def _compiled_insert(conn: Connection) -> tuple[str, tuple[str, ...] | None]:
    """The driver's SQL of the children's INSERT for this dialect, compiled once, and the order of its
    positional parameters (None: the driver takes named ones)."""
    name = conn.dialect.name
    if name not in _COMPILED_INSERTS:
        columns = [*CHILD_INSERT_COLUMNS, *CHILD_INSERT_DEFAULTS]
        compiled = jobs.insert().compile(dialect=conn.dialect, column_keys=columns)
        order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        _COMPILED_INSERTS[name] = (str(compiled), order)
    return _COMPILED_INSERTS[name]


def _bind(conn: Connection, column: str | Column[Any], value: Any) -> Any:
    """``value`` as the driver stores it in ``column`` (of ``jobs`` if named; SQLite keeps datetimes as text)."""
    target = jobs.c[column] if isinstance(column, str) else column
    process = target.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(value) if process is not None else value


_COMPILED_CHANGE_INSERTS: dict[str, tuple[str, tuple[str, ...] | None]] = {}


def _compiled_change_insert(conn: Connection) -> tuple[str, tuple[str, ...] | None]:
    """The driver's SQL of the ``job_changes`` INSERT for this dialect (``at`` is the database's now() on
    PostgreSQL, a parameter elsewhere), compiled once, and the order of its positional parameters."""
    name = conn.dialect.name
    if name not in _COMPILED_CHANGE_INSERTS:
        columns = ["job_id", "parent_id", "version", "snapshot"]
        statement = job_changes.insert()
        if name == "postgresql":
            statement = statement.values(at=func.now())
        else:
            columns.append("at")
        compiled = statement.compile(dialect=conn.dialect, column_keys=columns)
        order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        _COMPILED_CHANGE_INSERTS[name] = (str(compiled), order)
    return _COMPILED_CHANGE_INSERTS[name]


def _round_robin(pairs: list[tuple[str, Operation]], per_target: int) -> list[tuple[int, tuple[str, Operation]]]:
    """(position, pair) in insertion order: every target's first operation, then every second one, and so on.
    ``seq`` follows insertion, and dispatch serves the oldest ``seq`` first, so a large parent spreads over its
    targets instead of running one target's operations before the next target starts. Positions (display and
    per-target order) stay target by target."""
    positioned = list(enumerate(pairs))
    return sorted(positioned, key=lambda item: (item[0] % per_target, item[0] // per_target))


class SQLAlchemyJobStore:
    """JobStore on any SQLAlchemy 2 engine (SQLite file by default)."""

    def __init__(
        self, engine: Engine, lease_statement_timeout: float | None = None, *, notify: bool = True
    ) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self.notify = notify and self._postgres
        # statement_timeout and lock_timeout of the lease statements, in ms (None: the server's settings).
        self._lease_timeout_ms = (
            max(1, round(lease_statement_timeout * 1000)) if lease_statement_timeout is not None else None
        )
        # Set by stop_writing: every later write (and renewal) raises it, touching nothing.
        self._stopped: LeaseLost | None = None
        # A call still out when the store closed (a renewal abandoned on a dead link) hands its connection back
        # to a pool nobody uses any more: close it then instead of leaving it open.
        self._closed = False
        event.listen(engine, "checkin", self._close_if_store_closed)
        self._lock_rows = engine.dialect.name != "sqlite"  # SQLite locks the whole file for a writer anyway
        # The lease row is PostgreSQL's; a SQLite store is fenced by its lock file instead.
        self._lease_rows = engine.dialect.name != "sqlite"
        # (holder, term, ttl) once acquire_lease took the lease: from then on every write checks it.
        self._fence: tuple[str, int, float] | None = None
        self._lock_file: IO[str] | None = None
        # Set when a write's outcome stayed unknown: this store writes nothing more (its owner's memory may
        # disagree with the store; it must rebuild from a fresh store).
        self._unsure: CommitOutcomeUnknown | None = None
        # Called (on the thread of the write) when this store stops writing: it lost the lease (LeaseLost), or a
        # write's outcome is unknown (CommitOutcomeUnknown). The manager stops acting at once, whichever write
        # noticed it first.
        self.on_stop: Callable[[LeaseLost | CommitOutcomeUnknown], None] | None = None

    def _close_if_store_closed(self, dbapi_connection: Any, record: Any) -> None:
        if self._closed and record is not None:
            record.invalidate()

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._closed = True
        self._engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the SQLite store's lock
            self._lock_file = None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A read transaction (several reads that must agree)."""
        with _store_errors(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        """A write transaction: the lease is checked first (LeaseLost: nothing is written), the body stamps the
        rows it writes (``_stamp``), and a COMMIT whose outcome is unknown is reconciled from the store."""
        if self._unsure is not None:
            raise CommitOutcomeUnknown(f"this store writes nothing more: {self._unsure}")
        if self._stopped is not None:
            raise self._stopped
        token = os.urandom(16).hex()
        probe: str | None = None
        lost: DBAPIError | None = None
        with _store_errors(), self._engine.connect() as conn:
            conn.info[TOKEN_KEY] = token
            conn.info.pop(PROBE_KEY, None)
            conn.info.pop(CHANGES_KEY, None)
            with conn.begin() as transaction:
                self._check_lease(conn)
                yield conn
                self._append_changes(conn)
                probe = conn.info.pop(PROBE_KEY, None)
                try:
                    transaction.commit()
                except DBAPIError as error:
                    if not _link_lost(error):
                        raise
                    lost = error
        if lost is not None and probe is not None:
            # A write that wrote no row has the same outcome committed or not: only the others need a look.
            self._reconcile(token, probe, lost)

    def _append_changes(self, conn: Connection) -> None:
        """One ``job_changes`` row per job this transaction inserted or changed, in the order it touched them,
        then one NOTIFY (PostgreSQL, if ``notify``). The advisory lock makes change_seq follow commit order."""
        changed: dict[str, Job] | None = conn.info.pop(CHANGES_KEY, None)
        if not changed:
            return
        if self._postgres:
            conn.execute(LOCK_CHANGES)
        # The driver's executemany, as for the children of a new parent: SQLAlchemy's doubled the time of a
        # 10,000-child create.
        sql, order = _compiled_change_insert(conn)
        shared = {} if self._postgres else {"at": _bind(conn, job_changes.c.at, utcnow())}
        rows = [
            {
                "job_id": job.id,
                "parent_id": job.parent_id,
                "version": job.version,
                "snapshot": json.dumps(job_to_dict(job), separators=(",", ":")),
                **shared,
            }
            for job in changed.values()
        ]
        if order is None:
            conn.exec_driver_sql(sql, rows)
        else:
            conn.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])
        if self.notify:
            conn.execute(NOTIFY_CHANGES)

    def _check_lease(self, conn: Connection) -> None:
        if self._fence is None or not self._lease_rows:
            return
        holder, term, _ = self._fence
        if conn.execute(CHECK_LEASE, {"b_name": LEASE_NAME, "b_holder": holder, "b_term": term}).first() is None:
            raise self._lease_lost(conn, "nothing was written")

    def _lease_lost(self, conn: Connection, what: str) -> LeaseLost:
        assert self._fence is not None
        holder, term, _ = self._fence
        row = conn.execute(LEASE_STATE, {"b_name": LEASE_NAME}).first()
        if row is None:
            state = LeaseState(False, "", "", 0, None)
        else:
            state = LeaseState(False, row.holder, row.address, row.term, float(row.expires_in))
        lost = LeaseLost(
            f"this manager ({holder}, term {term}) no longer holds the job store's lease; {what}: "
            f"{state.describe()}",
            state.holder,
            state.address,
            leader=state.leader_hint if state.holder != holder else "",
        )
        if self.on_stop is not None:
            self.on_stop(lost)
        return lost

    def _reconcile(self, token: str, probe: str, lost: BaseException) -> None:
        """The link broke during COMMIT: read the write's marker back from row ``probe``. Returns if the write
        committed; raises StoreUnavailable if it did not, LeaseLost if another manager has the store now
        (whatever happened, it rebuilds from the store), and CommitOutcomeUnknown if the store stays
        unreachable: then every later write of this store raises it too, without writing."""
        for delay in RECONCILE_DELAYS:
            time.sleep(delay)
            try:
                with self._engine.connect() as conn:
                    if self._fence is not None and self._lease_rows:
                        holder, term, _ = self._fence
                        params = {"b_name": LEASE_NAME, "b_holder": holder, "b_term": term}
                        if conn.execute(CHECK_LEASE, params).first() is None:
                            raise self._lease_lost(conn, "a write's COMMIT was cut and cannot be checked")
                    found = conn.execute(*_token_query(probe)).scalar()
            except DBAPIError as error:
                if not _link_lost(error):
                    raise
                continue
            if found == token:
                return
            raise StoreUnavailable(
                f"the job store is unavailable: the connection broke during COMMIT ({_first_line(lost)}); "
                "the write did not commit"
            ) from lost
        self._unsure = CommitOutcomeUnknown(
            f"the job store is unavailable: the connection broke during COMMIT ({_first_line(lost)}) and the "
            "store could not be reached to learn whether the write committed"
        )
        if self.on_stop is not None:
            self.on_stop(self._unsure)
        raise self._unsure from lost

    # -- the store lease

    def stop_writing(self, why: LeaseLost) -> None:
        """From now on every write and renewal of this store raises ``why`` without touching the database (a
        leader that stepped down by itself, its lease possibly still alive in the store). Not undone: the next
        term uses a fresh store."""
        self._stopped = why

    @contextmanager
    def _lease_transaction(self) -> Iterator[Connection]:
        """A transaction of lease statements, bounded by the lease statement timeout (a lock held by a write in
        flight, or a database that does not answer, fails it instead of holding the lease loop up)."""
        with self._transaction() as conn:
            if self._lease_timeout_ms is not None:
                timeout = self._lease_timeout_ms
                conn.execute(LEASE_TIMEOUTS, {"b_timeout": str(timeout)})
            yield conn

    def acquire_lease(self, holder: str, ttl: float, address: str = "") -> LeaseState:
        if not self._lease_rows:
            return self._lock_sqlite(holder, ttl, address)
        params = {"b_name": LEASE_NAME, "b_holder": holder, "b_address": address, "b_ttl": timedelta(seconds=ttl)}
        with self._lease_transaction() as conn:
            conn.execute(
                pg_insert(store_lease)
                .values(name=LEASE_NAME, holder="", address="", term=0, expires_at=func.now())
                .on_conflict_do_nothing(index_elements=[store_lease.c.name])
            )
            taken = conn.execute(TAKE_LEASE, params).first()
            if taken is None:
                row = conn.execute(LEASE_STATE, {"b_name": LEASE_NAME}).one()
                return LeaseState(False, row.holder, row.address, row.term, float(row.expires_in))
        self._fence = (holder, taken.term, ttl)
        return LeaseState(True, holder, address, taken.term, float(taken.expires_in))

    def _lock_sqlite(self, holder: str, ttl: float, address: str) -> LeaseState:
        path = _sqlite_lock_path(self._engine)
        if path is not None and self._lock_file is None:
            self._lock_file = _lock_sqlite_store(path, holder, address)
        self._fence = (holder, 1, ttl)
        return LeaseState(True, holder, address, 1, None)

    def renew_lease(self) -> LeaseState:
        if self._fence is None:
            raise LeaseLost("this store never took the job store's lease")
        if self._stopped is not None:
            raise self._stopped
        holder, term, ttl = self._fence
        if not self._lease_rows:
            return LeaseState(True, holder, "", term, None)
        params = {"b_name": LEASE_NAME, "b_holder": holder, "b_term": term, "b_ttl": timedelta(seconds=ttl)}
        with self._lease_transaction() as conn:
            renewed = conn.execute(RENEW_LEASE, params).first()
            if renewed is None:
                raise self._lease_lost(conn, "it cannot be renewed")
        return LeaseState(True, holder, renewed.address, term, float(renewed.expires_in))

    def release_lease(self) -> None:
        if self._fence is None:
            return
        holder, term, _ = self._fence
        if not self._lease_rows:
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None
            return
        with self._lease_transaction() as conn:
            conn.execute(RELEASE_LEASE, {"b_name": LEASE_NAME, "b_holder": holder, "b_term": term})

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with _store_errors(), self._engine.connect() as conn:
            yield conn

    # -- reads

    def get_job(self, job_id: str) -> Job | None:
        with self._connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            return _row_to_job(row) if row else None

    def get_children(self, parent_id: str) -> list[Job]:
        with self._connect() as conn:
            return self._children(conn, parent_id)

    def children_page(
        self,
        parent_id: str,
        limit: int,
        after_position: int | None = None,
        statuses: Sequence[JobStatus] = (),
    ) -> ChildrenPage:
        with self._connect() as conn:
            return self._children_page(conn, parent_id, limit, after_position, statuses)

    def _children_page(
        self,
        conn: Connection,
        parent_id: str,
        limit: int,
        after_position: int | None = None,
        statuses: Sequence[JobStatus] = (),
    ) -> ChildrenPage:
        params: dict[str, Any] = {
            "b_parent": parent_id,
            "b_after": -1 if after_position is None else after_position,
            "b_limit": limit + 1,
        }
        query = CHILDREN_AFTER
        if statuses:
            query = CHILDREN_AFTER_WITH_STATUS
            params["b_statuses"] = sorted({status.value for status in statuses})
        found = [_row_to_job(r) for r in conn.execute(query, params)]
        return ChildrenPage(found[:limit], len(found) > limit)

    def list_jobs(self, filter: JobFilter, limit: int, before_seq: int | None) -> Page:
        query = select(jobs).order_by(jobs.c.seq.desc()).limit(limit + 1)
        if filter.status is not None:
            query = query.where(jobs.c.status == filter.status.value)
        if filter.type:
            query = query.where(jobs.c.type == filter.type)
        if filter.parent_id:
            query = query.where(jobs.c.parent_id == filter.parent_id)
        if filter.schedule_id:
            query = query.where(jobs.c.schedule_id == filter.schedule_id)
        if before_seq is not None:
            query = query.where(jobs.c.seq < before_seq)
        with self._connect() as conn:
            found = [_row_to_job(r) for r in conn.execute(query)]
        more = len(found) > limit
        page = found[:limit]
        return Page(page, page[-1].seq if more and page else None)

    def changes_after(self, after_seq: int, limit: int) -> list[JobChange]:
        with self._connect() as conn:
            rows = conn.execute(CHANGES_AFTER, {"b_after": after_seq, "b_limit": limit})
            return [_row_to_change(row) for row in rows]

    def last_change_seq(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(job_changes.c.change_seq), 0))).scalar_one())

    def prune_changes(self, kept_for: float) -> int:
        with self._write_transaction() as conn:
            horizon = (
                func.now() - timedelta(seconds=kept_for)
                if self._postgres
                else utcnow() - timedelta(seconds=kept_for)
            )
            return conn.execute(delete(job_changes).where(job_changes.c.at < horizon)).rowcount

    def replace_workers(self, connected: Sequence[WorkerView]) -> None:
        term = self._fence[1] if self._fence is not None else 0
        with self._write_transaction() as conn:
            conn.execute(delete(workers))
            if connected:
                conn.execute(workers.insert(), [_worker_row(worker, term) for worker in connected])

    def list_workers(self) -> list[WorkerView]:
        newest_term = select(func.max(workers.c.term)).scalar_subquery()
        query = select(workers).where(workers.c.term == newest_term).order_by(workers.c.worker_id)
        with self._connect() as conn:
            return [_row_to_worker(row) for row in conn.execute(query)]

    def pending_targets(self) -> list[str]:
        query = (
            select(jobs.c.target)
            .where(jobs.c.status == JobStatus.PENDING.value, jobs.c.type == CHILD_JOB_TYPE)
            .distinct()
        )
        with self._connect() as conn:
            return sorted(target for target in conn.execute(query).scalars() if target is not None)

    def unfinished_children(self) -> list[Job]:
        query = (
            select(jobs).where(jobs.c.type == CHILD_JOB_TYPE, jobs.c.status.in_(UNFINISHED)).order_by(jobs.c.seq)
        )
        with self._connect() as conn:
            return [_row_to_job(r) for r in conn.execute(query)]

    # -- create

    def create_maintenance(self, spec: MaintenanceSpec) -> CreateOutcome:
        try:
            with self._write_transaction() as conn:
                if spec.request_id:
                    existing = self._find_request(conn, spec)
                    if existing is not None:
                        return existing
                return self._insert_maintenance(conn, spec)
        except IntegrityError:
            if not spec.request_id:
                raise
            # Another transaction stored the same request_id first: answer with what it stored.
            with self._transaction() as conn:
                existing = self._find_request(conn, spec)
            if existing is None:
                raise
            return existing

    def _find_request(self, conn: Connection, spec: MaintenanceSpec) -> CreateOutcome | None:
        row = conn.execute(select(jobs).where(jobs.c.request_id == spec.request_id)).first()
        if row is None:
            return None
        if row._mapping["request_fingerprint"] != spec.fingerprint:
            raise RequestIdReused(
                f"request_id {spec.request_id!r} was already used for other targets or operations "
                f"(parent {row._mapping['id']})"
            )
        parent = _row_to_job(row)
        page = self._children_page(conn, parent.id, FIRST_CHILDREN_PAGE)
        return CreateOutcome(parent, page.children, created=False, more_children=page.more)

    def _insert_maintenance(self, conn: Connection, spec: MaintenanceSpec) -> CreateOutcome:
        now = utcnow()
        parent_id = str(uuid.uuid4())
        token = _stamp(conn, parent_id)
        pairs = list(product(spec.targets, spec.operations))
        scope = spec.child_config()
        window = json.dumps(dict(spec.window)) if spec.window is not None else None
        conn.execute(
            jobs.insert().values(
                id=parent_id,
                type=PARENT_JOB_TYPE,
                parent_id=None,
                status=JobStatus.PENDING.value,
                config=json.dumps(
                    {
                        "targets": list(spec.targets),
                        "operations": [str(o) for o in spec.operations],
                        **scope,
                    }
                ),
                request_id=spec.request_id,
                request_fingerprint=spec.fingerprint if spec.request_id else None,
                schedule_id=spec.schedule_id,
                scheduled_time=spec.scheduled_time,
                window=window,
                total=len(pairs),
                pending=len(pairs),
                created_at=now,
                updated_at=now,
                commit_token=token,
            )
        )
        planned = [
            (
                str(uuid.uuid4()),
                position,
                target,
                operation,
                {"operation": str(operation), "target": target, **scope},
            )
            for position, (target, operation) in _round_robin(pairs, len(spec.operations))
        ]
        seqs = self._insert_children(
            conn,
            [
                {
                    "id": child_id,
                    "type": CHILD_JOB_TYPE,
                    "parent_id": parent_id,
                    "status": JobStatus.PENDING.value,
                    "target": target,
                    "operation": str(operation),
                    "position": position,
                    "config": json.dumps(config),
                    "attempt": 1,
                    "max_attempts": spec.max_attempts,
                    "created_at": now,
                    "updated_at": now,
                    "commit_token": token,
                    "schedule_id": spec.schedule_id,
                    "scheduled_time": spec.scheduled_time,
                    "window": window,
                }
                for child_id, position, target, operation, config in planned
            ],
        )
        # The children are built from what was inserted and the seq each got: re-reading and decoding 10,000
        # rows cost more than the insert itself.
        children = [
            Job(
                id=child_id,
                seq=seqs[child_id],
                type=CHILD_JOB_TYPE,
                status=JobStatus.PENDING,
                config=config,
                created_at=now,
                parent_id=parent_id,
                target=target,
                operation=operation,
                position=position,
                attempt=1,
                max_attempts=spec.max_attempts,
                schedule_id=spec.schedule_id,
                scheduled_time=spec.scheduled_time,
                window=spec.window,
            )
            for child_id, position, target, operation, config in planned
        ]
        children.sort(key=lambda child: child.position)
        parent = self._job(conn, parent_id)
        # Its children are no change anyone can miss: no watch of the parent can begin before this commits,
        # and the snapshot every watch begins with carries them.
        _note_changes(conn, [parent])
        return CreateOutcome(parent, children, created=True)

    def _insert_children(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Insert the children of one new parent (all with the same parent_id) in ONE driver executemany, and
        answer the seq each got, by id. SQLAlchemy's executemany processes every value of every row (half a
        second for 10,000 children); here the statement is compiled once per dialect, the shared timestamps
        are converted once, and the rest are plain strings and integers the driver takes as they are."""
        sql, order = _compiled_insert(conn)
        # What every child shares: the column defaults (the driver does not apply them) and the timestamps.
        shared = {name: _bind(conn, name, value) for name, value in CHILD_INSERT_DEFAULTS.items()}
        shared.update((name, _bind(conn, name, rows[0][name])) for name in CHILD_SHARED_COLUMNS)
        if order is None:
            conn.exec_driver_sql(sql, [row | shared for row in rows])
        else:
            conn.exec_driver_sql(sql, [tuple((row | shared)[name] for name in order) for row in rows])
        found = conn.execute(SEQS_OF_CHILDREN, {"b_parent": rows[0]["parent_id"]})
        return {child_id: seq for child_id, seq in found}

    # -- child transitions

    def start_children(self, requests: Sequence[StartRequest]) -> list[Transition]:
        return self.apply_batch((), requests).started

    def finish_child(self, outcome: ChildOutcome) -> Transition | None:
        finished = self.apply_batch([outcome], ()).finished
        return finished[0] if finished else None

    def apply_batch(self, outcomes: Sequence[ChildOutcome], starts: Sequence[StartRequest]) -> BatchOutcome:
        """Results first, then starts, in ONE transaction (group commit): each fenced like its single form,
        every parent's counters moved once. The rows are read once and the answer is built from them."""
        for outcome in outcomes:
            if outcome.status not in state_machine.RESULT_STATUSES:
                raise ValueError(f"a result cannot set status {outcome.status}")
        if not outcomes and not starts:
            return BatchOutcome([], [])
        now = utcnow()
        with self._write_transaction() as conn:
            ids = [o.job_id for o in outcomes] + [r.job_id for r in starts]
            self._lock_parents_of(conn, ids)
            rows = self._find_many(conn, ids, lock=True)
            finished = self._finish_rows(conn, rows, outcomes, now)
            started = self._start_rows(conn, rows, starts, now)
            parents = self._settle_parents(conn, [(b.status, a) for b, a in (*finished, *started)], now)
        return BatchOutcome(
            finished=[Transition(child, parents[child.parent_id or ""]) for _, child in finished],
            started=[Transition(child, parents[child.parent_id or ""]) for _, child in started],
        )

    def _finish_rows(
        self, conn: Connection, rows: dict[str, Job], outcomes: Sequence[ChildOutcome], now: datetime
    ) -> list[tuple[Job, Job]]:
        """(before, after) of the children whose result applies; ``rows`` is updated to the new state."""
        changes: list[tuple[Job, transitions.Changes]] = []
        for outcome in outcomes:
            child = rows.get(outcome.job_id)
            if child is None or not state_machine.result_applies(child, outcome.attempt, outcome.worker_id):
                continue  # stale, someone else's, or already applied earlier in this batch
            state_machine.check_transition(child.status, outcome.status)
            changes.append((child, transitions.finish(outcome, now)))
            rows[child.id] = transitions.applied(*changes[-1])
        self._write_transitions(conn, changes, now)
        return [(before, rows[before.id]) for before, _ in changes]

    def _start_rows(
        self, conn: Connection, rows: dict[str, Job], starts: Sequence[StartRequest], now: datetime
    ) -> list[tuple[Job, Job]]:
        changes: list[tuple[Job, transitions.Changes]] = []
        for request in starts:
            child = rows.get(request.job_id)
            if child is None or not state_machine.start_applies(child, request.attempt):
                continue  # cancelled or changed since it was queued
            changes.append((child, transitions.start(request, now)))
            rows[child.id] = transitions.applied(*changes[-1])
        self._write_transitions(conn, changes, now)
        return [(before, rows[before.id]) for before, _ in changes]

    def _write_transitions(
        self,
        conn: Connection,
        changes: Sequence[tuple[Job, transitions.Changes]],
        now: datetime,
        *,
        fenced: bool = True,
    ) -> None:
        """Write each job's changes, one executemany per set of columns (the caller builds the Job after from
        the same changes: ``transitions.applied``). Fenced, a row is written only if it still has the status
        and attempt it was read with."""
        params: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for before, change in changes:
            values = transitions.column_values(change)
            fence = {"b_was_status": before.status.value, "b_was_attempt": before.attempt} if fenced else {}
            params.setdefault(tuple(values), []).append(
                {
                    **{f"b_{column}": value for column, value in values.items()},
                    **fence,
                    "b_id": before.id,
                    "b_now": now,
                    "b_token": _stamp(conn, before.id),
                }
            )
        for columns, rows in params.items():
            conn.execute(_transition_statement(columns, fenced), rows)
        _note_changes(conn, [transitions.applied(before, change) for before, change in changes])

    # -- parent bookkeeping

    def _settle_parents(
        self,
        conn: Connection,
        changes: Sequence[tuple[JobStatus, Job]],
        now: datetime,
        also: Sequence[str] = (),
    ) -> dict[str, Job]:
        """Move each parent's counters by all its children's changes (status before, child after) at once, then
        settle its status; the parents in ``also`` are settled even if none of their children changed. This is
        the one place parent counters and statuses are written."""
        deltas: dict[str, Counter[str]] = {parent_id: Counter() for parent_id in also}
        for before, after in changes:
            assert after.parent_id is not None
            delta = deltas.setdefault(after.parent_id, Counter())
            delta[state_machine.COUNTER_FOR_STATUS[before]] -= 1
            delta[state_machine.COUNTER_FOR_STATUS[after.status]] += 1
        settled: dict[str, Job] = {}
        settling: list[tuple[Job, transitions.Changes]] = []
        for parent in self._find_many(conn, list(deltas)).values():
            assert parent.progress is not None
            delta = deltas[parent.id]
            progress = Progress(
                total=parent.progress.total,
                **{name: getattr(parent.progress, name) + delta[name] for name in transitions.PROGRESS_COUNTERS},
            )
            status = state_machine.parent_status(parent.status, progress, parent.cancel_requested)
            if progress == parent.progress and status is parent.status:
                settled[parent.id] = parent
                continue
            # Only the failed ones, only when it ends: reading every child of a 10,000-child parent here stalled
            # its last turn.
            ends = transitions.finishes(parent, status)
            failed = self._children(conn, parent.id, JobStatus.FAILED) if ends else []
            settling.append((parent, transitions.settle(parent, progress, status, now, failed)))
            settled[parent.id] = transitions.applied(*settling[-1])
        self._write_transitions(conn, settling, now, fenced=False)
        return settled

    def release_child(self, job_id: str, attempt: int, why: str) -> Transition | None:
        now = utcnow()
        with self._write_transaction() as conn:
            child = self._lock_family(conn, job_id)
            if child is None or child.status is not JobStatus.RUNNING or child.attempt != attempt:
                return None
            change = transitions.release(child, why, now)
            state_machine.check_transition(child.status, change["status"])
            self._write_transitions(conn, [(child, change)], now)
            after = transitions.applied(child, change)
            parents = self._settle_parents(conn, [(child.status, after)], now)
            return Transition(after, parents[child.parent_id or ""])

    # -- cancel

    def cancel_job(self, job_id: str, reason: str) -> CancelOutcome:
        now = utcnow()
        with self._write_transaction() as conn:
            job = self._lock_family(conn, job_id)
            if job is None:
                raise JobNotFound(job_id)
            if job.status.is_terminal:
                raise JobAlreadyFinished(job_id, job.status.value)
            if job.is_parent:
                return self._cancel_parent(conn, job, reason, now)
            return self._cancel_child(conn, job, reason, now)

    def _cancel_parent(self, conn: Connection, parent: Job, reason: str, now: datetime) -> CancelOutcome:
        # Settling re-reads the parent: it must see the cancel request to end CANCELLED.
        self._write_to_all(conn, [parent], transitions.request_parent_cancel(reason), now)
        children = self._children(conn, parent.id)
        running = self._write_to_all(
            conn, [c for c in children if c.status is JobStatus.RUNNING], transitions.request_cancel(), now
        )
        changed = self._cancel_pending(conn, [c for c in children if c.status is JobStatus.PENDING], reason, now)
        cancelled = [(JobStatus.PENDING, child) for child in changed]
        parent_after = self._settle_parents(conn, cancelled, now, also=[parent.id])[parent.id]
        return CancelOutcome(job=parent_after, changed=[parent_after, *changed], to_interrupt=running)

    def _cancel_child(self, conn: Connection, child: Job, reason: str, now: datetime) -> CancelOutcome:
        assert child.parent_id is not None
        if child.status is JobStatus.RUNNING:
            [child_after] = self._write_to_all(conn, [child], transitions.request_cancel(), now)
            return CancelOutcome(job=child_after, changed=[child_after], to_interrupt=[child_after])
        changed = self._cancel_pending(conn, [child], reason, now)
        parent_after = self._settle_parents(conn, [(JobStatus.PENDING, c) for c in changed], now)[child.parent_id]
        return CancelOutcome(job=changed[0], changed=[*changed, parent_after])

    def _cancel_pending(self, conn: Connection, pending: list[Job], reason: str, now: datetime) -> list[Job]:
        """PENDING -> CANCELLED (the caller moves the parent's counters); the children never run."""
        change = transitions.cancel_pending(reason, now)
        return self._write_to_all(conn, pending, change, now, only=JobStatus.PENDING)

    def _write_to_all(
        self,
        conn: Connection,
        before: Sequence[Job],
        change: transitions.Changes,
        now: datetime,
        *,
        only: JobStatus | None = None,
    ) -> list[Job]:
        """Write the same change to every job of ``before`` in one UPDATE (with ``only``, to the rows still in
        that status) and answer the jobs after it, built from the same change. The rows were read under the
        family's lock: the UPDATE finds them as they were read."""
        if not before:
            return []
        ids = [job.id for job in before]
        where = [jobs.c.id.in_(ids)] + ([jobs.c.status == only.value] if only is not None else [])
        conn.execute(
            update(jobs)
            .where(*where)
            .values(
                **transitions.column_values(change),
                updated_at=now,
                version=jobs.c.version + 1,
                commit_token=_stamp(conn, ids[0]),
            )
        )
        after = [transitions.applied(job, change) for job in before]
        _note_changes(conn, after)
        return after

    # -- row locks (PostgreSQL; SQLite serializes writers on the whole file)
    #
    # Lock order is always parent, then child, so two transactions on one family (a result and a cancel, say)
    # queue behind each other instead of deadlocking.

    def _lock_family(self, conn: Connection, job_id: str) -> Job | None:
        """Lock the job's parent (or the job, if it is a parent), then return the job read under its lock."""
        job = self._find(conn, job_id)
        if job is None or not self._lock_rows:
            return job
        self._lock_ids(conn, [job.parent_id or job.id])
        return self._find(conn, job_id, lock=True)

    def _lock_parents_of(self, conn: Connection, child_ids: Sequence[str]) -> None:
        if not self._lock_rows or not child_ids:
            return
        parents: set[str] = set()
        for chunk in _chunks(sorted(set(child_ids))):
            parents.update(p for p in conn.execute(PARENTS_OF, {"ids": chunk}).scalars() if p is not None)
        self._lock_ids(conn, list(parents))

    def _lock_ids(self, conn: Connection, job_ids: Sequence[str]) -> None:
        # Chunks in id order: rows are still locked in one global order, so two transactions cannot deadlock.
        for chunk in _chunks(sorted(set(job_ids))):
            conn.execute(LOCK_IDS, {"ids": chunk})

    # -- schedules

    def create_schedule(self, spec: ScheduleSpec, paused: bool) -> Schedule:
        now = utcnow()
        key = str(uuid.uuid4())
        try:
            with self._write_transaction() as conn:
                conn.execute(
                    schedules.insert().values(
                        key=key,
                        id=spec.id,
                        live_id=spec.id,
                        spec=json.dumps(spec.to_dict()),
                        paused=paused,
                        version=1,
                        created_at=now,
                        updated_at=now,
                        commit_token=_stamp_schedule(conn, key),
                    )
                )
        except IntegrityError:
            raise ScheduleExists(spec.id) from None
        return Schedule(key=key, spec=spec, paused=paused, created_at=now, updated_at=now)

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        with self._connect() as conn:
            row = conn.execute(select(schedules).where(schedules.c.live_id == schedule_id)).first()
        return _row_to_schedule(row) if row else None

    def list_schedules(self, limit: int, after_id: str | None) -> list[Schedule]:
        query = select(schedules).where(schedules.c.live_id.is_not(None)).order_by(schedules.c.live_id)
        if after_id is not None:
            query = query.where(schedules.c.live_id > after_id)
        with self._connect() as conn:
            return [_row_to_schedule(row) for row in conn.execute(query.limit(limit))]

    def update_schedule(self, schedule_id: str, spec: ScheduleSpec, paused: bool) -> Schedule:
        with self._write_transaction() as conn:
            current = self._live_schedule(conn, schedule_id)
            now = utcnow()
            conn.execute(
                update(schedules)
                .where(schedules.c.key == current.key)
                .values(
                    spec=json.dumps(spec.to_dict()),
                    paused=paused,
                    version=current.version + 1,
                    updated_at=now,
                    commit_token=_stamp_schedule(conn, current.key),
                )
            )
        return replace(current, spec=spec, paused=paused, version=current.version + 1, updated_at=now)

    def delete_schedule(self, schedule_id: str) -> None:
        with self._write_transaction() as conn:
            current = self._live_schedule(conn, schedule_id)
            now = utcnow()
            conn.execute(
                update(schedules)
                .where(schedules.c.key == current.key)
                .values(
                    live_id=None,
                    deleted_at=now,
                    version=current.version + 1,
                    updated_at=now,
                    commit_token=_stamp_schedule(conn, current.key),
                )
            )

    def record_firings(self, plan: FiringPlan) -> FiringsOutcome:
        fired = [record for record in plan.records if record.outcome is FiringOutcome.FIRED]
        if len(fired) > 1 or (plan.fire is None) != (not fired):
            raise ValueError("a plan fires at most one slot, and creates a parent exactly when it fires")
        try:
            with self._write_transaction() as conn:
                return self._record_firings(conn, plan, fired[0] if fired else None)
        except IntegrityError:
            raise SlotAlreadyRecorded(f"a slot of schedule {plan.schedule_key} already has a firing") from None

    def _record_firings(self, conn: Connection, plan: FiringPlan, fired: FiringRecord | None) -> FiringsOutcome:
        now = utcnow()
        current = self._schedule_at(conn, plan.schedule_key, plan.version)
        created = None
        if fired is not None:
            assert plan.fire is not None
            spec = replace(plan.fire, schedule_id=current.id, scheduled_time=fired.scheduled_time)
            created = self._insert_maintenance(conn, spec)
        last_slot = max(
            (moment for moment in (current.last_slot, plan.last_slot) if moment is not None), default=None
        )
        after = replace(
            current,
            version=current.version + 1,
            updated_at=now,
            last_slot=last_slot,
            buffered_slot=plan.buffered_slot,
            last_parent_id=created.parent.id if created else current.last_parent_id,
        )
        conn.execute(
            update(schedules)
            .where(schedules.c.key == current.key)
            .values(
                version=after.version,
                updated_at=now,
                last_slot=after.last_slot,
                buffered_slot=after.buffered_slot,
                last_parent_id=after.last_parent_id,
                commit_token=_stamp_schedule(conn, current.key),
            )
        )
        firings = [
            Firing(
                schedule_key=current.key,
                schedule_id=current.id,
                scheduled_time=record.scheduled_time,
                outcome=record.outcome,
                recorded_at=now,
                parent_id=created.parent.id if created and record is fired else None,
                reason=record.reason,
                missed_count=record.missed_count,
            )
            for record in plan.records
        ]
        if firings:
            conn.execute(
                schedule_firings.insert(),
                [
                    {
                        "schedule_key": f.schedule_key,
                        "scheduled_time": f.scheduled_time,
                        "outcome": f.outcome.value,
                        "parent_id": f.parent_id,
                        "reason": f.reason,
                        "missed_count": f.missed_count,
                        "recorded_at": now,
                        "commit_token": _stamp_schedule(conn, current.key),
                    }
                    for f in firings
                ],
            )
        return FiringsOutcome(firings, created, after)

    def list_firings(
        self, schedule_id: str, limit: int, before_seq: int | None
    ) -> tuple[list[Firing], int | None]:
        with self._transaction() as conn:
            current = self._live_schedule(conn, schedule_id)
            query = (
                select(schedule_firings)
                .where(schedule_firings.c.schedule_key == current.key)
                .order_by(schedule_firings.c.seq.desc())
                .limit(limit + 1)
            )
            if before_seq is not None:
                query = query.where(schedule_firings.c.seq < before_seq)
            rows = list(conn.execute(query))
        page = rows[:limit]
        more = len(rows) > limit and bool(page)
        return [_row_to_firing(row, current.id) for row in page], (page[-1]._mapping["seq"] if more else None)

    def _live_schedule(self, conn: Connection, schedule_id: str) -> Schedule:
        query = select(schedules).where(schedules.c.live_id == schedule_id)
        if self._lock_rows:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise ScheduleNotFound(schedule_id)
        return _row_to_schedule(row)

    def _schedule_at(self, conn: Connection, key: str, version: int) -> Schedule:
        """The live schedule ``key`` locked for this transaction, if it is still at ``version``."""
        query = select(schedules).where(schedules.c.key == key)
        if self._lock_rows:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None or row._mapping["live_id"] is None:
            raise ScheduleChanged(f"schedule {key} was deleted")
        found = _row_to_schedule(row)
        if found.version != version:
            raise ScheduleChanged(f"schedule {found.id} changed (version {found.version}, planned on {version})")
        return found

    # -- row helpers

    def _find(self, conn: Connection, job_id: str, *, lock: bool = False) -> Job | None:
        query = select(jobs).where(jobs.c.id == job_id)
        if lock and self._lock_rows:
            query = query.with_for_update()
        row = conn.execute(query).first()
        return _row_to_job(row) if row else None

    def _find_many(self, conn: Connection, job_ids: Sequence[str], *, lock: bool = False) -> dict[str, Job]:
        found: dict[str, Job] = {}
        query = FIND_BY_IDS_LOCKED if lock and self._lock_rows else FIND_BY_IDS
        for chunk in _chunks(sorted(set(job_ids))):
            found.update((job.id, job) for job in map(_row_to_job, conn.execute(query, {"ids": chunk})))
        return found

    def _job(self, conn: Connection, job_id: str, *, lock: bool = False) -> Job:
        job = self._find(conn, job_id, lock=lock)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _children(self, conn: Connection, parent_id: str, status: JobStatus | None = None) -> list[Job]:
        query = select(jobs).where(jobs.c.parent_id == parent_id).order_by(jobs.c.position)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        return [_row_to_job(r) for r in conn.execute(query)]

    def count_jobs(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())
