"""`dbmaint plan` against the in-process fake manager: a MODE_PLAN parent, waited for alone, then each child's
table reports (GetJob of the child) in one table across the fleet, most urgent first, with totals."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from dbmaint import wire
from dbmaint.cli.plan import CARRIED_OUT_BY, newest_maintenance
from dbmaint.operations import CHILD_JOB_TYPE
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.cli import Run
from tests.support.fake_manager_for_cli import FakeManager

Cli = Callable[..., Run]


def report(table: str, action: int, reasons: list[str], **evidence: float) -> pb.TableReport:
    return pb.TableReport(schema="public", table=table, action=action, reasons=reasons, evidence=evidence)


@pytest.fixture
def fleet(fake: FakeManager) -> FakeManager:
    """Two targets whose plan children report a mix of actions; children run by themselves."""
    fake.service.autorun = True
    fake.service.step = 0.005
    fake.service.plan_reports = {
        "alpha": [
            report("clean", pb.TABLE_ACTION_SKIP, ["below_threshold"], dead_ratio=0.01, size_bytes=8192),
            report("orders", pb.TABLE_ACTION_VACUUM, ["dead_tuples"], dead_ratio=0.2, dead_tuples=2000),
            report("events", pb.TABLE_ACTION_ANALYZE, ["stale_statistics"], modified_since_analyze=900),
        ],
        "beta": [
            report(
                "ledger",
                pb.TABLE_ACTION_FREEZE,
                ["xid_age"],
                xid_age=180e6,
                freeze_max_age=200e6,
                seconds_since_vacuum=3 * 86400,
            ),
            report("users", pb.TABLE_ACTION_VACUUM, ["dead_tuples"], dead_ratio=0.6, size_bytes=3 * 1024 * 1024),
        ],
    }
    return fake


def body_rows(out: str) -> list[list[str]]:
    """The cells of every body row of the rich table."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def test_plan_creates_a_plan_parent_with_the_scope_and_waits_for_the_parent_alone(
    cli: Cli, fleet: FakeManager
) -> None:
    result = cli("plan", "alpha", "-o", "vacuum", "--schema", "public", "--table", "public.orders")

    assert result.code == 0, result.err
    create = next(r for r in fleet.service.requests if isinstance(r, pb.CreateMaintenanceRequest))
    assert create.mode == pb.MODE_PLAN
    assert list(create.operations) == [pb.OPERATION_VACUUM]
    assert list(create.schemas) == ["public"] and list(create.tables) == ["public.orders"]
    watches = [r for r in fleet.service.requests if isinstance(r, pb.WatchJobRequest)]
    assert watches and all(watch.job_only for watch in watches)


def test_plan_shows_every_table_of_the_fleet_most_urgent_first_with_totals(cli: Cli, fleet: FakeManager) -> None:
    result = cli("plan", "alpha", "beta", "-o", "vacuum")

    assert result.code == 0, result.err
    rows = body_rows(result.out)
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("beta", "public.ledger", "freeze"),
        ("beta", "public.users", "vacuum"),
        ("alpha", "public.orders", "vacuum"),
        ("alpha", "public.events", "analyze"),
        ("alpha", "public.clean", "skip"),
    ]
    ledger, users = rows[0], rows[1]
    assert ledger[3] == "xid_age" and "xid_age 180,000,000" in ledger[4] and ledger[6] == "vacuum 3.0d ago"
    assert "dead_ratio 60.0%" in users[4] and users[5] == "3.0 MiB"
    assert "5 table(s) observed on 2 target(s): 1 freeze, 2 vacuum, 1 analyze, 1 skip" in result.out
    assert "nothing was changed" in result.out


def test_a_table_reported_by_several_children_of_a_target_is_shown_once(cli: Cli, fleet: FakeManager) -> None:
    result = cli("plan", "alpha", "-o", "vacuum", "-o", "analyze")

    assert result.code == 0, result.err
    assert len(body_rows(result.out)) == 3
    assert "3 table(s) observed on 1 target(s)" in result.out


def test_a_failed_plan_child_is_named_and_the_exit_code_says_it_did_not_complete(
    cli: Cli, fleet: FakeManager
) -> None:
    result = cli("plan", "alpha", "broken1", "-o", "vacuum")

    assert result.code == 1
    assert "broken1: failed: database disk image is malformed" in result.out
    assert len(body_rows(result.out)) == 3


