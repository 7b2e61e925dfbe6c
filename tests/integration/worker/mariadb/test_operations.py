"""The MariaDB engine on a real server: what each operation does to the catalog, and which tables it covers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation, OperationReport, TableScope
from tests.support.mariadb import insert_rows, make_table, persistent_stats, q, query, table_info
from tests.support.servers import fresh_mariadb_database
from worker_service.cancel import CancelToken
from worker_service.engines.base import OperationFailed
from worker_service.engines.mariadb import MariadbEngine
from worker_service.executor import Assignment, run_assignment
from worker_service.targets import BoundTarget


def run_op(url: URL, operation: Operation, scope: TableScope | None = None) -> OperationReport:
    return MariadbEngine(dialect=url.get_backend_name()).run(
        operation, url, CancelToken(), None, scope or TableScope()
    )


def note(report: OperationReport, prefix: str) -> str:
    return next(n for n in report.notes if n.startswith(prefix))


def assignment(operation: str, **config: Any) -> Assignment:
    return Assignment(
        job_id="job-1",
        attempt=1,
        target="maria",
        operation=operation,
        job_type=CHILD_JOB_TYPE,
        config={"operation": operation, "target": "maria", **config},
    )


@pytest.mark.parametrize(
    ("operation", "drivername"),
    [
        (Operation.VACUUM, "mysql+pymysql"),
        (Operation.OPTIMIZE, "mariadb+pymysql"),
    ],
)
def test_vacuum_and_optimize_rebuild_the_table_and_give_back_its_free_space(
    mariadb_url: URL, admin: Any, db: str, operation: Operation, drivername: str
) -> None:
    before = make_table(admin, db, "items")
    assert before.data_free > 0 and before.rows == 1000

    report = run_op(mariadb_url.set(drivername=drivername), operation)

    after = table_info(admin, db, "items")
    assert after.data_free < before.data_free
    assert after.size < before.size
    assert after.space != before.space, "OPTIMIZE recreated the table"
    assert after.rows == before.rows
    assert report.engine == "mariadb"
    assert (report.objects_processed, report.objects_skipped) == (1, 0)
    assert (report.bytes_before, report.bytes_after) == (before.size, after.size)
    assert f"statement: OPTIMIZE NO_WRITE_TO_BINLOG TABLE `{db}`.`items`" in report.notes
    detail = note(report, f"`{db}`.`items`: processed")
    assert "note: Table does not support optimize, doing recreate + analyze instead | status: OK" in detail
    assert f"size {before.size} -> {after.size} bytes" in detail
    assert f"data_free {before.data_free} -> {after.data_free} bytes" in detail
    assert "out of date" not in detail, "the statistics were fresh"
    assert note(report, "data_free (reclaimable):") == (
        f"data_free (reclaimable): {before.data_free} -> {after.data_free} bytes"
    )
    assert "tables: 1 processed, 0 skipped, 0 failed" in report.notes


def test_analyze_refreshes_the_persistent_statistics(mariadb_url: URL, admin: Any, db: str) -> None:
    # No automatic recalculation: only ANALYZE brings mysql.innodb_table_stats up to date.
    make_table(admin, db, "items", rows=3000, options="STATS_AUTO_RECALC=0", fragment=False)
    query(admin, insert_rows(db, "items", 3001, 6000))
    stale = persistent_stats(admin, db, "items")
    assert stale is not None and stale[0] < 1000, stale
    space = table_info(admin, db, "items").space

    report = run_op(mariadb_url, Operation.ANALYZE)

    fresh = persistent_stats(admin, db, "items")
    assert fresh is not None
    assert 0.8 * 6000 <= fresh[0] <= 1.2 * 6000, fresh
    assert fresh[1] >= stale[1]
    assert table_info(admin, db, "items").space == space, "ANALYZE does not rebuild"
    assert f"statement: ANALYZE NO_WRITE_TO_BINLOG TABLE `{db}`.`items`" in report.notes
    assert "messages: status: OK" in note(report, f"`{db}`.`items`: processed")
    assert report.objects_processed == 1


def test_reindex_rebuilds_online(mariadb_url: URL, admin: Any, db: str) -> None:
    before = make_table(admin, db, "items")

    report = run_op(mariadb_url, Operation.REINDEX)

    after = table_info(admin, db, "items")
    assert after.space != before.space, "the table got a new tablespace"
    assert after.size < before.size and after.data_free < before.data_free
    assert after.rows == before.rows
    assert query(admin, f"CHECK TABLE {q(db)}.items")[-1][2:] == ("status", "OK")
    assert f"statement: ALTER TABLE `{db}`.`items` FORCE, ALGORITHM=INPLACE, LOCK=NONE" in report.notes
    assert (report.bytes_before, report.bytes_after) == (before.size, after.size)
    assert report.objects_processed == 1


def test_reindex_skips_tables_that_cannot_be_rebuilt_online(mariadb_url: URL, admin: Any, db: str) -> None:
    make_table(admin, db, "plain", rows=200, engine="MyISAM", fragment=False)
    query(admin, f"CREATE TABLE {q(db)}.docs (id INT PRIMARY KEY, body TEXT, FULLTEXT KEY (body)) ENGINE=InnoDB")
    ok = make_table(admin, db, "items", rows=200, fragment=False)
    target = BoundTarget("maria", mariadb_url, MariadbEngine())

    outcome = run_assignment(assignment("reindex"), target, CancelToken())

    assert outcome.status == JobStatus.COMPLETED, outcome.error
    report = outcome.report
    assert report is not None
    assert (report.objects_processed, report.objects_skipped) == (1, 2)
    assert table_info(admin, db, "items").space != ok.space
    plain = note(report, f"`{db}`.`plain`: skipped")
    assert "cannot be rebuilt online" in plain and "ALGORITHM=INPLACE is not supported" in plain
    docs = note(report, f"`{db}`.`docs`: skipped")
    assert "LOCK=NONE is not supported" in docs
    assert "tables: 1 processed, 2 skipped, 0 failed" in report.notes


def test_a_table_that_errors_fails_the_child_and_is_named(mariadb_url: URL, admin: Any, db: str) -> None:
    make_table(admin, db, "items", rows=200, fragment=False)
    query(admin, f"CREATE TABLE {q(db)}.part (id INT) ENGINE=MyISAM")
    query(admin, f"CREATE TABLE {q(db)}.merged (id INT) ENGINE=MRG_MyISAM UNION=({q(db)}.part)")
    query(admin, f"DROP TABLE {q(db)}.part")  # the MERGE table is now broken: OPTIMIZE answers with errors
    target = BoundTarget("maria", mariadb_url, MariadbEngine())

    outcome = run_assignment(assignment("optimize"), target, CancelToken())

    assert outcome.status == JobStatus.FAILED
    assert outcome.error.startswith("optimize failed on 1 of 2 table(s): ")
    assert f"`{db}`.`merged`: " in outcome.error and "Unable to open underlying table" in outcome.error
    assert "items" not in outcome.error
    report = outcome.report
    assert report is not None, "the figures gathered travel with the failure"
    assert (report.objects_processed, report.objects_skipped) == (1, 1)
    assert "tables: 1 processed, 0 skipped, 1 failed" in report.notes
    assert "messages: error: " in note(report, f"`{db}`.`merged`: failed")


def test_scope_narrows_to_the_named_tables(mariadb_url: URL, admin: Any, db: str) -> None:
    spaces = {name: make_table(admin, db, name, rows=200, fragment=False).space for name in ("a", "b", "c")}

    report = run_op(mariadb_url, Operation.REINDEX, TableScope(tables=("a", f"{db}.c", "a")))

    rebuilt = {name for name in spaces if table_info(admin, db, name).space != spaces[name]}
    assert rebuilt == {"a", "c"}
    assert report.objects_processed == 2
    statements = [n for n in report.notes if n.startswith("statement: ")]
    assert statements == [
        f"statement: ALTER TABLE `{db}`.`a` FORCE, ALGORITHM=INPLACE, LOCK=NONE",
        f"statement: ALTER TABLE `{db}`.`c` FORCE, ALGORITHM=INPLACE, LOCK=NONE",
    ]


def test_scope_schemas_are_databases_and_replace_the_urls(mariadb_url: URL, admin: Any, db: str) -> None:
    home = make_table(admin, db, "home", rows=200, fragment=False)
    with fresh_mariadb_database() as other_url:
        other = other_url.database
        assert other
        away = make_table(admin, other, "away", rows=200, fragment=False)

        report = run_op(mariadb_url, Operation.REINDEX, TableScope(schemas=(other,)))

        assert table_info(admin, other, "away").space != away.space
        assert table_info(admin, db, "home").space == home.space, "the URL's database is not in scope"
        assert report.objects_processed == 1
        assert f"statement: ALTER TABLE `{other}`.`away` FORCE, ALGORITHM=INPLACE, LOCK=NONE" in report.notes


def test_a_url_without_database_needs_a_scope(mariadb_url: URL, admin: Any, db: str) -> None:
    before = make_table(admin, db, "items", rows=200, fragment=False)
    server = URL.create(
        mariadb_url.drivername, mariadb_url.username, mariadb_url.password, mariadb_url.host, mariadb_url.port
    )
    assert server.database is None

    with pytest.raises(OperationFailed, match="the target URL names no database"):
        run_op(server, Operation.REINDEX)
    with pytest.raises(OperationFailed, match=r"name it as database\.table"):
        run_op(server, Operation.REINDEX, TableScope(tables=("items",)))
    assert table_info(admin, db, "items").space == before.space

    report = run_op(server, Operation.REINDEX, TableScope(schemas=(db,), tables=("items",)))
    assert report.objects_processed == 1
    assert table_info(admin, db, "items").space != before.space


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (TableScope(tables=("missing",)), "table 'missing' does not exist: no base table 'missing' in '{db}'"),
        (TableScope(tables=("nodb.items",)), "database 'nodb' does not exist"),
        (TableScope(schemas=("nodb",)), "database 'nodb' does not exist"),
        (TableScope(schemas=("mysql",)), "database 'mysql' is a system database"),
        (TableScope(tables=("information_schema.TABLES",)), "database 'information_schema' is a system database"),
        (TableScope(tables=("a_view",)), "table 'a_view' does not exist"),
        (TableScope(tables=("ITEMS",)), "table 'ITEMS' does not exist"),
        (TableScope(tables=("x`; DROP TABLE items; --",)), "table 'x`; DROP TABLE items; --' does not exist"),
        (TableScope(tables=("items`; DROP TABLE items; --",)), "does not exist"),
    ],
)
def test_unknown_names_fail_before_any_statement(
    mariadb_url: URL, admin: Any, db: str, scope: TableScope, expected: str
) -> None:
    before = make_table(admin, db, "items", rows=200, fragment=False)
    query(admin, f"CREATE VIEW {q(db)}.a_view AS SELECT id FROM {q(db)}.items")
    target = BoundTarget("maria", mariadb_url, MariadbEngine())

    outcome = run_assignment(assignment("reindex", **scope.to_config()), target, CancelToken())

    assert outcome.status == JobStatus.FAILED
    assert expected.format(db=db) in outcome.error
    after = table_info(admin, db, "items")
    assert after.space == before.space and after.rows == before.rows, "nothing ran, nothing was dropped"


def test_an_empty_database_completes_with_nothing_to_do(mariadb_url: URL) -> None:
    report = run_op(mariadb_url, Operation.VACUUM)
    assert (report.objects_processed, report.objects_skipped, report.bytes_before) == (0, 0, 0)
    assert "no tables in scope: nothing to do" in report.notes


def test_a_size_before_from_outdated_statistics_is_flagged(mariadb_url: URL, admin: Any, db: str) -> None:
    """DATA_LENGTH comes from InnoDB's persistent statistics: written after them, the table's size is unknown."""
    make_table(admin, db, "items", rows=100, options="STATS_AUTO_RECALC=0", fragment=False)
    time.sleep(1.05)  # both times count whole seconds
    query(admin, insert_rows(db, "items", 101, 3000))
    before = table_info(admin, db, "items")

    report = run_op(mariadb_url, Operation.VACUUM)

    assert report.bytes_before == before.size
    detail = note(report, f"`{db}`.`items`: processed")
    assert "(size before from statistics older than the last write: may be out of date)" in detail
    assert "the statistics of 1 table(s) predate their last write" in note(report, "size (data + index):")
