"""``make-demo-db`` on PostgreSQL: a table whose dead tuples VACUUM removes.

The table has the shape of the SQLite demo's ``events`` (an id, a kind, a timestamp, a blob of 112-304 bytes, an
index on ``(kind, created)``), under a name no application uses: ``dbmaint_demo_events``. It is created with
``autovacuum_enabled = off`` (autovacuum would otherwise clean it up first), filled with ``rows`` rows, and the
older half deleted -- all in one transaction, so a reader sees no table or the whole one, and ``--force``
replaces an existing table atomically. Only that table is touched; the database must exist.

The dead tuples show in ``pg_stat_user_tables.n_dead_tup`` as soon as the command returns: before it
disconnects it asks the server to flush its statistics (``pg_stat_force_next_flush()``, PostgreSQL >= 15);
older servers publish them within about a second.

A password in the URL is visible in ``ps``: leave it out and let libpq read ``PGPASSWORD`` or ``~/.pgpass``.
Messages show the URL with its password masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from dbmaint.cli.client import EXIT_FAILURE, EXIT_REJECTED, CliError
from dbmaint.cli.demo import DEMO_TABLE
from dbmaint.cli.render_tables import format_bytes

DEMO_INDEX = f"{DEMO_TABLE}_kind_created"
APPLICATION_NAME = "dbmaint make-demo-db"
CONNECT_TIMEOUT = 10
# Serialises concurrent make-demo-db runs on one database, so --exist-ok never races a creation.
ADVISORY_LOCK_KEY = "dbmaint make-demo-db"

_BUILD = (
    f"""
    CREATE TABLE {DEMO_TABLE} (
        id bigint PRIMARY KEY,
        kind text NOT NULL,
        created timestamptz NOT NULL,
        payload bytea NOT NULL
    ) WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off)
    """,
    f"CREATE INDEX {DEMO_INDEX} ON {DEMO_TABLE} (kind, created)",
)
_FILL = f"""
    INSERT INTO {DEMO_TABLE} (id, kind, created, payload)
    SELECT x, 'kind-' || (x % 17), to_timestamp(1700000000 + x * 7.5),
           decode(repeat(md5(random()::text), 7 + (x % 13)::int), 'hex')
    FROM generate_series(1, CAST(:rows AS bigint)) AS x
"""
_FIGURES = """
    SELECT pg_catalog.pg_total_relation_size(c.oid), pg_catalog.pg_stat_get_live_tuples(c.oid),
           pg_catalog.pg_stat_get_dead_tuples(c.oid)
    FROM pg_catalog.pg_class c WHERE c.oid = CAST(:name AS regclass)
"""


@dataclass(frozen=True)
class PostgresDemoStats:
    """Figures of the demo table: its size with indexes and TOAST, and its live and dead tuples."""

    size: int
    live_tuples: int
    dead_tuples: int


def parse_database_url(text_url: str) -> URL:
    """A SQLAlchemy URL given to make-demo-db: SQLite or PostgreSQL (psycopg). Errors never quote the URL."""
    try:
        url = make_url(text_url)
    except (ArgumentError, ValueError) as error:
        raise CliError(f"not a valid SQLAlchemy URL ({type(error).__name__})", EXIT_REJECTED) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise CliError(
                "a SQLite URL must name a file: sqlite:///relative.db or sqlite:////abs.db", EXIT_REJECTED
            )
        return url
    if backend != "postgresql":
        raise CliError(
            f"make-demo-db makes a SQLite file or a PostgreSQL table, not a {backend!r} database", EXIT_REJECTED
        )
    if url.drivername not in ("postgresql", "postgresql+psycopg"):
        raise CliError(
            f"PostgreSQL URLs use the psycopg driver (postgresql+psycopg://), not {url.get_driver_name()!r}",
            EXIT_REJECTED,
        )
    if not url.database:
        raise CliError(f"{mask(url)}: the URL names no database", EXIT_REJECTED)
    return url.set(drivername="postgresql+psycopg")


def mask(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def make_demo_postgres(
    url: URL, rows: int, *, if_exists: Literal["fail", "replace", "keep"] = "fail"
) -> tuple[PostgresDemoStats, bool]:
    """Creates the demo table in the PostgreSQL database of ``url`` (see the module docstring). Returns its figures
    and whether it was created (False: ``if_exists="keep"`` left an existing table alone)."""
    if rows < 2:
        raise CliError("--rows must be at least 2", EXIT_REJECTED)
    connect_args: dict[str, Any] = {"application_name": APPLICATION_NAME}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            return _make(conn, url, rows, if_exists)
    except SQLAlchemyError as error:
        raise CliError(f"cannot create the demo table in {mask(url)}: {_reason(error)}", EXIT_FAILURE) from None
    finally:
        engine.dispose()


def _make(conn: Connection, url: URL, rows: int, if_exists: str) -> tuple[PostgresDemoStats, bool]:
    conn.execute(
        text("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(:key))"), {"key": ADVISORY_LOCK_KEY}
    )
    exists = conn.execute(text("SELECT pg_catalog.to_regclass(:name) IS NOT NULL"), {"name": DEMO_TABLE}).scalar()
    if exists and if_exists == "keep":
        conn.rollback()
        conn.execute(text("SELECT pg_catalog.pg_stat_clear_snapshot()"))
        size, live, dead = conn.execute(text(_FIGURES), {"name": DEMO_TABLE}).one()
        conn.rollback()
        return PostgresDemoStats(size=size, live_tuples=live, dead_tuples=dead), False
    if exists and if_exists == "fail":
        raise CliError(
            f"table {DEMO_TABLE} already exists in {mask(url)} (pass --force to replace it)", EXIT_REJECTED
        )
    if exists:
        conn.execute(text(f"DROP TABLE {DEMO_TABLE}"))
    for statement in _BUILD:
        conn.execute(text(statement))
    conn.execute(text(_FILL), {"rows": rows})
    deleted = conn.execute(text(f"DELETE FROM {DEMO_TABLE} WHERE id <= :half"), {"half": rows // 2}).rowcount
    conn.commit()
    _publish_statistics(conn)
    # The size only: counting rows would read every page (and prune some); the DELETE counted the dead tuples.
    size = conn.execute(
        text("SELECT pg_catalog.pg_total_relation_size(CAST(:name AS regclass))"), {"name": DEMO_TABLE}
    )
    stats = PostgresDemoStats(size=size.scalar_one(), live_tuples=rows - deleted, dead_tuples=deleted)
    conn.rollback()
    return stats, True


def _publish_statistics(conn: Connection) -> None:
    """Flush this session's statistics at its next idle moment (the COMMIT below), not up to 10 s later."""
    if conn.dialect.server_version_info is None or conn.dialect.server_version_info < (15,):
        return
    conn.execute(text("SELECT pg_catalog.pg_stat_force_next_flush()"))
    conn.commit()


def _reason(error: SQLAlchemyError) -> str:
    """The driver's first line (SQLAlchemy's message adds the statement and its parameters)."""
    original = getattr(error, "orig", None)
    lines = str(original if original is not None else error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def describe_demo_table(url: URL, stats: PostgresDemoStats) -> str:
    return (
        f"{mask(url)} table {DEMO_TABLE}: {format_bytes(stats.size)}, {stats.live_tuples} live rows, "
        f"{stats.dead_tuples} dead tuples (autovacuum off: VACUUM removes them)"
    )