def test_plan_json_prints_each_childs_reports_in_the_protobuf_json_mapping(cli: Cli, fleet: FakeManager) -> None:
    result = cli("plan", "beta", "-o", "vacuum", "--json")

    assert result.code == 0, result.err
    document = json.loads(result.out)
    (child,) = document["children"]
    assert child["target"] == "beta" and child["status"] == "JOB_STATUS_COMPLETED"
    assert child["tables"][0] == {
        "schema": "public",
        "table": "ledger",
        "action": "TABLE_ACTION_FREEZE",
        "reasons": ["xid_age"],
        "evidence": {"xid_age": 180e6, "freeze_max_age": 200e6, "seconds_since_vacuum": 3 * 86400.0},
    }


def test_plan_reopens_a_watch_the_manager_dropped(cli: Cli, fleet: FakeManager) -> None:
    fleet.service.drop_watches = 1
    result = cli("plan", "beta", "-o", "vacuum")

    assert result.code == 0, result.err
    assert sum(isinstance(r, pb.WatchJobRequest) for r in fleet.service.requests) >= 2
    assert "2 table(s) observed on 1 target(s)" in result.out


def timed(table: str, action: int, seconds: float) -> pb.TableReport:
    """A table an earlier (non-plan) child maintained, and how long it took."""
    return pb.TableReport(schema="public", table=table, action=action, duration=wire.duration(seconds))


def maintain(cli: Cli, fake: FakeManager, *args: str) -> pb.Job:
    """Runs `dbmaint create ARGS` to its end (the fake plays the children); returns the parent."""
    before = set(fake.service.children)
    assert cli("create", *args).code == 0
    (parent_id,) = set(fake.service.children) - before
    return fake.wait_terminal(parent_id)


def previous_column(out: str) -> dict[tuple[str, str, str], str]:
    return {(row[0], row[1], row[2]): row[7] for row in body_rows(out)}


def test_the_previous_column_shows_how_long_the_last_auto_run_took_on_each_table(
    cli: Cli, fleet: FakeManager
) -> None:
    fleet.service.auto_reports = {
        "alpha": [
            timed("orders", pb.TABLE_ACTION_VACUUM, 1.5),
            timed("clean", pb.TABLE_ACTION_SKIP, 0.0),
        ]
    }
    maintain(cli, fleet, "alpha", "-o", "vacuum", "--mode", "auto")

    result = cli("plan", "alpha", "-o", "vacuum")

    assert result.code == 0, result.err
    assert previous_column(result.out) == {
        ("alpha", "public.orders", "vacuum"): "1.50s",
        ("alpha", "public.events", "analyze"): "-",  # no analyze (or optimize) child is planned: none is read
        ("alpha", "public.clean", "skip"): "-",  # the earlier child skipped it: no maintenance to time
    }


def test_only_the_newest_earlier_child_of_a_target_and_operation_is_read(cli: Cli, fleet: FakeManager) -> None:
    fleet.service.auto_reports = {"alpha": [timed("orders", pb.TABLE_ACTION_VACUUM, 9.0)]}
    older = maintain(cli, fleet, "alpha", "-o", "vacuum", "--mode", "auto")
    fleet.service.auto_reports = {"alpha": [timed("orders", pb.TABLE_ACTION_VACUUM, 1.5)]}
    maintain(cli, fleet, "alpha", "-o", "vacuum", "-o", "analyze", "--mode", "auto")
    maintain(cli, fleet, "beta", "-o", "vacuum", "--mode", "auto")
    fleet.service.requests.clear()

    result = cli("plan", "alpha", "-o", "vacuum")

    assert result.code == 0, result.err
    assert previous_column(result.out)[("alpha", "public.orders", "vacuum")] == "1.50s"
    (listing,) = [r for r in fleet.service.requests if isinstance(r, pb.ListJobsRequest)]
    assert (listing.type, listing.status, listing.page_size) == (CHILD_JOB_TYPE, pb.JOB_STATUS_COMPLETED, 500)
    plan_parent = next(iter(fleet.service.plan_parents))
    history_reads = [
        r.id
        for r in fleet.service.requests
        if isinstance(r, pb.GetJobRequest)
        and r.id not in fleet.service.children[plan_parent]
        and r.id != plan_parent
    ]
    assert len(history_reads) == 1  # alpha/vacuum only: not alpha/analyze, not beta, not the older run
    assert history_reads[0] not in fleet.service.children[older.id]


