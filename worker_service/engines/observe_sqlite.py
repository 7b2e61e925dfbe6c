"""The SQLite observer: the file's free list, and each table's statistics in ``sqlite_stat1``.

* The whole file (schema "main", table ""): VACUUM (reason ``freelist``) once ``freelist_count / page_count``
  and ``freelist_count`` reach ``Thresholds.freelist_min_ratio``/``freelist_min_pages``; else SKIP. The evidence
  carries ``auto_vacuum_mode`` (0 none, 1 full, 2 incremental): in full mode the free list stays near empty.
* Each table in scope: ANALYZE (reason ``stale_statistics``) when it holds rows but ``sqlite_stat1`` (absent
  before the first ANALYZE) has no row for it or for one of its indexes; else SKIP.

Cheap: pragmas, ``sqlite_schema`` and ``sqlite_stat1``; the only look at a table's rows is ``LIMIT 1`` (is it
empty?), which reads one page.
"""

from __future__ import annotations

import sqlite3

from dbmaint.operations import Reason, TableAction, TableScope
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from worker_service.engines.observe import (
    TableObservation,
    by_urgency,
    in_scope,
    ratio,
    skip,
)
from worker_service.engines.sqlite import quote_identifier

SCHEMA = "main"


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute(f"PRAGMA {SCHEMA}.{name}").fetchone()
    return int(row[0]) if row else 0


def _file(conn: sqlite3.Connection, thresholds: Thresholds) -> TableObservation:
    pages, free = _pragma(conn, "page_count"), _pragma(conn, "freelist_count")
    page_size = _pragma(conn, "page_size")
    evidence = {
        "page_count": float(pages),
        "free_pages": float(free),
        "free_ratio": ratio(free, pages),
        "free_bytes": float(free * page_size),
        "page_size_bytes": float(page_size),
        "auto_vacuum_mode": float(_pragma(conn, "auto_vacuum")),
        "freelist_min_ratio": thresholds.freelist_min_ratio,
        "freelist_min_pages": thresholds.freelist_min_pages,
    }
    if free >= thresholds.freelist_min_pages and evidence["free_ratio"] >= thresholds.freelist_min_ratio:
        reasons = (Reason.FREELIST.value,)
        return TableObservation(SCHEMA, "", TableAction.VACUUM, reasons, evidence, evidence["free_ratio"])
    return skip(SCHEMA, "", evidence)


def _statistics_rows(conn: sqlite3.Connection) -> set[tuple[str, str | None]] | None:
    """(table, index) pairs in sqlite_stat1; None when it does not exist (never analyzed)."""
    exists = conn.execute(f"SELECT 1 FROM {SCHEMA}.sqlite_schema WHERE name = 'sqlite_stat1'").fetchone()
    if exists is None:
        return None
    return {(str(tbl), idx) for tbl, idx in conn.execute(f"SELECT tbl, idx FROM {SCHEMA}.sqlite_stat1")}


def _table(
    conn: sqlite3.Connection, table: str, indexes: list[str], stats: set[tuple[str, str | None]] | None
) -> TableObservation:
    rows = stats or set()
    analyzed = any(name == table for name, _ in rows)
    unanalyzed_indexes = [index for index in indexes if (table, index) not in rows]
    empty = conn.execute(f"SELECT 1 FROM {SCHEMA}.{quote_identifier(table)} LIMIT 1").fetchone() is None
    evidence = {
        "has_statistics": float(analyzed),
        "statistics_table_exists": float(stats is not None),
        "indexes": float(len(indexes)),
        "indexes_without_statistics": float(len(unanalyzed_indexes)),
        "empty": float(empty),
    }
    if not empty and (not analyzed or unanalyzed_indexes):
        urgency = float(len(unanalyzed_indexes) + (not analyzed))
        reasons = (Reason.STALE_STATISTICS.value,)
        return TableObservation(SCHEMA, table, TableAction.ANALYZE, reasons, evidence, urgency)
    return skip(SCHEMA, table, evidence)


def observe_sqlite(
    conn: sqlite3.Connection, scope: TableScope, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[TableObservation]:
    """The file's free list (always: VACUUM covers the whole file) and the statistics of each table in
    ``scope`` (schema "main" only), most urgent first. OperationFailed names an unknown table."""
    catalog: list[tuple[str, str]] = []
    indexes: dict[str, list[str]] = {}
    listed = conn.execute(
        f"SELECT type, name, tbl_name FROM {SCHEMA}.sqlite_schema WHERE type IN ('table', 'index') "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    )
    for kind, name, table in listed.fetchall():
        if kind == "table":
            catalog.append((SCHEMA, str(name)))
        else:
            indexes.setdefault(str(table), []).append(str(name))
    stats = _statistics_rows(conn)
    observations = [_file(conn, thresholds)]
    for _, table in in_scope(catalog, scope, [SCHEMA]):
        observations.append(_table(conn, table, indexes.get(table, []), stats))
    return by_urgency(observations)
