"""The MariaDB observer: free space inside each table (``DATA_FREE``) and whether a rebuild would return it.

Per base table in scope, from ``information_schema.TABLES``: ``DATA_FREE`` against ``DATA_LENGTH +
INDEX_LENGTH + DATA_FREE``, the engine and the row count (an estimate for InnoDB). OPTIMIZE (reason
``data_free``) once the free share and bytes reach ``Thresholds.data_free_min_ratio``/``data_free_min_bytes``.

A rebuild gives space back to the file system only when the table has its own file: an InnoDB table in the
system tablespace (space 0 in ``information_schema.INNODB_SYS_TABLES``, e.g. created while
``innodb_file_per_table`` was OFF) keeps its pages in ibdata, so its observation is a SKIP with reasons
``data_free`` and ``no_space_returned``. When that view cannot be read (it needs the PROCESS privilege), the
server's ``innodb_file_per_table`` stands for every table.

Evidence: ``data_free_bytes``, ``data_bytes``, ``index_bytes``, ``data_free_ratio``, ``rows``,
``file_per_table`` (0/1), ``in_system_tablespace`` (0/1), ``engine_<name>`` = 1 (e.g. ``engine_innodb``), and
the two thresholds. Reads only; the default scope is the connection's database.
"""

from __future__ import annotations

from typing import Any

import pymysql

from dbmaint.operations import Reason, TableAction, TableScope
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from worker_service.engines.base import OperationFailed
from worker_service.engines.observe import (
    TableObservation,
    by_urgency,
    in_scope,
    ratio,
    skip,
)

SYSTEM_SCHEMAS = frozenset({"information_schema", "mysql", "performance_schema", "sys"})
TABLES_SQL = (
    "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(ENGINE, ''), COALESCE(TABLE_ROWS, 0), COALESCE(DATA_LENGTH, 0),"
    " COALESCE(INDEX_LENGTH, 0), COALESCE(DATA_FREE, 0) FROM information_schema.TABLES"
    " WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME"
)
SPACES_SQL = "SELECT NAME, SPACE FROM information_schema.INNODB_SYS_TABLES"


def _rows(cursor: Any, statement: str) -> list[tuple[Any, ...]]:
    cursor.execute(statement)
    return list(cursor.fetchall())


def _system_tablespace_tables(cursor: Any) -> set[str] | None:
    """InnoDB tables in the system tablespace, as "schema/table"; None when the view cannot be read."""
    try:
        return {str(name) for name, space in _rows(cursor, SPACES_SQL) if int(space) == 0}
    except pymysql.MySQLError:
        return None


def _observe(
    row: tuple[Any, ...], file_per_table: bool, in_system: bool, thresholds: Thresholds
) -> TableObservation:
    schema, table, engine, rows, data, index, free = row
    evidence = {
        "data_free_bytes": float(free),
        "data_bytes": float(data),
        "index_bytes": float(index),
        "data_free_ratio": ratio(float(free), float(data + index + free)),
        "rows": float(rows),
        "file_per_table": float(file_per_table),
        "in_system_tablespace": float(in_system),
        f"engine_{str(engine).lower() or 'unknown'}": 1.0,
        "data_free_min_ratio": thresholds.data_free_min_ratio,
        "data_free_min_bytes": thresholds.data_free_min_bytes,
    }
    over = free >= thresholds.data_free_min_bytes and evidence["data_free_ratio"] >= thresholds.data_free_min_ratio
    if not over:
        return skip(str(schema), str(table), evidence)
    if in_system:
        held = (Reason.DATA_FREE.value, Reason.NO_SPACE_RETURNED.value)
        return TableObservation(
            str(schema), str(table), TableAction.SKIP, held, evidence, float(free), wanted=TableAction.OPTIMIZE
        )
    reasons = (Reason.DATA_FREE.value,)
    return TableObservation(str(schema), str(table), TableAction.OPTIMIZE, reasons, evidence, float(free))


def observe_mariadb(
    conn: Any, scope: TableScope, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[TableObservation]:
    """What each base table of ``scope`` needs (see the module docstring), most urgent first. ``conn`` is an
    open PyMySQL connection; unqualified table names and the default scope mean its current database.
    OperationFailed names an unknown database or table."""
    with conn.cursor() as cursor:
        catalog = {(str(r[0]), str(r[1])): r for r in _rows(cursor, TABLES_SQL) if str(r[0]) not in SYSTEM_SCHEMAS}
        current = _rows(cursor, "SELECT DATABASE(), @@innodb_file_per_table")[0]
        in_system = _system_tablespace_tables(cursor)
    if current[0] is None and scope.everything:
        raise OperationFailed("the connection has no current database: name the databases (schemas) to observe")
    default_schemas = [str(current[0])] if current[0] is not None else []
    file_per_table = bool(int(current[1]))
    observations = []
    for pair in in_scope(list(catalog), scope, default_schemas):
        row = catalog[pair]
        is_innodb = str(row[2]).lower() == "innodb"
        system = is_innodb and (
            f"{pair[0]}/{pair[1]}" in in_system if in_system is not None else not file_per_table
        )
        observations.append(_observe(row, file_per_table, system, thresholds))
    return by_urgency(observations)
