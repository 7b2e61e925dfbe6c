"""A cancel that arrives once the maintenance statements are done must not undo them: the child is COMPLETED.

The cancel request of PostgreSQL is asynchronous (libpq sends it on a connection of its own; the server signals
the backend): one sent for the last statement can land on the bookkeeping query that follows it -- the table's
figures, the database size. These tests make that query slow and cancel it, as a late request would.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import JobStatus
from tests.support.postgresql import connect, make_table, table_stats
from worker_service.cancel import CancelToken
from worker_service.engines import postgresql as pg_engine
from worker_service.engines.postgresql import PostgresqlEngine
from worker_service.executor import Assignment, run_assignment
from worker_service.targets import BoundTarget


def vacuum(url: URL, cancel: CancelToken) -> Any:
    assignment = Assignment("job-1", 1, "pg", "vacuum", "maintenance.child", {"operation": "vacuum"})
    return run_assignment(assignment, BoundTarget("pg", url, PostgresqlEngine()), cancel)


def late_cancel(conn: Any, url: URL) -> None:
    """Run a slow query on ``conn`` while another session cancels its backend: a cancel request that arrives
    late, once the statement it was meant for is over."""
    pid = conn.info.backend_pid

    def cancel_soon() -> None:
        with connect(url) as other:
            other.execute("SELECT pg_cancel_backend(%s) FROM pg_sleep(0.3)", (pid,))

    thread = threading.Thread(target=cancel_soon)
    thread.start()
    try:
        conn.execute("SELECT pg_catalog.pg_sleep(3)")
    finally:
        thread.join(10)
        assert not thread.is_alive(), "the cancelling session never returned"


def test_a_cancel_landing_on_the_size_query_after_the_work_leaves_the_child_completed(
    postgres_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_table(postgres_url, "orders", 2_000, delete="even")
    cancel = CancelToken()
    calls: list[int] = []
    original = pg_engine._Session.database_size

    def database_size(self: Any) -> int:
        calls.append(1)
        if len(calls) == 2:  # the size after: the VACUUM is done
            cancel.cancel("operator said stop, too late")
            late_cancel(self.conn, postgres_url)
        return original(self)  # type: ignore[no-any-return]

    monkeypatch.setattr(pg_engine._Session, "database_size", database_size)
    outcome = vacuum(postgres_url, cancel)

    assert outcome.status is JobStatus.COMPLETED, outcome.error
    assert outcome.report is not None and outcome.report.objects_processed == 1
    assert table_stats(postgres_url, "public.orders")["last_vacuum"] is not None


def test_a_cancel_landing_on_the_last_tables_figures_leaves_the_child_completed(
    postgres_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_table(postgres_url, "orders", 2_000, delete="even")
    cancel = CancelToken()
    calls: list[int] = []
    original = pg_engine._Session.figures

    def figures(self: Any, relations: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the figures after the only table's VACUUM
            cancel.cancel("operator said stop, too late")  # the engine's own cancel requests follow
            self.conn.execute("SELECT pg_catalog.pg_sleep(3)")
        return original(self, relations)

    monkeypatch.setattr(pg_engine._Session, "figures", figures)
    outcome = vacuum(postgres_url, cancel)

    assert outcome.status is JobStatus.COMPLETED, outcome.error
    report = outcome.report
    assert report is not None and report.objects_processed == 1
    assert any("figures after: unknown" in note for note in report.notes), report.notes


def test_a_cancel_between_two_tables_still_stops_the_operation(
    postgres_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_table(postgres_url, "big", 4_000, delete="even")
    make_table(postgres_url, "small", 100, delete="even")
    cancel = CancelToken()
    calls: list[int] = []
    original = pg_engine._Session.figures

    def figures(self: Any, relations: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # after the first table (the largest first): one table still to do
            cancel.cancel("stop now")
            self.conn.execute("SELECT pg_catalog.pg_sleep(3)")
        return original(self, relations)

    monkeypatch.setattr(pg_engine._Session, "figures", figures)
    outcome = vacuum(postgres_url, cancel)

    assert (outcome.status, outcome.error) == (JobStatus.CANCELLED, "stop now")
    assert table_stats(postgres_url, "public.small")["last_vacuum"] is None
