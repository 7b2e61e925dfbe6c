"""A child's ``parallel`` on a real PostgreSQL: several tables at once, each on its own connection, under the one
failure policy; a cancel stops every lane."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation, TableScope
from tests.support.polling import wait_for
from tests.support.postgresql import (
    connect,
    in_background,
    make_table,
    note_for,
    slow_vacuums,
    table_notes,
    table_stats,
    vacuum_progress,
)
from worker_service.cancel import CancelToken, OperationCancelled
from worker_service.engines.postgresql import PostgresqlEngine
from worker_service.executor import Assignment, run_assignment
from worker_service.targets import BoundTarget

TABLES = [f"t{i}" for i in range(8)]


def make_tables(url: URL, rows: int) -> None:
    for name in TABLES:
        make_table(url, name, rows, delete="even")


@pytest.fixture
def slowed(postgres_url: URL) -> Iterator[URL]:
    """Every new session of the database vacuums slowly, so the lanes are seen at work."""
    with slow_vacuums(postgres_url):
        yield postgres_url


def test_parallel_four_vacuums_all_eight_tables_at_least_two_at_once_in_the_serial_order(slowed: URL) -> None:
    make_tables(slowed, 1_000)
    engine = PostgresqlEngine()
    background = in_background(
        lambda: engine.run_parallel(Operation.VACUUM, slowed, CancelToken(), None, TableScope(), None, 4)
    )
    wait_for(lambda: len(vacuum_progress(slowed)) >= 2, timeout=15, message="never two VACUUMs at once")
    background.join(60)
    assert background.error is None, background.error
    report = background.result
    assert report is not None and (report.objects_processed, report.objects_skipped) == (8, 0)
    assert all(table_stats(slowed, name)["vacuum_count"] == 1 for name in TABLES)
    assert any(note.startswith("parallel: 4 lane(s) for 8 table(s)") for note in report.notes)
    # Same-size tables: the serial order is by name, and the notes keep it.
    assert [note.split(":")[0] for note in table_notes(report)] == [f"table public.{name}" for name in TABLES]


def test_a_cancel_stops_every_lane(slowed: URL) -> None:
    make_tables(slowed, 20_000)
    cancel = CancelToken()
    engine = PostgresqlEngine()
    background = in_background(
        lambda: engine.run_parallel(Operation.VACUUM, slowed, cancel, None, TableScope(), None, 4)
    )
    wait_for(lambda: len(vacuum_progress(slowed)) >= 3, timeout=15, message="never three VACUUMs at once")
    cancel.cancel("operator said stop")
    background.join(10)
    assert isinstance(background.error, OperationCancelled), background.error or background.result
    assert vacuum_progress(slowed) == [], "a lane still runs its VACUUM"


@pytest.fixture
def stranger(postgres_url: URL) -> Iterator[URL]:
    """A role of its own owning every table but public.t3."""
    role = f"dbmaint_r_{uuid.uuid4().hex[:10]}"
    make_tables(postgres_url, 200)
    with connect(postgres_url) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN".encode())
        for name in TABLES:
            if name != "t3":
                conn.execute(f"ALTER TABLE {name} OWNER TO {role}".encode())
    try:
        yield postgres_url.set(username=role)
    finally:
        with connect(postgres_url) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres".encode())
            conn.execute(f"DROP OWNED BY {role}".encode())
            conn.execute(f"DROP ROLE {role}".encode())


def test_a_failed_table_does_not_stop_the_other_lanes(stranger: URL) -> None:
    assignment = Assignment("job-1", 1, "pg", "reindex", CHILD_JOB_TYPE, {"parallel": 4})
    outcome = run_assignment(assignment, BoundTarget("pg", stranger, PostgresqlEngine()), CancelToken())
    assert outcome.status is JobStatus.FAILED
    assert outcome.error.startswith("reindex failed on 1 of 8 table(s): public.t3: ")
    assert outcome.report is not None
    assert (outcome.report.objects_processed, outcome.report.objects_skipped) == (7, 1)
    assert note_for(outcome.report, "public.t3").startswith("failed table public.t3: REINDEX TABLE")
