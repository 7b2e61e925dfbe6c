"""Tables with real dead tuples in a fresh PostgreSQL database, and catalog readers for the engine tests.

Statistics: since PostgreSQL 15 a backend's counts reach shared memory when it goes idle, at most about once a
second, and for sure when it exits. ``make_table`` asks for the next flush (``pg_stat_force_next_flush``) and
closes its connection; ``wait_stats`` then polls ``pg_stat_user_tables`` until the numbers are there.
VACUUM and ANALYZE report their own figures at once. ``exact_dead_tuples`` counts on the pages themselves
(``pgstattuple``), independent of the statistics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from dbmaint.operations import Operation, OperationReport, TableScope
from tests.support.polling import wait_for
from worker_service.cancel import CancelToken
from worker_service.engines.postgresql import APPLICATION_NAME, PostgresqlEngine
from worker_service.faults import FaultPlan

Row = tuple[Any, ...]


def connect(url: URL, autocommit: bool = True) -> psycopg.Connection[Row]:
    """A plain psycopg connection to the database of ``url`` (independent of the engine's own code)."""
    return psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        autocommit=autocommit,
        application_name="dbmaint-tests",
    )


def query(url: URL, text: str, params: tuple[Any, ...] | None = None) -> list[Row]:
    with connect(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute(text.encode(), params).fetchall()


def scalar(url: URL, text: str, params: tuple[Any, ...] | None = None) -> Any:
    rows = query(url, text, params)
    return rows[0][0] if rows else None


def make_table(
    url: URL,
    name: str,
    rows: int,
    *,
    delete: str | None = None,
    schema: str = "public",
    analyze: bool = False,
    after: str = "",
) -> None:
    """``schema.name`` (id primary key, payload text with an index ``<name>_payload``) with ``rows`` rows,
    autovacuum off; ``delete`` = "tail" (the upper half: VACUUM can truncate it), "even" (every other row) or
    a WHERE clause; ``analyze`` first if asked (reltuples known), then ``after`` (SQL, e.g. an UPDATE)."""
    ident = sql.Identifier(schema, name)
    with connect(url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id int PRIMARY KEY, payload text NOT NULL) WITH (autovacuum_enabled = off)"
            ).format(ident)
        )
        conn.execute(sql.SQL("CREATE INDEX {} ON {} (payload)").format(sql.Identifier(f"{name}_payload"), ident))
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, %s) g").format(
                ident
            ),
            (rows,),
        )
        if analyze:
            # The insert's counts first (flushed when this statement ends), or they would land after ANALYZE.
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute(sql.SQL("ANALYZE {}").format(ident))
        where = {"tail": f"id > {rows // 2}", "even": "id % 2 = 0"}.get(delete or "", delete)
        if where:
            conn.execute(sql.SQL("DELETE FROM {} WHERE ").format(ident) + sql.SQL(where))
        if after:
            conn.execute(after.encode())
        conn.execute("SELECT pg_stat_force_next_flush()")


