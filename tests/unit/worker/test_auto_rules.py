"""The MODE_AUTO decision (``worker_service.engines.auto.decide``) and its report, without a database."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dbmaint.operations import Operation, OperationReport, TableAction, TableReport
from worker_service.engines.auto import ACTIONS_OF, auto_report, decide
from worker_service.engines.observe import TableObservation, by_urgency


def seen(
    table: str,
    action: TableAction,
    reasons: tuple[str, ...] = ("dead_tuples",),
    urgency: float = 0.0,
    wanted: TableAction | None = None,
    **evidence: float,
) -> TableObservation:
    return TableObservation("public", table, action, reasons, evidence, urgency, wanted)


def test_a_vacuum_child_acts_on_freeze_and_vacuum_proposals_in_urgency_order_and_skips_the_rest() -> None:
    observations = by_urgency(
        [
            seen("dirty", TableAction.VACUUM, urgency=0.4),
            seen("old", TableAction.FREEZE, ("xid_age",), urgency=0.6),
            seen("stale", TableAction.ANALYZE, ("stale_statistics",)),
            seen("clean", TableAction.SKIP, ("below_threshold",)),
        ]
    )

    decision = decide(Operation.VACUUM, observations)

    assert list(decision.acts) == [("public", "old"), ("public", "dirty")]
    assert decision.skipped == [("public", "stale"), ("public", "clean")]


def test_an_analyze_child_acts_only_on_stale_statistics() -> None:
    decision = decide(Operation.ANALYZE, [seen("a", TableAction.VACUUM), seen("b", TableAction.ANALYZE)])
    assert list(decision.acts) == [("public", "b")]


def test_an_optimize_child_folds_a_tables_vacuum_and_analyze_into_one_act() -> None:
    decision = decide(
        Operation.OPTIMIZE, [seen("t", TableAction.VACUUM), seen("t", TableAction.ANALYZE, ("stale_statistics",))]
    )
    assert [o.action for o in decision.acts[("public", "t")]] == [TableAction.VACUUM, TableAction.ANALYZE]


def test_a_held_horizon_skip_keeps_its_reasons_and_a_table_below_every_threshold_says_so() -> None:
    held = seen("held", TableAction.SKIP, ("dead_tuples", "xmin_horizon_held"), wanted=TableAction.VACUUM)
    clean = seen("clean", TableAction.SKIP, ("below_threshold",))
    decision = decide(Operation.VACUUM, [held, clean])

    report = auto_report("pg", Operation.VACUUM, decision, 100, None, (), None, 0.0)

    assert [(t.table, t.action, t.reasons) for t in report.tables] == [
        ("held", TableAction.SKIP, ("dead_tuples", "xmin_horizon_held")),
        ("clean", TableAction.SKIP, ("below_threshold",)),
    ]
    assert report.notes[0] == "auto: 2 table(s) observed, 0 acted on, 2 skipped"
    assert "auto: skipped public.held (dead_tuples, xmin_horizon_held)" in report.notes
    assert report.bytes_after == report.bytes_before == 100


def test_a_table_the_engine_skipped_at_run_time_reads_skip_locked_with_its_duration() -> None:
    decision = decide(Operation.VACUUM, [seen("t", TableAction.VACUUM, dead_tuples=10)])
    ran = OperationReport(
        engine="pg",
        objects_skipped=1,
        tables=(TableReport("public", "t", TableAction.SKIP, ("locked",), duration_seconds=0.5),),
    )

    (table,) = auto_report("pg", Operation.VACUUM, decision, 100, ran, (), 90, 0.0).tables

    assert (table.action, table.reasons, table.duration_seconds) == (
        TableAction.SKIP,
        ("dead_tuples", "locked"),
        0.5,
    )
    assert table.before == {"dead_tuples": 10}


actions = st.sampled_from(list(TableAction))
observations = st.lists(
    st.builds(
        seen,
        st.sampled_from(["a", "b", "c", "d"]),
        actions,
        st.just(("dead_tuples",)),
        st.floats(0, 1),
        st.one_of(st.none(), actions.filter(lambda a: a is not TableAction.SKIP)),
    ),
    max_size=12,
)


@given(st.sampled_from(list(Operation)), observations)
def test_every_table_observed_is_either_acted_on_or_skipped_and_only_with_its_operations_actions(
    operation: Operation, found: list[TableObservation]
) -> None:
    decision = decide(operation, by_urgency(found))

    tables = {(o.schema, o.table) for o in found}
    assert set(decision.acts) | set(decision.skipped) == tables
    assert not set(decision.acts) & set(decision.skipped)
    for acting in decision.acts.values():
        assert acting and all(o.action in ACTIONS_OF[operation] for o in acting)
    report = auto_report("x", operation, decision, 0, None, (), None, 0.0)
    assert [(t.schema, t.table) for t in report.tables] == list(decision.observed)
