"""MariaDB test tables with real reclaimable space, and what the catalog says about them.

Used by the engine tests (``tests/worker/mariadb``) and the end-to-end MariaDB tests. Rows are generated on the
server (``seq_1_to_N`` of the SEQUENCE engine), so a few MB take a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pymysql
from sqlalchemy.engine import URL

from tests.support.polling import wait_for


def connect(url: URL, **overrides: Any) -> Any:
    """An autocommit PyMySQL connection to ``url`` (SQLAlchemy's own translation of the URL)."""
    _, kwargs = url.get_dialect()().create_connect_args(url)
    kwargs.update(overrides)
    return pymysql.connect(autocommit=True, **kwargs)


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def query(conn: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        cursor.execute(sql, params or None)
        return list(cursor.fetchall())


@dataclass(frozen=True)
class TableInfo:
    data_length: int
    index_length: int
    data_free: int
    space: int | None  # the InnoDB tablespace id: a rebuild gives the table a new one
    rows: int

    @property
    def size(self) -> int:
        return self.data_length + self.index_length


def table_info(conn: Any, schema: str, table: str) -> TableInfo:
    (row,) = query(
        conn,
        "SELECT DATA_LENGTH, INDEX_LENGTH, DATA_FREE FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        schema,
        table,
    )
    space = query(
        conn, "SELECT SPACE FROM information_schema.INNODB_SYS_TABLES WHERE NAME = %s", f"{schema}/{table}"
    )
    (count,) = query(conn, f"SELECT COUNT(*) FROM {q(schema)}.{q(table)}")
    return TableInfo(
        int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), space[0][0] if space else None, count[0]
    )


def persistent_stats(conn: Any, schema: str, table: str) -> tuple[int, datetime] | None:
    """(n_rows, last_update) of the table in mysql.innodb_table_stats: what ANALYZE writes."""
    rows = query(
        conn,
        "SELECT n_rows, last_update FROM mysql.innodb_table_stats WHERE database_name = %s AND table_name = %s",
        schema,
        table,
    )
    return (int(rows[0][0]), rows[0][1]) if rows else None


def insert_rows(schema: str, table: str, first: int, last: int) -> str:
    """The INSERT of rows ``first``..``last`` (all alike in size, so InnoDB's row estimates are close)."""
    return (
        f"INSERT INTO {q(schema)}.{q(table)} (id, k, payload) "
        f"SELECT seq, MD5(seq), REPEAT(MD5(RAND()), 30) FROM seq_{int(first)}_to_{int(last)}"
    )


def make_table(
    conn: Any,
    schema: str,
    table: str,
    rows: int = 4000,
    *,
    engine: str = "InnoDB",
    options: str = "",
    fragment: bool = True,
) -> TableInfo:
    """A table of ``rows`` rows of ~1 KB (an indexed key and a payload); with ``fragment``, the first half of
    the rows and every other row of the rest deleted once the purge freed the pages (``DATA_FREE`` grew), then
    ANALYZE so that the catalog's figures are current. Fragmenting needs a few thousand rows: the pages of a
    small table are not in whole extents, and freeing them does not show in ``DATA_FREE``."""
    name = f"{q(schema)}.{q(table)}"
    with conn.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {name} (id INT PRIMARY KEY, k CHAR(32) NOT NULL, payload VARBINARY(1024) NOT NULL, "
            f"KEY k (k)) ENGINE={engine} {options}"
        )
        cursor.execute(insert_rows(schema, table, 1, rows))
        if not fragment:
            return table_info(conn, schema, table)
        free_before = table_info(conn, schema, table).data_free
        cursor.execute(f"DELETE FROM {name} WHERE id <= %s OR id %% 2 = 0", (rows // 2,))
        if engine.lower() == "innodb":
            wait_for(
                lambda: table_info(conn, schema, table).data_free > free_before,
                timeout=20,
                message=f"the purge never freed the pages of {name}",
            )
        cursor.execute(f"ANALYZE TABLE {name}")
        cursor.fetchall()
    return table_info(conn, schema, table)


def running_queries(conn: Any, schema: str) -> list[tuple[Any, ...]]:
    """The statements other sessions run in ``schema`` now (ID, COMMAND, STATE, INFO)."""
    return query(
        conn,
        "SELECT ID, COMMAND, STATE, INFO FROM information_schema.PROCESSLIST "
        "WHERE DB = %s AND ID <> CONNECTION_ID() AND COMMAND <> 'Sleep'",
        schema,
    )


def connections_in(conn: Any, schema: str) -> list[tuple[Any, ...]]:
    """Every other session whose current database is ``schema``, busy or idle."""
    return query(
        conn,
        "SELECT ID, COMMAND, INFO FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
        schema,
    )