def table_stats(url: URL, table: str) -> dict[str, Any]:
    """The pg_stat_user_tables row of ``table`` ("schema.name" or "name"), read fresh."""
    schema, _, name = table.rpartition(".")
    with connect(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = conn.execute(
            "SELECT n_dead_tup, n_live_tup, n_mod_since_analyze, last_vacuum, last_analyze, vacuum_count, "
            "analyze_count FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
            (schema or "public", name),
        )
        row = cur.fetchone()
        assert row is not None, f"no statistics row for {table}"
        assert cur.description is not None
        return {column.name: value for column, value in zip(cur.description, row, strict=True)}


def wait_stats(url: URL, table: str, timeout: float = 15.0, **expected: int) -> dict[str, Any]:
    """Poll until the statistics of ``table`` show ``expected`` (e.g. n_dead_tup=500)."""
    return wait_for(
        lambda: (stats := table_stats(url, table)) and all(stats[k] == v for k, v in expected.items()) and stats,
        timeout=timeout,
        message=lambda: f"statistics of {table} never showed {expected}: {table_stats(url, table)}",
    )


def has_pgstattuple(url: URL) -> bool:
    try:
        with connect(url) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        return True
    except psycopg.Error:
        return False


def exact_dead_tuples(url: URL, table: str) -> int | None:
    """Dead tuples counted on the pages (pgstattuple), or None when the extension is not available."""
    if not has_pgstattuple(url):
        return None
    return int(scalar(url, "SELECT dead_tuple_count FROM pgstattuple(%s::regclass)", (table,)))


def dead_tuples(url: URL, table: str) -> int:
    """Dead tuples of ``table``: counted on the pages if pgstattuple is there, else the statistics."""
    exact = exact_dead_tuples(url, table)
    return exact if exact is not None else int(table_stats(url, table)["n_dead_tup"])


def relation_size(url: URL, table: str) -> int:
    return int(scalar(url, "SELECT pg_total_relation_size(%s::regclass)", (table,)))


def index_filenodes(url: URL, table: str) -> dict[str, int]:
    rows = query(
        url,
        "SELECT c.relname, pg_relation_filenode(c.oid) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass",
        (table,),
    )
    return {str(name): int(node) for name, node in rows}


def worker_backends(url: URL) -> list[Row]:
    """(pid, state, query) of the engine's connections to this database."""
    return query(
        url,
        "SELECT pid, state, query FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        (url.database, APPLICATION_NAME),
    )


def run_engine(
    url: URL,
    operation: Operation,
    scope: TableScope | None = None,
    *,
    slow: float = 0.0,
    cancel: CancelToken | None = None,
    deadline: Any = None,
) -> OperationReport:
    faults = FaultPlan(slow={operation.value: slow}) if slow else FaultPlan()
    return PostgresqlEngine(faults).run(operation, url, cancel or CancelToken(), deadline, scope or TableScope())


def table_notes(report: OperationReport) -> list[str]:
    """The per-table notes, in processing order."""
    return [note for note in report.notes if note.startswith(("table ", "skipped table ", "failed table "))]


def note_for(report: OperationReport, table: str) -> str:
    found = [n for n in table_notes(report) if n.split(":", 1)[0].split(" ")[-1] == table]
    assert len(found) == 1, f"no single note for {table}: {report.notes}"
    return found[0]


@dataclass
class Background:
    """An engine run on another thread: its result or exception, and when it ended."""

    thread: threading.Thread
    result: OperationReport | None = None
    error: BaseException | None = None
    ended_at: float | None = None

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the engine still runs after {timeout}s"


def in_background(run: Callable[[], OperationReport]) -> Background:
    def target() -> None:
        try:
            background.result = run()
        except BaseException as exc:
            background.error = exc
        finally:
            background.ended_at = time.monotonic()

    background = Background(threading.Thread(target=target, daemon=True))
    background.thread.start()
    return background


@contextmanager
def locked(url: URL, table: str, mode: str = "ACCESS EXCLUSIVE") -> Iterator[psycopg.Connection[Row]]:
    """Another session holding ``LOCK TABLE table IN mode MODE`` in an open transaction."""
    conn = connect(url, autocommit=False)
    try:
        conn.execute(sql.SQL(f"LOCK TABLE {{}} IN {mode} MODE").format(sql.Identifier(*table.split("."))))
        yield conn
    finally:
        conn.rollback()
        conn.close()


@contextmanager
def slow_vacuums(url: URL, delay: str = "20ms") -> Iterator[None]:
    """New sessions of this database run VACUUM slowly: a database-level ``vacuum_cost_delay`` with
    ``vacuum_cost_limit = 1`` makes VACUUM sleep after almost every page (up to 4 x the delay for a page it
    dirties). Sessions already open keep their settings; the settings are reset at the end."""
    database = sql.Identifier(str(url.database))
    with connect(url) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET vacuum_cost_delay = {}").format(database, sql.Literal(delay)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET vacuum_cost_limit = 1").format(database))
    try:
        yield
    finally:
        with connect(url) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET vacuum_cost_delay").format(database))
            conn.execute(sql.SQL("ALTER DATABASE {} RESET vacuum_cost_limit").format(database))


def vacuum_progress(url: URL) -> list[Row]:
    """(pid, phase, heap_blks_scanned, heap_blks_total) of every VACUUM running in this database now."""
    return query(
        url,
        "SELECT pid, phase, heap_blks_scanned, heap_blks_total FROM pg_stat_progress_vacuum WHERE datname = %s",
        (url.database,),
    )
