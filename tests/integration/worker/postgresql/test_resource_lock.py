"""The resource fence on PostgreSQL: a session advisory lock (1684172148, <database oid>) on the maintenance
connection. Another session holding it -- as a frozen worker's backend would -- makes the operation wait."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import URL

from dbmaint.operations import Operation, TableScope
from tests.support.polling import wait_for
from tests.support.postgresql import (
    connect,
    in_background,
    make_table,
    query,
    scalar,
    table_stats,
    worker_backends,
)
from worker_service.cancel import CancelToken, OperationCancelled
from worker_service.engines.base import RunStatus
from worker_service.engines.postgresql import PostgresqlEngine
from worker_service.faults import FaultPlan

LOCK_CLASS = 1684172148  # "dbmt"


@contextmanager
def lock_held(url: URL) -> Iterator[int]:
    """Another session holding the target's resource lock; yields its backend pid."""
    with connect(url) as conn:
        oid = scalar(url, "SELECT oid::int8 FROM pg_database WHERE datname = current_database()")
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, oid))
        yield conn.info.backend_pid


def vacuum(url: URL, cancel: CancelToken, status: RunStatus | None = None) -> Any:
    if status is None:
        return lambda: PostgresqlEngine().run(Operation.VACUUM, url, cancel, None, TableScope())
    return lambda: PostgresqlEngine().run(Operation.VACUUM, url, cancel, None, TableScope(), status=status)


def test_an_operation_does_not_run_while_another_session_holds_the_targets_advisory_lock(
    postgres_url: URL,
) -> None:
    make_table(postgres_url, "orders", 2_000, delete="even")
    with lock_held(postgres_url):
        background = in_background(vacuum(postgres_url, CancelToken()))
        wait_for(lambda: worker_backends(postgres_url), timeout=5, message="the engine never connected")
        background.thread.join(1.5)
        assert background.thread.is_alive(), f"it ran beside the lock holder: {background.result}"
        assert table_stats(postgres_url, "public.orders")["last_vacuum"] is None
    background.join(10)
    assert background.error is None and background.result is not None
    assert background.result.objects_processed == 1 and background.result.objects_skipped == 0
    assert any("after waiting" in n for n in background.result.notes), background.result.notes
    assert table_stats(postgres_url, "public.orders")["last_vacuum"] is not None


def test_the_waiting_reason_names_the_backend_that_holds_the_lock(postgres_url: URL) -> None:
    status, cancel = RunStatus("pg"), CancelToken()
    with lock_held(postgres_url) as holder:
        background = in_background(vacuum(postgres_url, cancel, status))
        expected = f"waiting for the resource lock on target 'pg' (held by PostgreSQL backend pid {holder})"
        wait_for(lambda: status.waiting_reason == expected, timeout=5, message=lambda: status.waiting_reason)
        cancel.cancel("operator said stop")
        background.join(3)
    assert isinstance(background.error, OperationCancelled) and background.error.reason == "operator said stop"
    assert status.waiting_reason == ""
    wait_for(lambda: worker_backends(postgres_url) == [], timeout=5, message="the engine's session stayed")


def test_the_lock_is_held_by_the_maintenance_session_itself(postgres_url: URL) -> None:
    """The same backend that runs the statement holds the lock: it ends only when that backend ends."""
    make_table(postgres_url, "orders", 100)
    engine = PostgresqlEngine(FaultPlan(slow={"vacuum": 3}))
    cancel = CancelToken()
    background = in_background(lambda: engine.run(Operation.VACUUM, postgres_url, cancel, None, TableScope()))
    sleeping = wait_for(
        lambda: [pid for pid, state, q in worker_backends(postgres_url) if "pg_sleep" in q and state == "active"],
        timeout=5,
    )
    holders = query(
        postgres_url,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::int8::oid",
        (LOCK_CLASS,),
    )
    assert [row[0] for row in holders] == sleeping
    cancel.cancel("done looking")
    background.join(5)
