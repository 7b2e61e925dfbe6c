"""The observers' shared rules: urgency order, scope matching, thresholds by name."""

from __future__ import annotations

import pytest

from dbmaint.operations import TableAction, TableScope
from dbmaint.thresholds import Thresholds
from worker_service.engines.base import OperationFailed
from worker_service.engines.observe import TableObservation, by_urgency, in_scope


def observed(
    table: str, action: TableAction, urgency: float = 0.0, wanted: TableAction | None = None
) -> TableObservation:
    return TableObservation("s", table, action, ("reason",), {}, urgency, wanted)


def test_wraparound_comes_first_then_dead_tuple_ratio_then_bloat_bytes_then_the_rest() -> None:
    observations = [
        observed("analyze", TableAction.ANALYZE),
        observed("skip", TableAction.SKIP),
        observed("bloat-small", TableAction.REINDEX, urgency=1e6),
        observed("dead-low", TableAction.VACUUM, urgency=0.2),
        observed("invalid", TableAction.DROP_INVALID_INDEX),
        observed("bloat-big", TableAction.REINDEX, urgency=9e9),
        observed("freeze", TableAction.FREEZE, urgency=0.6),
        observed("dead-high", TableAction.VACUUM, urgency=0.9),
    ]

    order = [o.table for o in by_urgency(observations)]

    assert order == ["freeze", "dead-high", "dead-low", "bloat-big", "bloat-small", "invalid", "analyze", "skip"]


def test_a_skip_held_back_by_the_horizon_sorts_with_the_vacuum_it_wanted() -> None:
    held = observed("held", TableAction.SKIP, urgency=0.5, wanted=TableAction.VACUUM)
    order = by_urgency([observed("analyze", TableAction.ANALYZE), held, observed("dead", TableAction.VACUUM, 0.4)])
    assert [o.table for o in order] == ["held", "dead", "analyze"]


CATALOG = [("public", "a"), ("public", "b"), ("audit", "a"), ("audit", "log")]


def test_the_default_scope_is_the_tables_of_the_default_schemas() -> None:
    assert in_scope(CATALOG, TableScope(), ["public"]) == [("public", "a"), ("public", "b")]


def test_a_schema_scope_and_named_tables_match_the_catalog_exactly() -> None:
    assert in_scope(CATALOG, TableScope(schemas=("audit",)), ["public"]) == [("audit", "a"), ("audit", "log")]
    named = TableScope(tables=("a", "audit.log", "public.a"))
    assert in_scope(CATALOG, named, ["public"]) == [("public", "a"), ("audit", "log")]


def test_every_unknown_name_is_reported_at_once() -> None:
    with pytest.raises(OperationFailed, match=r"schema 'nope'.*table 'A' does not exist"):
        in_scope(CATALOG, TableScope(schemas=("nope",), tables=("A",)), ["public"])


def test_thresholds_are_overridden_by_name_and_a_negative_one_is_refused() -> None:
    assert Thresholds.from_mapping({"vacuum_scale_factor": 0.05}).vacuum_scale_factor == 0.05
    assert Thresholds.from_mapping({}).freeze_age_ratio == 0.5
    with pytest.raises(ValueError, match="must not be negative"):
        Thresholds.from_mapping({"bloat_min_bytes": -1})


def test_an_observation_becomes_a_table_report_with_its_evidence() -> None:
    observation = TableObservation("s", "t", TableAction.VACUUM, ("dead_tuples",), {"dead_tuples": 9.0}, 0.5)
    report = observation.report()
    assert (report.schema, report.table, report.action) == ("s", "t", TableAction.VACUUM)
    assert (report.reasons, dict(report.evidence), dict(report.after)) == (
        ("dead_tuples",),
        {"dead_tuples": 9.0},
        {},
    )
