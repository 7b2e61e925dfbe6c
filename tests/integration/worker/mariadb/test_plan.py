"""MODE_PLAN on a real MariaDB server: a child reports each table's DATA_FREE and what it would do, rebuilds
nothing, and does not wait while another connection holds the target's resource lock."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import URL

from dbmaint.operations import TableAction
from tests.integration.worker.mariadb.test_resource_lock import lock_held
from tests.support.mariadb import make_table, table_info
from tests.support.plan import plan_of, run_child
from worker_service.engines.mariadb import MariadbEngine


def engine_for(url: URL) -> MariadbEngine:
    return MariadbEngine(dialect=url.get_backend_name())


def test_a_plan_reports_the_data_free_of_each_table_and_rebuilds_nothing(
    mariadb_url: URL, admin: Any, db: str
) -> None:
    make_table(admin, db, "plain", rows=200, engine="MyISAM", fragment=False)
    fragmented = make_table(admin, db, "items")

    report = plan_of(engine_for(mariadb_url), mariadb_url, "optimize")

    items = next(t for t in report.tables if t.table == "items")
    assert items.schema == db and items.evidence["data_free_bytes"] == fragmented.data_free > 0
    assert items.before["data_free_bytes"] == fragmented.data_free and items.after == {}
    assert items.evidence["data_free_ratio"] > 0 and "data_free_min_bytes" in items.evidence
    assert report.notes[0] == "plan: 2 table(s) observed, nothing changed"
    assert (report.objects_processed, report.objects_skipped) == (0, 2)
    plain = table_info(admin, db, "plain")
    assert report.bytes_before == report.bytes_after == fragmented.size + plain.size
    # Not rebuilt: the same tablespace (OPTIMIZE gives an InnoDB table a new one) and the same free space.
    assert table_info(admin, db, "items") == fragmented


def test_a_plan_does_not_wait_while_another_connection_holds_the_targets_lock(
    mariadb_url: URL, admin: Any, db: str
) -> None:
    make_table(admin, db, "orders", 500, fragment=False)
    with lock_held(mariadb_url):
        started = time.monotonic()
        report = plan_of(engine_for(mariadb_url), mariadb_url, "optimize")
        elapsed = time.monotonic() - started

    assert elapsed < 5, f"the plan took {elapsed:.1f}s: it waited for the lock"
    (orders,) = report.tables
    assert (orders.table, orders.action, orders.reasons) == ("orders", TableAction.SKIP, ("below_threshold",))


def test_an_assignment_without_mode_still_optimizes(mariadb_url: URL, admin: Any, db: str) -> None:
    fragmented = make_table(admin, db, "items")

    report = run_child(engine_for(mariadb_url), mariadb_url, "optimize")

    assert report.objects_processed == 1
    assert table_info(admin, db, "items").space != fragmented.space  # rebuilt into a new tablespace
