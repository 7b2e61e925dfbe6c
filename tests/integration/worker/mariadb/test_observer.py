"""The MariaDB observer on a real server: DATA_FREE of a fragmented table, its engine and row count, and what
a table in the system tablespace (no space returned) gets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL

from dbmaint.operations import TableAction, TableScope
from dbmaint.thresholds import Thresholds
from tests.support.mariadb import connect, make_table, table_info
from worker_service.engines import observe_mariadb as module
from worker_service.engines.base import OperationFailed
from worker_service.engines.observe_mariadb import observe_mariadb

ANY_FREE_SPACE = Thresholds.from_mapping({"data_free_min_bytes": 1, "data_free_min_ratio": 0.01})


@pytest.fixture
def fragmented(admin: Any, db: str) -> int:
    """items: 4000 rows of ~1 KB, three quarters deleted and purged; plain: 200 rows of MyISAM. DATA_FREE of
    items is returned."""
    make_table(admin, db, "plain", rows=200, engine="MyISAM", fragment=False)
    return make_table(admin, db, "items").data_free


@pytest.fixture
def observer(mariadb_url: URL) -> Iterator[Any]:
    conn = connect(mariadb_url)
    try:
        yield conn
    finally:
        conn.close()


def test_the_data_free_of_a_fragmented_table_is_reported_from_the_catalog(
    fragmented: int, observer: Any, admin: Any, db: str
) -> None:
    (items,) = [o for o in observe_mariadb(observer, TableScope(), ANY_FREE_SPACE) if o.table == "items"]

    info = table_info(admin, db, "items")
    assert (items.schema, items.action, items.reasons) == (db, TableAction.OPTIMIZE, ("data_free",))
    assert items.evidence["data_free_bytes"] == info.data_free == fragmented > 0
    assert items.evidence["data_bytes"] == info.data_length
    assert items.evidence["engine_innodb"] == 1 and items.evidence["file_per_table"] == 1
    assert items.evidence["in_system_tablespace"] == 0 and items.evidence["rows"] > 0


def test_with_the_default_thresholds_a_few_free_megabytes_are_below_threshold(
    fragmented: int, observer: Any
) -> None:
    observations = {o.table: o for o in observe_mariadb(observer, TableScope())}

    assert set(observations) == {"items", "plain"}
    assert observations["items"].action is TableAction.SKIP
    assert observations["items"].reasons == ("below_threshold",)
    assert observations["items"].evidence["data_free_min_bytes"] == 16 * 1024 * 1024
    assert observations["plain"].evidence["engine_myisam"] == 1


def test_a_table_in_the_system_tablespace_is_skipped_because_no_space_would_be_returned(
    fragmented: int, observer: Any, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Creating one needs innodb_file_per_table=OFF, a global setting other tests would see: the view that
    # tells is replaced instead.
    monkeypatch.setattr(module, "_system_tablespace_tables", lambda cursor: {f"{db}/items"})

    (items,) = observe_mariadb(observer, TableScope(tables=("items",)), ANY_FREE_SPACE)

    assert items.action is TableAction.SKIP and items.wanted is TableAction.OPTIMIZE
    assert items.reasons == ("data_free", "no_space_returned")
    assert items.evidence["in_system_tablespace"] == 1


def test_observing_changes_nothing(fragmented: int, observer: Any, admin: Any, db: str) -> None:
    before = table_info(admin, db, "items")

    observe_mariadb(observer, TableScope(), ANY_FREE_SPACE)

    assert table_info(admin, db, "items") == before


def test_an_unknown_table_is_named(fragmented: int, observer: Any) -> None:
    with pytest.raises(OperationFailed, match="'missing' does not exist"):
        observe_mariadb(observer, TableScope(tables=("missing",)))


def test_without_a_current_database_the_scope_must_name_one(fragmented: int, mariadb_url: URL, db: str) -> None:
    conn = connect(mariadb_url, database=None)
    try:
        with pytest.raises(OperationFailed, match="no current database"):
            observe_mariadb(conn, TableScope())
        assert {o.table for o in observe_mariadb(conn, TableScope(schemas=(db,)))} == {"items", "plain"}
    finally:
        conn.close()
