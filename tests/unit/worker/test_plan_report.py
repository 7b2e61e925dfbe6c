"""The report of a PLAN run, built from observations: what it counts, what it notes, what it leaves out."""

from __future__ import annotations

import pytest

from dbmaint.operations import TableAction
from worker_service.engines.observe import TableObservation, skip
from worker_service.engines.plan import plan_report
from worker_service.engines.tables import MAX_TABLE_NOTES

VACUUM = TableObservation(
    "public", "orders", TableAction.VACUUM, ("dead_tuples",), {"dead_tuples": 500.0, "dead_ratio": 0.5}, 0.5
)
ANALYZE = TableObservation("public", "orders", TableAction.ANALYZE, ("stale_statistics",), {"modified": 9.0})
HELD = TableObservation(
    "public",
    "events",
    TableAction.SKIP,
    ("dead_tuples", "xmin_horizon_held"),
    {"xmin_holder_pid": 42.0},
    wanted=TableAction.VACUUM,
)
CLEAN = skip("public", "users", {"dead_tuples": 0.0})


def test_the_report_counts_tables_observed_as_skipped_and_nothing_processed() -> None:
    report = plan_report("postgresql", [VACUUM, ANALYZE, HELD, CLEAN], 8192, 0.0)

    assert (report.objects_processed, report.objects_skipped) == (0, 3)  # orders counts once
    assert report.bytes_before == report.bytes_after == 8192
    assert report.notes == (
        "plan: 3 table(s) observed, nothing changed",
        "plan: vacuum public.orders (dead_tuples)",
        "plan: analyze public.orders (stale_statistics)",
        "plan: skip (wanted vacuum) public.events (dead_tuples, xmin_horizon_held)",
    )


def test_each_observation_becomes_a_table_report_with_its_figures_before_and_nothing_after() -> None:
    (vacuum, *_) = plan_report("postgresql", [VACUUM, CLEAN], 0, 0.0).tables

    assert (vacuum.schema, vacuum.table, vacuum.action, vacuum.reasons) == (
        "public",
        "orders",
        TableAction.VACUUM,
        ("dead_tuples",),
    )
    assert vacuum.evidence == vacuum.before == {"dead_tuples": 500.0, "dead_ratio": 0.5}
    assert vacuum.after == {} and vacuum.duration_seconds == 0.0


def test_the_whole_file_is_noted_but_not_counted_as_a_table() -> None:
    freelist = TableObservation("main", "", TableAction.VACUUM, ("freelist",), {"free_ratio": 0.5}, 0.5)

    report = plan_report("sqlite", [freelist], 4096, 0.0)

    assert report.objects_skipped == 0
    assert report.notes == (
        "plan: 0 table(s) observed, nothing changed",
        "plan: vacuum the database file (main) (freelist)",
    )


@pytest.mark.parametrize("extra", [1, 7])
def test_the_action_notes_are_capped_and_the_rest_counted(extra: int) -> None:
    many = [
        TableObservation("s", f"t{i}", TableAction.VACUUM, ("dead_tuples",))
        for i in range(MAX_TABLE_NOTES + extra)
    ]

    notes = plan_report("postgresql", many, 0, 0.0).notes

    assert len(notes) == 1 + MAX_TABLE_NOTES + 1
    assert notes[-1] == f"{extra} more proposed actions left out (limit {MAX_TABLE_NOTES})"