def test_a_plan_child_is_never_the_previous_run_even_when_it_is_newer(cli: Cli, fleet: FakeManager) -> None:
    fleet.service.auto_reports = {"alpha": [timed("orders", pb.TABLE_ACTION_VACUUM, 1.5)]}
    maintain(cli, fleet, "alpha", "-o", "vacuum", "--mode", "auto")
    fleet.service.plan_reports["alpha"] = [timed("orders", pb.TABLE_ACTION_VACUUM, 7.0)]
    assert cli("plan", "alpha", "-o", "vacuum").code == 0

    result = cli("plan", "alpha", "-o", "vacuum")

    assert previous_column(result.out)[("alpha", "public.orders", "vacuum")] == "1.50s"


def test_without_any_earlier_child_every_previous_cell_is_a_dash_and_nothing_more_is_read(
    cli: Cli, fleet: FakeManager
) -> None:
    maintain(cli, fleet, "gamma", "-o", "vacuum", "--mode", "auto")  # history, but of another target

    result = cli("plan", "alpha", "beta", "-o", "vacuum")

    assert result.code == 0, result.err
    assert set(previous_column(result.out).values()) == {"-"}
    plan_parent = next(iter(fleet.service.plan_parents))
    read = {r.id for r in fleet.service.requests if isinstance(r, pb.GetJobRequest)}
    assert read <= {plan_parent, *fleet.service.children[plan_parent]}


def test_newest_maintenance_picks_the_last_finished_non_plan_child_of_each_wanted_pair() -> None:
    def child(job_id: str, target: str, finished: int, config: str = "{}") -> pb.Job:
        job = pb.Job(id=job_id, target=target, operation=pb.OPERATION_VACUUM, config=config)
        job.finished_at.FromSeconds(finished)
        return job

    jobs = [
        child("plan-newest", "alpha", 40, '{"mode": "plan"}'),
        child("auto-older", "alpha", 20, '{"mode": "auto"}'),
        child("all-newer", "alpha", 30),
        child("beta-one", "beta", 50),
        child("gamma-one", "gamma", 60),
    ]
    wanted = {("alpha", pb.OPERATION_VACUUM), ("beta", pb.OPERATION_VACUUM), ("alpha", pb.OPERATION_ANALYZE)}

    assert newest_maintenance(jobs, wanted) == {
        ("alpha", pb.OPERATION_VACUUM): "all-newer",
        ("beta", pb.OPERATION_VACUUM): "beta-one",
    }


def test_a_row_takes_its_previous_duration_from_the_operation_that_carries_out_its_action(
    cli: Cli, fleet: FakeManager
) -> None:
    fleet.service.auto_reports_by_operation = {
        ("alpha", pb.OPERATION_VACUUM): [timed("orders", pb.TABLE_ACTION_VACUUM, 1.5)],
        ("alpha", pb.OPERATION_ANALYZE): [
            timed("events", pb.TABLE_ACTION_ANALYZE, 0.5),
            timed("orders", pb.TABLE_ACTION_ANALYZE, 0.25),
        ],
    }
    maintain(cli, fleet, "alpha", "-o", "vacuum", "-o", "analyze", "--mode", "auto")

    both = cli("plan", "alpha", "-o", "vacuum", "-o", "analyze")
    vacuum_only = cli("plan", "alpha", "-o", "vacuum")

    # Each plan child reports every table; the vacuum child's rows come first, yet the ANALYZE row is timed by
    # the analyze child's history.
    assert previous_column(both.out) == {
        ("alpha", "public.orders", "vacuum"): "1.50s",
        ("alpha", "public.events", "analyze"): "0.50s",
        ("alpha", "public.clean", "skip"): "-",
    }
    assert previous_column(vacuum_only.out)[("alpha", "public.events", "analyze")] == "-"


def test_each_proposed_action_is_carried_out_by_the_operations_that_run_it() -> None:
    assert CARRIED_OUT_BY[pb.TABLE_ACTION_FREEZE] == (pb.OPERATION_VACUUM, pb.OPERATION_OPTIMIZE)
    assert CARRIED_OUT_BY[pb.TABLE_ACTION_ANALYZE] == (pb.OPERATION_ANALYZE, pb.OPERATION_OPTIMIZE)
    assert CARRIED_OUT_BY[pb.TABLE_ACTION_DROP_INVALID_INDEX] == (pb.OPERATION_REINDEX,)
    assert pb.TABLE_ACTION_SKIP not in CARRIED_OUT_BY
