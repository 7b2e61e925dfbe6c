"""Issue 9, scenario 6: one operation per target, even when an attempt's end is unknown.

Worker A runs a slow operation and is frozen (SIGSTOP) for longer than its lease: the manager re-queues the
child to worker B, although attempt 1 still holds the target. The resource fence makes attempt 2 wait for the
target's lock -- saying so -- until A is killed, then run normally. Real manager, real workers, real targets.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from dbmaint.local import ServiceProcess
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.polling import wait_for
from tests.support.postgresql import make_table, slow_vacuums, table_stats, vacuum_progress
from tests.support.processes import Cluster
from tests.support.targets import make_sqlite_target, write_locked

pytestmark = pytest.mark.e2e

LEASE = "2"  # seconds: the manager re-queues a frozen worker's child quickly
RUNNING, COMPLETED = pb.JOB_STATUS_RUNNING, pb.JOB_STATUS_COMPLETED


def stays(probe: Callable[[], object], seconds: float, message: Callable[[], str]) -> None:
    """``probe`` is true at every look for ``seconds`` (polled, like ``wait_for``, but the other way round)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert probe(), message()
        time.sleep(0.1)


def attempt_2_on_b(child: pb.Job) -> bool:
    return child.status == RUNNING and child.attempt == 2 and child.worker_id == "wb"


def freeze_past_the_lease(fleet: Cluster, parent: str, frozen: ServiceProcess) -> pb.Job:
    frozen.signal(signal.SIGSTOP)
    return fleet.wait_child(parent, attempt_2_on_b, timeout=30)


def test_attempt_2_waits_for_a_frozen_workers_sqlite_lock_then_runs_once_it_is_killed(
    fleet: Cluster, tmp_path: Path
) -> None:
    target = tmp_path / "shared.db"
    make_sqlite_target(target)
    fleet.start_manager("--lease-timeout", LEASE)
    worker_a = fleet.start_worker("wa", {"db": target}, faults="slow:vacuum=120")
    parent = fleet.create(["db"], [pb.OPERATION_VACUUM]).parent.id
    fleet.wait_child(parent, lambda c: c.status == RUNNING and c.worker_id == "wa")
    wait_for(lambda: write_locked(target), timeout=15, message="attempt 1's VACUUM never took the file")
    worker_b = fleet.start_worker("wb", {"db": target})

    freeze_past_the_lease(fleet, parent, worker_a)

    waiting = "waiting for the resource lock on target 'db' (held by another process"
    wait_for(lambda: waiting in worker_b.log(), timeout=10, message=lambda: f"B never waited:\n{fleet.logs()}")
    stays(
        lambda: attempt_2_on_b(fleet.get(parent).children[0]),
        seconds=7,  # longer than SQLite's busy timeout (5 s): an attempt 2 that ran would have failed by now
        message=lambda: f"attempt 2 did not keep waiting: {fleet.describe(parent)}",
    )

    worker_a.kill9()
    done = fleet.wait_status(parent, COMPLETED, pb.JOB_STATUS_FAILED, timeout=60)

    [child] = done.children
    assert (child.status, child.attempt, child.worker_id) == (COMPLETED, 2, "wb"), fleet.describe(parent)
    assert any("after waiting" in note for note in child.result.notes), list(child.result.notes)
    assert child.result.bytes_after < child.result.bytes_before, "attempt 2 really vacuumed"
    with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_attempt_2_does_not_skip_a_table_a_frozen_workers_vacuum_still_holds_on_postgresql(
    fleet: Cluster, postgres_url: URL
) -> None:
    make_table(postgres_url, "orders", 30_000, delete="even")
    fleet.start_manager("--lease-timeout", LEASE)
    with slow_vacuums(postgres_url):  # attempt 1's session only: it connects inside this block
        worker_a = fleet.start_worker("wa", {"pg": postgres_url})
        parent = fleet.create(["pg"], [pb.OPERATION_VACUUM]).parent.id
        [(vacuuming_pid, *_)] = wait_for(
            lambda: vacuum_progress(postgres_url), timeout=15, message="attempt 1's VACUUM never started"
        )
    worker_b = fleet.start_worker("wb", {"pg": postgres_url})

    freeze_past_the_lease(fleet, parent, worker_a)

    waiting = f"waiting for the resource lock on target 'pg' (held by PostgreSQL backend pid {vacuuming_pid})"
    wait_for(lambda: waiting in worker_b.log(), timeout=10, message=lambda: f"B never waited:\n{fleet.logs()}")
    stays(
        lambda: attempt_2_on_b(fleet.get(parent).children[0]) and vacuum_progress(postgres_url),
        seconds=4,
        message=lambda: f"attempt 2 did not keep waiting: {fleet.describe(parent)}",
    )
    assert [row[0] for row in vacuum_progress(postgres_url)] == [vacuuming_pid], "only attempt 1's VACUUM runs"

    worker_a.kill9()  # its backend notices within client_connection_check_interval, stops, frees the lock
    done = fleet.wait_status(parent, COMPLETED, pb.JOB_STATUS_FAILED, timeout=60)

    [child] = done.children
    assert (child.status, child.attempt, child.worker_id) == (COMPLETED, 2, "wb"), fleet.describe(parent)
    assert (child.result.objects_processed, child.result.objects_skipped) == (1, 0), list(child.result.notes)
    assert any("VACUUM" in note and "dead tuples" in note and "-> 0," in note for note in child.result.notes)
    assert table_stats(postgres_url, "public.orders")["n_dead_tup"] == 0
