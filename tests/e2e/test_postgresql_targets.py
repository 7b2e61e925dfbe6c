"""End to end on a PostgreSQL target: real manager and worker processes, a real server, effects read from the
catalog."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.polling import wait_for
from tests.support.postgresql import dead_tuples, make_table, table_stats, wait_stats, worker_backends
from tests.support.processes import Cluster

pytestmark = pytest.mark.e2e

ALL_OPERATIONS = [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE, pb.OPERATION_REINDEX, pb.OPERATION_OPTIMIZE]
COMPLETED = pb.JOB_STATUS_COMPLETED


def test_all_four_operations_on_a_postgresql_target_complete(fleet: Cluster, postgres_url: URL) -> None:
    make_table(postgres_url, "orders", 20_000, delete="tail")
    make_table(postgres_url, "events", 5_000, delete="even")
    wait_stats(postgres_url, "public.orders", n_dead_tup=10_000)
    wait_stats(postgres_url, "public.events", n_dead_tup=2_500)
    fleet.start_manager()
    fleet.start_worker("w1", {"pg": postgres_url})

    created = fleet.create(["pg"], ALL_OPERATIONS)
    done = fleet.wait_status(created.parent.id, COMPLETED, pb.JOB_STATUS_FAILED)

    assert done.job.status == COMPLETED, fleet.describe(created.parent.id)
    assert done.job.progress.succeeded == 4
    by_operation = {c.operation: c for c in done.children}
    for child in done.children:
        assert child.status == COMPLETED and child.result.engine == "postgresql"
    vacuum = by_operation[pb.OPERATION_VACUUM].result
    assert vacuum.objects_processed == 2 and vacuum.objects_skipped == 0
    assert vacuum.bytes_after < vacuum.bytes_before, "the truncated tail of orders was given back"
    assert any("dead tuples 10000 -> 0" in note for note in vacuum.notes), list(vacuum.notes)
    assert by_operation[pb.OPERATION_REINDEX].result.objects_processed == 2
    for table in ("orders", "events"):
        assert dead_tuples(postgres_url, table) == 0
        stats = table_stats(postgres_url, f"public.{table}")
        assert stats["n_dead_tup"] == 0 and stats["last_vacuum"] is not None and stats["last_analyze"] is not None


def test_cancel_of_a_slow_postgresql_operation_interrupts_it_on_the_server(
    fleet: Cluster, postgres_url: URL
) -> None:
    make_table(postgres_url, "orders", 2_000, delete="even")
    fleet.start_manager()
    fleet.start_worker("w1", {"pg": postgres_url}, faults="slow:vacuum=120")
    created = fleet.create(["pg"], ALL_OPERATIONS)
    fleet.wait_child(created.parent.id, lambda c: c.status == pb.JOB_STATUS_RUNNING)
    wait_for(
        lambda: any(state == "active" and "pg_sleep" in q for _, state, q in worker_backends(postgres_url)),
        timeout=15,
        message="the slow vacuum never showed up in pg_stat_activity",
    )

    fleet.stub.CancelJob(pb.CancelJobRequest(id=created.parent.id, reason="operator said stop"), timeout=10)
    done = fleet.wait_status(created.parent.id, pb.JOB_STATUS_CANCELLED, timeout=20)

    assert [c.status for c in done.children] == [pb.JOB_STATUS_CANCELLED] * 4
    assert done.children[0].started_at.seconds > 0, "the vacuum had started and was interrupted"
    assert not [b for b in worker_backends(postgres_url) if b[1] == "active"], "a query was left running"
    wait_for(lambda: worker_backends(postgres_url) == [], timeout=10, message="the worker's connection stayed")
    assert table_stats(postgres_url, "public.orders")["last_vacuum"] is None, "nothing ran after the cancel"


def test_an_auto_parent_vacuums_only_the_bloated_table_and_its_child_reports_before_and_after(
    fleet: Cluster, postgres_url: URL
) -> None:
    make_table(postgres_url, "bloated", 20_000, analyze=True, delete="even")
    make_table(postgres_url, "clean", 2_000, analyze=True)
    wait_stats(postgres_url, "public.bloated", n_dead_tup=10_000)
    fleet.start_manager()
    fleet.start_worker("w1", {"pg": postgres_url})

    request = pb.CreateMaintenanceRequest(
        targets=["pg"], operations=[pb.OPERATION_VACUUM], mode=pb.MODE_AUTO, thresholds={"freeze_age_ratio": 0.9}
    )
    created = fleet.stub.CreateMaintenance(request, timeout=10)
    done = fleet.wait_status(created.parent.id, COMPLETED, pb.JOB_STATUS_FAILED)

    assert done.job.status == COMPLETED, fleet.describe(created.parent.id)
    assert not done.children[0].result.tables, "a page of children leaves the table reports out"
    child = fleet.stub.GetJob(pb.GetJobRequest(id=done.children[0].id), timeout=10).job
    by_table = {t.table: t for t in child.result.tables}
    bloated, clean = by_table["bloated"], by_table["clean"]
    assert (bloated.action, list(bloated.reasons)) == (pb.TABLE_ACTION_VACUUM, ["dead_tuples"])
    assert bloated.before["dead_tuples"] == 10_000 and bloated.after["dead_tuples"] == 0
    assert bloated.duration.ToTimedelta().total_seconds() > 0
    assert (clean.action, list(clean.reasons)) == (pb.TABLE_ACTION_SKIP, ["below_threshold"])
    assert table_stats(postgres_url, "public.clean")["vacuum_count"] == 0
    assert table_stats(postgres_url, "public.bloated")["vacuum_count"] == 1
