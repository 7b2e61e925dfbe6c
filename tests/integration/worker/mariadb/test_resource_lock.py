"""The resource fence on MariaDB: ``GET_LOCK('dbmaint:<database>')`` on the work connection. Another connection
holding it -- as a frozen worker's connection would -- makes the operation wait."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import URL

from dbmaint.operations import Operation, TableScope
from tests.support.mariadb import connect, make_table, query
from tests.support.polling import wait_for
from tests.support.postgresql import in_background
from worker_service.cancel import CancelToken, OperationCancelled
from worker_service.engines.base import RunStatus
from worker_service.engines.mariadb import MariadbEngine, lock_name


@contextmanager
def lock_held(url: URL) -> Iterator[int]:
    """Another connection holding the target's resource lock; yields its connection id."""
    conn = connect(url)
    try:
        [(got, connection_id)] = query(conn, "SELECT GET_LOCK(%s, 0), CONNECTION_ID()", f"dbmaint:{url.database}")
        assert got == 1
        yield int(connection_id)
    finally:
        conn.close()


def optimize(url: URL, cancel: CancelToken, status: RunStatus | None = None) -> Any:
    engine = MariadbEngine(dialect=url.get_backend_name())
    if status is None:
        return lambda: engine.run(Operation.VACUUM, url, cancel, None, TableScope())
    return lambda: engine.run(Operation.VACUUM, url, cancel, None, TableScope(), status=status)


def test_an_operation_does_not_run_while_another_connection_holds_the_targets_lock(
    mariadb_url: URL, admin: Any, db: str
) -> None:
    make_table(admin, db, "orders", 500, fragment=False)
    with lock_held(mariadb_url):
        background = in_background(optimize(mariadb_url, CancelToken()))
        background.thread.join(1.5)
        assert background.thread.is_alive(), f"it ran beside the lock holder: {background.result}"
    background.join(20)
    assert background.error is None and background.result is not None
    assert background.result.objects_processed == 1
    assert any("GET_LOCK" in n and "after waiting" in n for n in background.result.notes), background.result.notes


def test_the_waiting_reason_names_the_connection_that_holds_the_lock(
    mariadb_url: URL, admin: Any, db: str
) -> None:
    status, cancel = RunStatus("maria"), CancelToken()
    with lock_held(mariadb_url) as holder:
        background = in_background(optimize(mariadb_url, cancel, status))
        expected = f"waiting for the resource lock on target 'maria' (held by MariaDB connection id {holder})"
        wait_for(lambda: status.waiting_reason == expected, timeout=5, message=lambda: status.waiting_reason)
        cancel.cancel("operator said stop")
        background.join(3)
    assert isinstance(background.error, OperationCancelled) and background.error.reason == "operator said stop"


def test_lock_names_fit_get_locks_limit_of_64_characters() -> None:
    assert lock_name("shop") == "dbmaint:shop"
    assert lock_name("") == "dbmaint:"
    long = lock_name("x" * 64)
    assert len(long) <= 64 and long.startswith("dbmaint:sha1:") and long != lock_name("x" * 63 + "y")
