"""End to end on a MariaDB target: a real manager and worker (processes over TCP) against the local server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.mariadb import (
    connect,
    connections_in,
    make_table,
    persistent_stats,
    running_queries,
    table_info,
)
from tests.support.polling import wait_for
from tests.support.processes import Cluster

pytestmark = pytest.mark.e2e

ALL_OPERATIONS = [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE, pb.OPERATION_REINDEX, pb.OPERATION_OPTIMIZE]
COMPLETED = pb.JOB_STATUS_COMPLETED


@pytest.fixture
def admin(mariadb_url: URL) -> Iterator[Any]:
    conn = connect(mariadb_url)
    try:
        yield conn
    finally:
        conn.close()


def test_all_four_operations_on_a_mariadb_target_complete(fleet: Cluster, mariadb_url: URL, admin: Any) -> None:
    db = mariadb_url.database
    assert db
    before = make_table(admin, db, "items")
    analysed = persistent_stats(admin, db, "items")
    assert analysed is not None
    made = time.monotonic()
    fleet.start_manager()
    fleet.start_worker("w1", {"maria": mariadb_url})
    time.sleep(max(0.0, made + 1.05 - time.monotonic()))  # last_update counts whole seconds

    created = fleet.create(["maria"], ALL_OPERATIONS)
    done = fleet.wait_status(created.parent.id, COMPLETED, pb.JOB_STATUS_FAILED)

    assert done.job.status == COMPLETED, fleet.describe(created.parent.id)
    assert done.job.progress.succeeded == 4
    children = {c.operation: c for c in done.children}
    for child in done.children:
        assert child.status == COMPLETED and child.result.engine == "mariadb"
        assert child.result.objects_processed == 1 and child.result.objects_skipped == 0
    vacuum = children[pb.OPERATION_VACUUM].result
    assert vacuum.bytes_before == before.size and vacuum.bytes_after < vacuum.bytes_before
    assert f"statement: OPTIMIZE NO_WRITE_TO_BINLOG TABLE `{db}`.`items`" in vacuum.notes
    reindex = children[pb.OPERATION_REINDEX].result
    assert f"statement: ALTER TABLE `{db}`.`items` FORCE, ALGORITHM=INPLACE, LOCK=NONE" in reindex.notes

    after = table_info(admin, db, "items")
    assert after.space != before.space, "rebuilt"
    assert after.data_free < before.data_free and after.size < before.size
    assert after.rows == before.rows
    fresh = persistent_stats(admin, db, "items")
    assert fresh is not None and fresh[1] > analysed[1], "statistics recomputed"
    assert 0.8 * after.rows <= fresh[0] <= 1.2 * after.rows, fresh


def test_cancel_of_a_slow_mariadb_operation_kills_the_server_query(
    fleet: Cluster, mariadb_url: URL, admin: Any
) -> None:
    db = mariadb_url.database
    assert db
    make_table(admin, db, "items", rows=200, fragment=False)
    fleet.start_manager()
    fleet.start_worker("w1", {"maria": mariadb_url}, faults="slow:vacuum=120")
    created = fleet.create(["maria"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
    fleet.wait_child(created.parent.id, lambda c: c.status == pb.JOB_STATUS_RUNNING)
    wait_for(
        lambda: any(str(r[3]).startswith("SELECT SLEEP(120") for r in running_queries(admin, db)),
        timeout=15,
        message="the slow vacuum never reached the server",
    )

    fleet.stub.CancelJob(pb.CancelJobRequest(id=created.parent.id, reason="maintenance window over"), timeout=10)
    done = fleet.wait_status(created.parent.id, pb.JOB_STATUS_CANCELLED, timeout=20)

    assert [c.status for c in done.children] == [pb.JOB_STATUS_CANCELLED] * 2
    assert done.children[0].started_at.seconds > 0 and done.children[1].started_at.seconds == 0
    wait_for(lambda: not connections_in(admin, db), timeout=5, message="the worker's session is still there")
    assert not running_queries(admin, db)
