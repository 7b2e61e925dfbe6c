"""The MariaDB engine as a table engine (``ParallelEngine``) on a real server: MODE_AUTO optimizes only the tables
over the thresholds, chosen tables run with the statement of their actions, several tables run at once in
lanes of their own, and every table carries a ``TableReport``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import Operation, OperationReport, TableAction, TableReport, TableScope
from dbmaint.thresholds import Thresholds
from tests.support.mariadb import connect, make_table, q, query, running_queries, table_info
from tests.support.polling import wait_for
from tests.support.servers import fresh_mariadb_database
from worker_service.cancel import CancelToken, OperationCancelled
from worker_service.engines import mariadb as mariadb_engine
from worker_service.engines.auto import run_auto
from worker_service.engines.base import OperationFailed, ParallelEngine
from worker_service.engines.mariadb import MariadbEngine
from worker_service.engines.observe import TableObservation

MIB = 1024 * 1024
# A fragmented table of make_table (4000 rows of ~1 KB, three quarters deleted) crosses these; a small clean one
# does not.
OVER_A_MEGABYTE = Thresholds.from_mapping({"data_free_min_bytes": MIB, "data_free_min_ratio": 0.1})
FIGURES = {"data_bytes", "index_bytes", "data_free_bytes"}


@pytest.fixture
def mariadb_url() -> Iterator[URL]:
    """A fresh database of this module's own (the conftest's ``admin`` and ``db`` use it)."""
    with fresh_mariadb_database("dbmaint_auto_maria") as url:
        yield url


def statements(report: OperationReport) -> list[str]:
    return [n.removeprefix("statement: ") for n in report.notes if n.startswith("statement: ")]


def by_table(report: OperationReport) -> dict[str, TableReport]:
    return {t.table: t for t in report.tables}


def test_the_engine_is_a_parallel_engine() -> None:
    assert isinstance(MariadbEngine(), ParallelEngine)


def test_auto_optimizes_only_the_bloated_table_and_reports_its_free_space_before_and_after(
    mariadb_url: URL, admin: Any, db: str
) -> None:
    bloated = make_table(admin, db, "bloated")
    clean = make_table(admin, db, "clean", rows=200, fragment=False)
    assert bloated.data_free >= MIB and clean.data_free < MIB, (bloated, clean)

    report = run_auto(
        MariadbEngine(), Operation.VACUUM, mariadb_url, CancelToken(), None, TableScope(), None, 1, OVER_A_MEGABYTE
    )

    tables = by_table(report)
    assert tables["bloated"].action is TableAction.OPTIMIZE
    assert "data_free" in tables["bloated"].reasons
    assert tables["bloated"].before["data_free_bytes"] > tables["bloated"].after["data_free_bytes"]
    assert tables["bloated"].duration_seconds > 0
    assert (tables["clean"].action, tables["clean"].reasons) == (TableAction.SKIP, ("below_threshold",))
    assert statements(report) == [f"OPTIMIZE NO_WRITE_TO_BINLOG TABLE `{db}`.`bloated`"]
    assert table_info(admin, db, "bloated").space != bloated.space, "the bloated table was rebuilt"
    assert table_info(admin, db, "clean").space == clean.space, "the clean table was left alone"
    assert (report.objects_processed, report.objects_skipped) == (1, 1)


def acting(db: str, table: str, *actions: TableAction) -> tuple[TableObservation, ...]:
    """The observations MODE_AUTO hands the engine for one table (only their actions matter here)."""
    return tuple(TableObservation(db, table, action, ()) for action in actions)


def test_chosen_tables_run_in_the_given_order_each_with_the_statement_of_its_actions(
    mariadb_url: URL, admin: Any, db: str
) -> None:
    for name in ("a", "b", "c", "d"):
        make_table(admin, db, name, rows=200, fragment=False)
    actions = {
        (db, "c"): acting(db, "c", TableAction.ANALYZE),
        (db, "a"): acting(db, "a", TableAction.REINDEX, TableAction.ANALYZE),
        (db, "b"): acting(db, "b", TableAction.FREEZE, TableAction.ANALYZE),
    }

    report = MariadbEngine().run_parallel(
        Operation.OPTIMIZE, mariadb_url, CancelToken(), None, TableScope(), None, 1, actions
    )

    assert statements(report) == [
        f"ANALYZE NO_WRITE_TO_BINLOG TABLE `{db}`.`c`",
        f"ALTER TABLE `{db}`.`a` FORCE, ALGORITHM=INPLACE, LOCK=NONE",
        f"OPTIMIZE NO_WRITE_TO_BINLOG TABLE `{db}`.`b`",
    ]
    assert [(t.table, t.action) for t in report.tables] == [
        ("c", TableAction.ANALYZE),
        ("a", TableAction.REINDEX),
        ("b", TableAction.FREEZE),
    ]
    assert (report.objects_processed, report.objects_skipped) == (3, 0), "d was not asked for"


def test_actions_without_a_mariadb_statement_fail_before_connecting(mariadb_url: URL, db: str) -> None:
    with pytest.raises(OperationFailed, match="no MariaDB statement for the actions asked"):
        MariadbEngine().run_parallel(
            Operation.REINDEX,
            mariadb_url,
            CancelToken(),
            None,
            TableScope(),
            None,
            1,
            {(db, "a"): acting(db, "a", TableAction.DROP_INVALID_INDEX)},
        )


def test_three_lanes_process_four_tables_and_a_table_waiting_for_its_lock_holds_up_no_other(
    mariadb_url: URL, admin: Any, db: str
) -> None:
    names = ["t0", "t1", "t2", "t3"]
    before = {name: make_table(admin, db, name, rows=200, fragment=False) for name in names}
    url = mariadb_url.update_query_dict({"lock_wait_timeout": "60"})
    holder = connect(mariadb_url)
    try:
        query(holder, f"LOCK TABLES {q(db)}.t0 WRITE")  # t0 comes first in the serial order (by name)
        thread, box = in_thread(
            lambda: MariadbEngine().run_parallel(Operation.VACUUM, url, CancelToken(), None, TableScope(), None, 3)
        )
        wait_for(
            lambda: all(table_info(admin, db, n).space != before[n].space for n in names[1:]),
            timeout=30,
            message="the other lanes never rebuilt t1, t2 and t3 while t0 waited",
        )
        waiting = [row for row in running_queries(admin, db) if "`t0`" in str(row[3])]
        assert waiting and "metadata lock" in str(waiting[0][2]), "t0's OPTIMIZE still waits for its lock"
    finally:
        holder.close()
    thread.join(30)
    assert not thread.is_alive(), "the operation never returned"
    (report,) = box
    assert isinstance(report, OperationReport), report
    assert any(n.startswith("parallel: 3 lane(s) for 4 table(s) (3 wanted; max_connections") for n in report.notes)
    assert (report.objects_processed, report.objects_skipped) == (4, 0)
    assert [t.table for t in report.tables] == names, "the reports keep the serial order"


def test_a_cancel_kills_the_statement_of_every_lane(mariadb_url: URL, admin: Any, db: str) -> None:
    names = ["t0", "t1", "t2"]
    for name in names:
        make_table(admin, db, name, rows=100, fragment=False)
    url = mariadb_url.update_query_dict({"lock_wait_timeout": "60"})
    cancel = CancelToken()
    holder = connect(mariadb_url)
    try:
        query(holder, "LOCK TABLES " + ", ".join(f"{q(db)}.{name} WRITE" for name in names))
        thread, box = in_thread(
            lambda: MariadbEngine().run_parallel(Operation.OPTIMIZE, url, cancel, None, TableScope(), None, 3)
        )
        wait_for(lambda: len(running_queries(admin, db)) == 3, timeout=15, message="never three OPTIMIZEs at once")
        cancel.cancel("operator said stop")
        thread.join(10)
        assert not thread.is_alive(), "the operation never returned"
        assert running_queries(admin, db) == [], "a lane's OPTIMIZE still runs"
    finally:
        holder.close()
    (error,) = box
    assert isinstance(error, OperationCancelled), error


def test_lanes_are_capped_by_the_connections_the_server_has_free(
    mariadb_url: URL, admin: Any, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("t0", "t1", "t2", "t3"):
        make_table(admin, db, name, rows=100, fragment=False)
    # Lowering max_connections would touch every session of the shared server: the reading is replaced.
    monkeypatch.setattr(mariadb_engine._Session, "_connection_room", lambda self: (100, 96))

    report = MariadbEngine().run_parallel(
        Operation.ANALYZE, mariadb_url, CancelToken(), None, TableScope(), None, 4
    )

    assert any(
        n.startswith("parallel: 2 lane(s) for 4 table(s) (4 wanted; max_connections 100, 96 connected")
        for n in report.notes
    )
    assert report.objects_processed == 4


@pytest.mark.parametrize(
    ("operation", "action"),
    [
        (Operation.VACUUM, TableAction.OPTIMIZE),
        (Operation.OPTIMIZE, TableAction.OPTIMIZE),
        (Operation.ANALYZE, TableAction.ANALYZE),
        (Operation.REINDEX, TableAction.REINDEX),
    ],
)
def test_every_table_of_a_whole_run_has_a_report_and_a_locked_one_reads_skip_locked(
    mariadb_url: URL, admin: Any, db: str, operation: Operation, action: TableAction
) -> None:
    make_table(admin, db, "busy", rows=200, fragment=False)
    make_table(admin, db, "free", rows=200, fragment=False)
    url = mariadb_url.update_query_dict({"lock_wait_timeout": "1"})
    holder = connect(mariadb_url)
    try:
        # A write lock (an open transaction that read the table is not enough: ANALYZE does not wait for it).
        query(holder, f"LOCK TABLES {q(db)}.busy WRITE")
        report = MariadbEngine().run(operation, url, CancelToken(), None, TableScope())
    finally:
        holder.close()

    tables = by_table(report)
    free, busy = tables["free"], tables["busy"]
    assert (free.schema, free.action, free.reasons) == (db, action, ())
    assert free.duration_seconds > 0
    assert set(free.before) == set(free.after) == FIGURES
    assert free.before["data_bytes"] > 0 and free.after["data_bytes"] > 0
    assert (busy.action, busy.reasons, busy.after) == (TableAction.SKIP, ("locked",), {})
    assert set(busy.before) == FIGURES


def test_a_failed_table_reports_its_action_and_no_figures_after(mariadb_url: URL, admin: Any, db: str) -> None:
    make_table(admin, db, "items", rows=200, fragment=False)
    query(admin, f"CREATE TABLE {q(db)}.part (id INT) ENGINE=MyISAM")
    query(admin, f"CREATE TABLE {q(db)}.merged (id INT) ENGINE=MRG_MyISAM UNION=({q(db)}.part)")
    query(admin, f"DROP TABLE {q(db)}.part")  # the MERGE table is now broken: OPTIMIZE answers with errors

    with pytest.raises(OperationFailed) as failure:
        MariadbEngine().run(Operation.OPTIMIZE, mariadb_url, CancelToken(), None, TableScope())

    assert failure.value.report is not None
    tables = by_table(failure.value.report)
    assert (tables["merged"].action, tables["merged"].after) == (TableAction.OPTIMIZE, {})
    assert (tables["items"].action, set(tables["items"].after)) == (TableAction.OPTIMIZE, FIGURES)


def in_thread(
    run: Callable[[], OperationReport],
) -> tuple[threading.Thread, list[OperationReport | BaseException]]:
    """``run`` on a thread of its own; the list gets its report or the exception it raised."""
    box: list[OperationReport | BaseException] = []

    def target() -> None:
        try:
            box.append(run())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box
