"""Locked tables, lock_timeout, cancellation and the deadline, against a real server."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation
from tests.support.polling import wait_for
from tests.support.postgresql import (
    dead_tuples,
    in_background,
    index_filenodes,
    locked,
    make_table,
    note_for,
    run_engine,
    table_notes,
    table_stats,
    wait_stats,
    worker_backends,
)
from worker_service.cancel import CancelToken, DeadlineExceeded, OperationCancelled
from worker_service.engines import tables
from worker_service.engines.postgresql import PostgresqlEngine
from worker_service.executor import Assignment, run_assignment
from worker_service.faults import FaultPlan
from worker_service.targets import BoundTarget


def assignment(operation: str, deadline: datetime | None = None) -> Assignment:
    return Assignment(
        job_id="job-pg",
        attempt=1,
        target="pg",
        operation=operation,
        job_type=CHILD_JOB_TYPE,
        config={"operation": operation, "target": "pg"},
        deadline=deadline,
    )


def target(url: URL, faults: FaultPlan | None = None) -> BoundTarget:
    return BoundTarget("pg", url, PostgresqlEngine(faults or FaultPlan()))


@pytest.fixture
def two_tables(postgres_url: URL) -> URL:
    make_table(postgres_url, "busy", 4_000, delete="even")
    make_table(postgres_url, "free", 2_000, delete="even")
    wait_stats(postgres_url, "public.busy", n_dead_tup=2_000)
    wait_stats(postgres_url, "public.free", n_dead_tup=1_000)
    return postgres_url


@pytest.mark.parametrize("operation", [Operation.VACUUM, Operation.ANALYZE, Operation.OPTIMIZE])
def test_skip_locked_skips_a_table_another_session_holds_and_says_so(
    two_tables: URL, operation: Operation
) -> None:
    url = two_tables
    with locked(url, "public.busy"):
        started = time.monotonic()
        outcome = run_assignment(assignment(operation.value), target(url), CancelToken())
        elapsed = time.monotonic() - started

    assert outcome.status is JobStatus.COMPLETED, outcome.error
    report = outcome.report
    assert report is not None
    assert (report.objects_processed, report.objects_skipped) == (1, 1)
    assert elapsed < 3, f"took {elapsed:.1f}s: something waited for the lock (lock_timeout is 5s)"
    skipped = note_for(report, "public.busy")
    assert skipped.startswith("skipped table public.busy: ")
    assert "lock not available" in skipped
    left = 1000 if operation is Operation.ANALYZE else 0  # ANALYZE removes nothing
    assert f"dead tuples 1000 -> {left}" in note_for(report, "public.free")
    assert "tables: 1 processed, 1 skipped" in report.notes[1]
    busy, free = table_stats(url, "public.busy"), table_stats(url, "public.free")
    if operation is Operation.ANALYZE:
        assert busy["last_analyze"] is None and free["last_analyze"] is not None
    else:
        assert busy["last_vacuum"] is None and free["last_vacuum"] is not None
        assert dead_tuples(url, "busy") == 2_000 and dead_tuples(url, "free") == 0


def test_reindex_of_a_locked_table_hits_lock_timeout_and_skips_it_promptly(two_tables: URL) -> None:
    url = two_tables.update_query_dict({"dbmaint_lock_timeout": "0.5"})
    nodes = {t: index_filenodes(url, t) for t in ("busy", "free")}
    with locked(url, "public.busy"):
        started = time.monotonic()
        outcome = run_assignment(assignment("reindex"), target(url), CancelToken())
        elapsed = time.monotonic() - started
        assert worker_backends(url) == [] or all(state == "idle" for _, state, _ in worker_backends(url))

    assert outcome.status is JobStatus.COMPLETED, outcome.error
    assert outcome.report is not None
    assert (outcome.report.objects_processed, outcome.report.objects_skipped) == (1, 1)
    assert 0.5 <= elapsed < 3, f"took {elapsed:.1f}s with lock_timeout 0.5s"
    skipped = note_for(outcome.report, "public.busy")
    assert "canceling statement due to lock timeout" in skipped and "SQLSTATE 55P03" in skipped
    assert "lock_timeout 0.5s" in outcome.report.notes[2]
    assert index_filenodes(url, "busy") == nodes["busy"], "the locked table was not touched"
    assert all(index_filenodes(url, "free")[n] != node for n, node in nodes["free"].items())


def test_cancel_interrupts_the_running_statement_on_the_server(two_tables: URL) -> None:
    url = two_tables
    cancel = CancelToken()
    run = in_background(lambda: run_engine(url, Operation.VACUUM, slow=60, cancel=cancel))
    wait_for(
        lambda: any(state == "active" and "pg_sleep" in q for _, state, q in worker_backends(url)),
        timeout=10,
        message="the slow statement never showed up in pg_stat_activity",
    )

    cancelled_at = time.monotonic()
    cancel.cancel("operator said stop")
    run.join(10)

    assert isinstance(run.error, OperationCancelled) and run.error.reason == "operator said stop", run.error
    assert run.ended_at is not None and run.ended_at - cancelled_at < 2
    assert not [b for b in worker_backends(url) if b[1] == "active"], "a query was left running"
    wait_for(lambda: worker_backends(url) == [], timeout=5, message="the engine's connection was not closed")
    assert table_stats(url, "public.busy")["last_vacuum"] is None, "nothing ran after the cancel"


def test_a_cancel_through_the_executor_ends_cancelled(two_tables: URL) -> None:
    url = two_tables
    cancel = CancelToken()
    faults = FaultPlan(slow={"reindex": 60})
    box: list[object] = []
    run = in_background(lambda: box.append(run_assignment(assignment("reindex"), target(url, faults), cancel)))
    wait_for(lambda: any(state == "active" for _, state, _ in worker_backends(url)), timeout=10)
    cancel.cancel("drain")
    run.join(10)
    (outcome,) = box
    assert getattr(outcome, "status", None) is JobStatus.CANCELLED and getattr(outcome, "error", "") == "drain"
    assert not [b for b in worker_backends(url) if b[1] == "active"]


def test_the_deadline_interrupts_the_statement_and_fails_the_child(two_tables: URL) -> None:
    url = two_tables
    deadline = datetime.now(UTC) + timedelta(seconds=1.5)
    started = time.monotonic()
    outcome = run_assignment(
        assignment("vacuum", deadline), target(url, FaultPlan(slow={"vacuum": 60})), CancelToken()
    )
    elapsed = time.monotonic() - started

    assert outcome.status is JobStatus.FAILED
    assert "deadline exceeded" in outcome.error and outcome.error.startswith("vacuum on pg:")
    assert 1.2 < elapsed < 4, elapsed
    assert not [b for b in worker_backends(url) if b[1] == "active"]


def test_deadline_exceeded_is_raised_by_the_engine(two_tables: URL) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    with pytest.raises(DeadlineExceeded):
        run_engine(two_tables, Operation.ANALYZE, slow=30, deadline=deadline)


def test_a_token_cancelled_before_the_start_never_connects(two_tables: URL) -> None:
    cancel = CancelToken()
    cancel.cancel("too late")
    broken = two_tables.set(port=1)  # connecting would fail: it must not be tried
    with pytest.raises(OperationCancelled):
        run_engine(broken, Operation.VACUUM, cancel=cancel)


def test_the_slow_fault_is_noted_and_the_operation_still_completes(two_tables: URL) -> None:
    started = time.monotonic()
    report = run_engine(two_tables, Operation.ANALYZE, slow=0.5)
    assert time.monotonic() - started >= 0.5
    assert report.objects_processed == 2
    assert any(n.startswith("fault injected: slow:analyze=0.5 (SELECT pg_sleep") for n in report.notes)


def test_per_table_notes_are_capped_keeping_the_skipped_tables(
    postgres_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables, "MAX_TABLE_NOTES", 2)
    for index, rows in enumerate((4_000, 3_000, 2_000, 1_000)):
        make_table(postgres_url, f"t{index}", rows)
    with locked(postgres_url, "public.t3"):  # the smallest: last in processing order
        report = run_engine(postgres_url, Operation.VACUUM)
    assert (report.objects_processed, report.objects_skipped) == (3, 1)
    kept = [n.split(":")[0] for n in table_notes(report)]
    assert kept == ["table public.t0", "skipped table public.t3"]
    assert "2 more table notes left out (limit 2)" in report.notes
