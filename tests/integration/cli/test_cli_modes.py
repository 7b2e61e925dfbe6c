"""--mode, --parallel and --threshold of `dbmaint create`, `dbmaint schedule create` and `dbmaint plan`, the
request id the CLI always sends, and the per-table reports of an AUTO child in `get` and `watch`, against the
in-process fake manager."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from dbmaint import wire
from dbmaint.thresholds import threshold_names
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from tests.support.cli import Run
from tests.support.fake_manager_for_cli import FakeManager

Cli = Callable[..., Run]


def creates(fake: FakeManager) -> list[pb.CreateMaintenanceRequest]:
    return [r for r in fake.service.requests if isinstance(r, pb.CreateMaintenanceRequest)]


def usage_error(cli: Cli, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What argparse printed on stderr when it refused ``args`` (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli(*args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def auto_report(table: str, seconds: float, **figures: tuple[float, float]) -> pb.TableReport:
    """A VACUUM an AUTO child did: each figure as (before, after)."""
    return pb.TableReport(
        schema="public",
        table=table,
        action=pb.TABLE_ACTION_VACUUM,
        reasons=["dead_tuples"],
        evidence={name: before for name, (before, _) in figures.items()},
        before={name: before for name, (before, _) in figures.items()},
        after={name: after for name, (_, after) in figures.items()},
        duration=wire.duration(seconds),
    )


def test_create_sends_the_mode_parallel_and_thresholds_it_was_given(cli: Cli, fake: FakeManager) -> None:
    result = cli(
        "create",
        "alpha",
        "--mode",
        "auto",
        "--parallel",
        "4",
        "--threshold",
        "vacuum_scale_factor=0.05",
        "--threshold",
        "bloat_min_bytes=1e6",
    )

    assert result.code == 0, result.err
    (request,) = creates(fake)
    assert request.mode == pb.MODE_AUTO
    assert request.parallel == 4
    assert dict(request.thresholds) == {"vacuum_scale_factor": 0.05, "bloat_min_bytes": 1e6}


def test_create_without_mode_flags_leaves_mode_parallel_and_thresholds_unset(cli: Cli, fake: FakeManager) -> None:
    result = cli("create", "alpha")

    assert result.code == 0, result.err
    (request,) = creates(fake)
    assert (request.mode, request.parallel, dict(request.thresholds)) == (pb.MODE_UNSPECIFIED, 0, {})


def test_create_mode_all_is_sent_as_mode_all(cli: Cli, fake: FakeManager) -> None:
    assert cli("create", "alpha", "--mode", "all").code == 0
    assert creates(fake)[0].mode == pb.MODE_ALL


def test_create_without_a_request_id_sends_a_fresh_cli_uuid_each_time(cli: Cli, fake: FakeManager) -> None:
    assert cli("create", "alpha").code == 0
    assert cli("create", "alpha").code == 0

    first, second = (request.request_id for request in creates(fake))
    assert first.startswith("cli-") and second.startswith("cli-")
    assert uuid.UUID(first.removeprefix("cli-")).version == 4
    assert first != second


def test_a_lost_create_answer_names_the_request_id_that_finds_the_same_parent(cli: Cli, fake: FakeManager) -> None:
    fake.service.hang_create = 1.0

    lost = cli("--timeout", "0.3", "create", "alpha")

    assert lost.code == 3
    request_id = creates(fake)[0].request_id
    assert f"repeat with --request-id {request_id}" in lost.err
    fake.service.hang_create = 0.0
    repeated = cli("create", "alpha", "--request-id", request_id)
    assert repeated.code == 0, repeated.err
    assert "nothing new was created" in repeated.out
    assert len(fake.service.children) == 1  # one parent, found again


def test_an_unknown_threshold_name_is_refused_before_sending_and_the_names_are_listed(
    cli: Cli, fake: FakeManager, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(cli, capsys, "create", "alpha", "--mode", "plan", "--threshold", "vacum_threshold=5")

    assert "argument --threshold: unknown threshold 'vacum_threshold'; the thresholds are: " in err
    assert all(name in err for name in threshold_names())
    assert creates(fake) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("freeze_age_ratio", "not NAME=VALUE"),
        ("freeze_age_ratio=", "bad value for threshold 'freeze_age_ratio': no value"),
        ("freeze_age_ratio=half", "bad value for threshold 'freeze_age_ratio'"),
        ("freeze_age_ratio=-1", "must not be negative"),
        ("freeze_age_ratio=nan", "must be a finite number"),
    ],
)
def test_a_threshold_that_is_not_a_name_and_a_number_at_least_zero_is_refused(
    cli: Cli, fake: FakeManager, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    err = usage_error(cli, capsys, "create", "alpha", "--mode", "auto", "--threshold", value)

    assert message in err
    assert creates(fake) == []


def test_thresholds_without_an_observing_mode_are_refused_before_sending(cli: Cli, fake: FakeManager) -> None:
    result = cli("create", "alpha", "--threshold", "freeze_age_ratio=0.3")

    assert result.code == 2
    assert "--threshold needs --mode plan or --mode auto" in result.err
    assert creates(fake) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "must be between 1 and 8"), ("9", "must be between 1 and 8"), ("two", "not an integer")],
)
def test_a_parallel_outside_one_to_eight_is_refused(
    cli: Cli, fake: FakeManager, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    err = usage_error(cli, capsys, "create", "alpha", "--parallel", value)

    assert f"argument --parallel: {message}: {value!r}" in err
    assert creates(fake) == []


def test_schedule_create_carries_mode_parallel_and_thresholds_and_get_shows_them(
    cli: Cli, fake: FakeManager
) -> None:
    created = cli(
        "schedule",
        "create",
        "nightly",
        "alpha",
        "--cron",
        "0 2 * * *",
        "--mode",
        "auto",
        "--parallel",
        "2",
        "--threshold",
        "freeze_age_ratio=0.4",
    )

    assert created.code == 0, created.err
    request = next(r for r in fake.schedules.requests if isinstance(r, spb.CreateScheduleRequest))
    maintenance = request.schedule.maintenance
    assert (maintenance.mode, maintenance.parallel) == (pb.MODE_AUTO, 2)
    assert dict(maintenance.thresholds) == {"freeze_age_ratio": 0.4}
    assert maintenance.request_id == ""  # the manager refuses one: each firing has its own
    shown = cli("schedule", "get", "nightly")
    assert "mode" in shown.out and "auto" in shown.out
    assert "freeze_age_ratio=0.4" in shown.out
    assert "parallel" in shown.out


def test_plan_sends_its_thresholds_with_mode_plan_and_a_request_id(
    cli: Cli, fake: FakeManager, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.service.autorun = True
    fake.service.step = 0.005

    result = cli("plan", "alpha", "-o", "vacuum", "--threshold", "vacuum_threshold=10")

    assert result.code == 0, result.err
    assert (
        usage_error(cli, capsys, "plan", "alpha", "--threshold", "nope=1").count("unknown threshold 'nope'") == 1
    )
    (request,) = creates(fake)
    assert request.mode == pb.MODE_PLAN
    assert dict(request.thresholds) == {"vacuum_threshold": 10.0}
    assert request.request_id.startswith("cli-")


def test_get_of_an_auto_child_shows_each_tables_action_reasons_figure_before_and_after_and_duration(
    cli: Cli, fake: FakeManager
) -> None:
    fake.service.auto_reports = {
        "alpha": [
            auto_report("orders", 1.5, dead_tuples=(2000, 0), dead_ratio=(0.2, 0.0)),
            pb.TableReport(
                schema="public", table="clean", action=pb.TABLE_ACTION_SKIP, reasons=["below_threshold"]
            ),
        ]
    }
    fake.service.autorun = True
    fake.service.step = 0.005
    assert cli("create", "alpha", "-o", "vacuum", "--mode", "auto").code == 0
    parent_id = next(iter(fake.service.auto_parents))
    fake.wait_terminal(parent_id)
    (child_id,) = fake.service.children[parent_id]

    result = cli("get", child_id)

    assert result.code == 0, result.err
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.out.splitlines() if "│" in line]
    assert ["public.orders", "vacuum", "dead_tuples", "dead_tuples 2,000 → 0", "1.50s"] in rows
    assert ["public.clean", "skip", "below_threshold", "", "-"] in rows


def test_get_of_a_child_with_many_tables_shows_the_first_twenty_and_counts_the_rest(
    cli: Cli, fake: FakeManager
) -> None:
    fake.service.auto_reports = {"alpha": [auto_report(f"t{i:02}", 0.1, dead_tuples=(10, 0)) for i in range(25)]}
    fake.service.autorun = True
    fake.service.step = 0.005
    assert cli("create", "alpha", "-o", "vacuum", "--mode", "auto").code == 0
    parent_id = next(iter(fake.service.auto_parents))
    fake.wait_terminal(parent_id)

    result = cli("get", fake.service.children[parent_id][0])

    assert "public.t19" in result.out and "public.t20" not in result.out
    assert "5 more table(s) not shown: --json lists them all" in result.out


def test_watching_an_auto_child_ends_with_its_table_reports(cli: Cli, fake: FakeManager) -> None:
    fake.service.auto_reports = {"alpha": [auto_report("orders", 2.0, dead_tuples=(500, 3))]}
    created = cli("create", "alpha", "-o", "vacuum", "--mode", "auto")
    assert created.code == 0
    parent_id = next(iter(fake.service.auto_parents))
    fake.service.step = 0.05
    fake.service.play(parent_id)

    result = cli("watch", fake.service.children[parent_id][0])

    assert result.code == 0, result.err
    assert "dead_tuples 500 → 3" in result.out and "2.00s" in result.out


def test_watching_an_auto_parent_says_where_the_table_reports_are(cli: Cli, fake: FakeManager) -> None:
    fake.service.autorun = True
    fake.service.step = 0.005

    result = cli("create", "alpha", "-o", "vacuum", "--mode", "auto", "--watch")

    assert result.code == 0, result.err
    assert "per-table reports of a child: `dbmaint get CHILD_ID`" in result.out


def test_a_lost_plan_answer_names_the_request_id_and_plan_shows_that_plan_again_with_it(
    cli: Cli, fake: FakeManager
) -> None:
    fake.service.autorun = True
    fake.service.step = 0.005
    fake.service.hang_create = 1.0

    lost = cli("--timeout", "0.3", "plan", "alpha", "-o", "vacuum")

    assert lost.code == 3
    request_id = creates(fake)[0].request_id
    assert f"repeat with --request-id {request_id}" in lost.err
    fake.service.hang_create = 0.0
    again = cli("plan", "alpha", "-o", "vacuum", "--request-id", request_id)
    assert again.code == 0, again.err
    assert f"plan {next(iter(fake.service.plan_parents))}: nothing was changed" in again.out
    assert len(fake.service.plan_parents) == 1
