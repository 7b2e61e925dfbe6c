"""TableReport: the store's JSON round trip, the protobuf round trip, and the manager's sanitizing."""

from __future__ import annotations

import json

from dbmaint import wire
from dbmaint.operations import OperationReport, Reason, TableAction, TableReport
from dbmaint.v1 import maintenance_pb2 as pb
from manager_service.validation import REPORT_MAX_TABLES, REPORT_NAME_MAX_LENGTH, sanitize_report

BLOATED = TableReport(
    schema="public",
    table="bloated",
    action=TableAction.VACUUM,
    reasons=(Reason.DEAD_TUPLES.value,),
    evidence={"dead_tuples": 5000.0, "dead_ratio": 0.5},
    before={"dead_tuples": 5000.0},
    after={"dead_tuples": 0.0},
    duration_seconds=1.25,
)
CLEAN = TableReport(schema="public", table="clean", action=TableAction.SKIP, reasons=("below_threshold",))
REPORT = OperationReport(engine="postgresql", objects_processed=2, notes=("VACUUM",), tables=(BLOATED, CLEAN))


def test_a_report_with_tables_survives_the_stores_json() -> None:
    stored = json.loads(json.dumps(REPORT.to_dict()))
    assert OperationReport.from_dict(stored) == REPORT


def test_a_report_stored_before_tables_existed_reads_with_none() -> None:
    old = {"engine": "sqlite", "notes": ["VACUUM"]}
    assert OperationReport.from_dict(old).tables == ()


def test_an_unknown_action_in_the_store_reads_as_unspecified() -> None:
    assert TableReport.from_dict({"schema": "s", "table": "t", "action": "shrink"}).action is None


def test_a_report_with_tables_survives_the_protobuf_round_trip() -> None:
    message = wire.report_to_proto(REPORT)
    assert message.tables[0].action == pb.TABLE_ACTION_VACUUM
    assert message.tables[1].action == pb.TABLE_ACTION_SKIP
    assert message.tables[0].duration.ToMilliseconds() == 1250
    parsed = pb.OperationResult.FromString(message.SerializeToString())
    assert wire.report_from_proto(parsed) == REPORT


def test_every_table_action_has_a_proto_value() -> None:
    for action in TableAction:
        report = TableReport(schema="s", table="t", action=action)
        assert wire.table_report_from_proto(wire.table_report_to_proto(report)).action is action


def test_table_reports_from_a_worker_are_sanitized_and_bounded() -> None:
    hostile = TableReport(
        schema="s\x00",
        table="t" * 1000,
        reasons=("dead\x1btuples",),
        evidence={f"figure{i}": float(i) for i in range(500)},
    )
    clean = sanitize_report(OperationReport(engine="postgresql", tables=(hostile,) * (REPORT_MAX_TABLES + 5)))
    assert len(clean.tables) == REPORT_MAX_TABLES
    first = clean.tables[0]
    assert first.schema == "s\ufffd"
    assert len(first.table) == REPORT_NAME_MAX_LENGTH
    assert first.reasons == ("dead\ufffdtuples",)
    assert len(first.evidence) < 500


def test_figures_that_json_cannot_hold_are_dropped() -> None:
    odd = TableReport(schema="s", table="t", evidence={"nan": float("nan"), "inf": float("inf"), "ok": 1.0})
    (clean,) = sanitize_report(OperationReport(engine="postgresql", tables=(odd,))).tables
    assert dict(clean.evidence) == {"ok": 1.0}


def test_clean_table_reports_are_left_unchanged() -> None:
    assert sanitize_report(REPORT) == REPORT
