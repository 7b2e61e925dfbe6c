"""The four SQLite operations as the worker's SQLite engine runs them, for the direct and Celery runners.

Like ``worker_service.engines.sqlite``: every operation opens its own autocommit connection
(``isolation_level=None``, ``mode=rw``, 5 s busy timeout), reads ``PRAGMA page_count``, ``freelist_count``
and ``page_size``, runs the statement, reads them again and closes the connection. What the worker does on
top of that (count the objects in ``sqlite_master``, a progress handler for cancellation, the report) is part
of the overhead dbmaint is measured with.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from collections.abc import Sequence
from typing import TypedDict

OPERATIONS: tuple[str, ...] = ("vacuum", "analyze", "reindex", "optimize")
STATEMENTS: dict[str, str] = {
    "vacuum": "VACUUM",
    "analyze": "ANALYZE",
    "reindex": "REINDEX",
    "optimize": "PRAGMA optimize",
}
BUSY_TIMEOUT = 5.0


class OpRecord(TypedDict):
    """What one operation did on one file."""

    path: str
    operation: str
    seconds: float
    bytes_before: int
    bytes_after: int
    freelist_before: int
    freelist_after: int


def _sizes(conn: sqlite3.Connection) -> tuple[int, int, int]:
    def pragma(name: str) -> int:
        row = conn.execute(f"PRAGMA {name}").fetchone()
        return int(row[0]) if row else 0

    return pragma("page_count"), pragma("freelist_count"), pragma("page_size")


def run_operation(path: str, operation: str) -> OpRecord:
    """Run one operation on the SQLite file ``path`` on its own autocommit connection."""
    statement = STATEMENTS[operation]
    started = time.perf_counter()
    conn = sqlite3.connect(
        f"file:{urllib.parse.quote(path)}?mode=rw", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT
    )
    try:
        pages_before, free_before, page_size_before = _sizes(conn)
        conn.execute(statement).fetchall()
        pages_after, free_after, page_size_after = _sizes(conn)
    finally:
        conn.close()
    return OpRecord(
        path=path,
        operation=operation,
        seconds=time.perf_counter() - started,
        bytes_before=pages_before * page_size_before,
        bytes_after=pages_after * page_size_after,
        freelist_before=free_before,
        freelist_after=free_after,
    )


def run_target(path: str, operations: Sequence[str] = OPERATIONS) -> list[OpRecord]:
    """The operations on one target, in order (one multiprocessing task of the direct runner)."""
    return [run_operation(path, operation) for operation in operations]
