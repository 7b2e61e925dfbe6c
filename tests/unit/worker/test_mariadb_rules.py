"""The MariaDB engine's pure rules: how many parallel lanes the server's free connections allow, and which
statement a MODE_AUTO table's actions call for."""

from __future__ import annotations

import pytest

from dbmaint.operations import TableAction
from worker_service.engines.mariadb import extra_lanes, statement_for

OPTIMIZE = "OPTIMIZE NO_WRITE_TO_BINLOG TABLE {table}"
ANALYZE = "ANALYZE NO_WRITE_TO_BINLOG TABLE {table}"
REBUILD = "ALTER TABLE {table} FORCE, ALGORITHM=INPLACE, LOCK=NONE"


@pytest.mark.parametrize(
    ("wanted", "max_connections", "connected", "lanes"),
    [
        (3, 151, 10, 3),  # plenty of room: as many as wanted
        (7, 100, 90, 4),  # 10 free: one kept for the main KILL QUERY, two per lane
        (3, 100, 96, 1),  # 4 free: one lane
        (3, 100, 98, 0),  # 2 free: none, the child runs on its main connection alone
        (3, 100, 120, 0),  # over the limit (SUPER sessions may be): none, never negative
    ],
)
def test_each_extra_lane_takes_two_free_connections_and_one_stays_free_for_the_main_kill(
    wanted: int, max_connections: int, connected: int, lanes: int
) -> None:
    assert extra_lanes(wanted, max_connections, connected) == lanes


@pytest.mark.parametrize(
    ("actions", "statement"),
    [
        ((TableAction.OPTIMIZE,), OPTIMIZE),
        ((TableAction.VACUUM,), OPTIMIZE),
        ((TableAction.FREEZE, TableAction.ANALYZE), OPTIMIZE),
        ((TableAction.ANALYZE, TableAction.OPTIMIZE), OPTIMIZE),  # the rebuild analyzes too
        ((TableAction.ANALYZE,), ANALYZE),
        ((TableAction.REINDEX,), REBUILD),
        ((TableAction.ANALYZE, TableAction.REINDEX), REBUILD),
        ((TableAction.DROP_INVALID_INDEX,), None),
        ((TableAction.SKIP,), None),
    ],
)
def test_the_statement_a_tables_actions_call_for(actions: tuple[TableAction, ...], statement: str | None) -> None:
    assert statement_for(actions) == statement
