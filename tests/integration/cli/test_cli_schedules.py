"""dbmaint schedule ... and the window options of dbmaint create, against the in-process fake manager."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dbmaint.cli.schedules import parse_duration
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from tests.support.cli import Run
from tests.support.fake_manager_for_cli import FakeManager

Cli = Callable[..., Run]
NIGHTLY = ("schedule", "create", "nightly", "--cron", "0 3 * * *", "--tz", "Europe/Berlin", "alpha", "beta")


@pytest.fixture(autouse=True)
def local_zone_is_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's "local time" is the TZ of its process: pinned, so that the local column is known."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def requests_of(fake: FakeManager, kind: type) -> list[object]:
    return [request for request in fake.schedules.requests if isinstance(request, kind)]


def rows_by_first_cell(out: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}


def firing(minutes: int, outcome: int, **fields: object) -> spb.Firing:
    slot = spb.Firing(outcome=outcome, **fields)  # type: ignore[arg-type]
    slot.scheduled_time.FromDatetime(datetime(2026, 12, 1, 2, 0, tzinfo=UTC) + timedelta(minutes=minutes))
    return slot


# -- DURATION --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("4h", 14400), ("1d", 86400), ("1h30m", 5400), ("1d2h3m4s", 93784), ("0s", 0)],
)
def test_a_duration_is_numbers_with_units_d_h_m_s(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5x", "1m1h", "", "h", "90", "1.5h", "-1m"])
def test_a_bad_duration_is_bad_usage_and_nothing_is_sent(
    text: str, cli: Cli, fake: FakeManager, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("schedule", "create", "s1", f"--every={text}", "alpha")

    assert exit_info.value.code == 2
    assert f"not a duration: {text!r} (use e.g. 90s, 15m, 4h, 1d or 1h30m)" in capsys.readouterr().err
    assert not fake.schedules.requests


# -- create ----------------------------------------------------------------------------------------------------


def test_create_sends_every_option_and_prints_the_next_fire_time_in_both_zones(
    cli: Cli, fake: FakeManager
) -> None:
    result = cli(
        *NIGHTLY,
        "-o",
        "vacuum",
        "-o",
        "analyze",
        "--overlap",
        "buffer-one",
        "--catchup",
        "2h",
        "--jitter",
        "5m",
        "--start-at",
        "2026-12-01T00:00:00Z",
        "--end-at",
        "2027-01-01T00:00:00+01:00",
        "--schema",
        "sales",
        "--table",
        "sales.orders",
        "--window-cron",
        "0 2 * * *",
        "--window-duration",
        "4h",
        "--cutoff",
        "30m",
        "--on-end",
        "reindex=cancel",
    )

    assert result.code == 0, result.err
    (request,) = requests_of(fake, spb.CreateScheduleRequest)
    assert isinstance(request, spb.CreateScheduleRequest)
    sent = request.schedule
    assert (sent.id, sent.cron, sent.time_zone) == ("nightly", "0 3 * * *", "Europe/Berlin")
    assert not sent.HasField("every")
    assert list(sent.maintenance.targets) == ["alpha", "beta"]
    assert list(sent.maintenance.operations) == [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE]
    assert (list(sent.maintenance.schemas), list(sent.maintenance.tables)) == (["sales"], ["sales.orders"])
    assert sent.overlap == spb.OVERLAP_POLICY_BUFFER_ONE
    assert sent.catchup_window.ToTimedelta() == timedelta(hours=2)
    assert sent.jitter.ToTimedelta() == timedelta(minutes=5)
    assert sent.start_at.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 1, tzinfo=UTC)
    assert sent.end_at.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 31, 23, tzinfo=UTC)
    window = sent.window
    assert (window.cron, window.time_zone) == ("0 2 * * *", "Europe/Berlin"), "the window is read in --tz"
    assert window.duration.ToTimedelta() == timedelta(hours=4)
    assert window.cutoff.ToTimedelta() == timedelta(minutes=30)
    assert dict(window.on_end) == {"reindex": pb.WINDOW_END_CANCEL}
    assert result.out.strip() == (
        "created schedule nightly: cron 0 3 * * * (Europe/Berlin), at 03:00 every day; "
        "next fire 2026-12-02 03:00 CET (2026-12-01 21:00 EST local)"
    )


def test_create_every_sends_an_absolute_interval_and_leaves_the_defaults_to_the_manager(
    cli: Cli, fake: FakeManager
) -> None:
    result = cli("schedule", "create", "often", "--every", "1h30m", "alpha", "--paused")

    assert result.code == 0, result.err
    (request,) = requests_of(fake, spb.CreateScheduleRequest)
    assert isinstance(request, spb.CreateScheduleRequest)
    sent = request.schedule
    assert sent.every.ToTimedelta() == timedelta(hours=1, minutes=30)
    assert (sent.cron, sent.time_zone, sent.paused) == ("", "", True)
    assert sent.overlap == spb.OVERLAP_POLICY_UNSPECIFIED
    assert not any(sent.HasField(name) for name in ("catchup_window", "jitter", "start_at", "end_at", "window"))
    assert "every 1h30m (UTC), every 1h30m (absolute time); no next fire time (paused" in result.out


def test_create_needs_exactly_one_of_cron_and_every(cli: Cli, fake: FakeManager) -> None:
    for cadence in ([], ["--cron", "@daily", "--every", "1h"]):
        with pytest.raises(SystemExit) as exit_info:
            cli("schedule", "create", "s1", *cadence, "alpha")
        assert exit_info.value.code == 2
    assert not fake.schedules.requests


def test_create_json_is_the_stored_schedule(cli: Cli) -> None:
    data = json.loads(cli(*NIGHTLY, "--json").out)

    assert data["id"] == "nightly"
    assert data["cron"] == "0 3 * * *"
    assert data["next_fire_time"] == "2026-12-02T02:00:00Z"


def test_an_existing_id_is_rejected_unless_exist_ok(cli: Cli, fake: FakeManager) -> None:
    first = cli(*NIGHTLY)
    again = cli(*NIGHTLY)
    tolerated = cli(*NIGHTLY, "--exist-ok")

    assert first.code == 0
    assert again.code == 2
    assert (
        again.err.strip() == "dbmaint: error: request rejected (ALREADY_EXISTS): schedule 'nightly' already exists"
    )
    assert tolerated.code == 0, tolerated.err
    assert tolerated.out.strip() == "schedule nightly already exists; left as it is"
    assert len(fake.schedules.schedules) == 1


def test_an_unknown_zone_is_rejected_by_the_manager(cli: Cli) -> None:
    result = cli("schedule", "create", "s1", "--cron", "@daily", "--tz", "Mars/Olympus", "alpha")

    assert result.code == 2
    assert result.err.strip() == (
        "dbmaint: error: request rejected (INVALID_ARGUMENT): "
        "schedule.time_zone: unknown time zone 'Mars/Olympus' (use an IANA name such as Europe/Berlin)"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--window-start", "2026-12-02T01:00:00Z"],
            "a one-off window needs both --window-start and --window-end",
        ),
        (["--window-cron", "0 2 * * *"], "a recurring window needs both --window-cron and --window-duration"),
        (
            [
                "--window-start",
                "2026-12-02T01:00:00Z",
                "--window-end",
                "2026-12-02T05:00:00Z",
                "--window-cron",
                "@daily",
            ],
            "a window is one-off (--window-start/--window-end) or recurring (--window-cron), not both",
        ),
        (
            ["--cutoff", "30m"],
            "--cutoff and --on-end need a window (--window-start/--window-end or --window-cron)",
        ),
    ],
)
def test_a_half_given_window_is_rejected_before_anything_is_sent(
    flags: list[str], message: str, cli: Cli, fake: FakeManager
) -> None:
    result = cli(*NIGHTLY, *flags)

    assert result.code == 2
    assert result.err.strip() == f"dbmaint: error: {message}"
    assert not fake.schedules.requests


@pytest.mark.parametrize(
    ("flag", "value", "complaint"),
    [
        ("--start-at", "2026-12-02 01:00", "not an RFC 3339 time with an offset: '2026-12-02 01:00'"),
        ("--start-at", "tomorrow", "not an RFC 3339 time with an offset: 'tomorrow'"),
        ("--on-end", "vacuum=later", "not OP=finish|cancel: 'vacuum=later'"),
        ("--on-end", "sweep=finish", "not OP=finish|cancel: 'sweep=finish'"),
        ("--overlap", "queue", "invalid choice: 'queue'"),
    ],
)
def test_bad_times_policies_and_end_policies_are_bad_usage(
    flag: str, value: str, complaint: str, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(*NIGHTLY, flag, value)

    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


# -- list, get -------------------------------------------------------------------------------------------------


def test_list_reads_every_page_and_shows_cadence_zone_next_fire_paused_overlap_and_last_parent(
    cli: Cli, fake: FakeManager
) -> None:
    assert cli("schedule", "list").out.strip() == "no schedules"
    fake.schedules.page_size = 2
    cli(*NIGHTLY, "--overlap", "cancel-other")
    cli("schedule", "create", "often", "--every", "15m", "alpha", "--paused")
    cli("schedule", "create", "weekly", "--cron", "@weekly", "alpha")
    parent_id = json.loads(cli("schedule", "run", "weekly", "--json").out)["parent"]["id"]

    result = cli("schedule", "list")

    assert result.code == 0, result.err
    rows = rows_by_first_cell(result.out)
    assert sorted(rows) == ["nightly", "often", "weekly"]
    assert [cell.strip() for cell in rows["nightly"].split("│")[2:9]] == [
        "cron 0 3 * * *",
        "Europe/Berlin",
        "at 03:00 every day",
        "2026-12-02 03:00 CET",
        "2026-12-01 21:00 EST",
        "no",
        "cancel-other",
    ]
    assert [cell.strip() for cell in rows["often"].split("│")[2:9]] == [
        "every 15m",
        "UTC",
        "every 15m (absolute time)",
        "-",
        "-",
        "paused",
        "skip",
    ]
    assert parent_id in rows["weekly"] and "at 00:00 on Sunday" in rows["weekly"]
    tokens = [r.page_token for r in requests_of(fake, spb.ListSchedulesRequest)][1:]  # [0]: the empty list
    assert tokens == ["", "2"]


def test_list_json_holds_every_schedule(cli: Cli, fake: FakeManager) -> None:
    fake.schedules.page_size = 1
    cli(*NIGHTLY)
    cli("schedule", "create", "often", "--every", "15m", "alpha")

    data = json.loads(cli("schedule", "list", "--json").out)

    assert [schedule["id"] for schedule in data["schedules"]] == ["nightly", "often"]
    assert data["next_page_token"] == ""


def test_get_shows_the_schedule_whole(cli: Cli) -> None:
    cli(
        *NIGHTLY,
        "--jitter",
        "90s",
        "--window-start",
        "2026-12-02T01:00:00Z",
        "--window-end",
        "2026-12-02T05:00:00+00:00",
        "--on-end",
        "vacuum=finish",
    )

    result = cli("schedule", "get", "nightly")

    assert result.code == 0, result.err
    details = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in result.out.splitlines()}
    assert details["cadence"] == "cron 0 3 * * *"
    assert details["in words"] == "at 03:00 every day"
    assert details["zone"] == "Europe/Berlin"
    assert details["targets"] == "alpha, beta"
    assert details["operations"] == "the default ones"
    assert details["jitter"] == "1m30s"
    assert details["window"] == "2026-12-02T01:00:00Z → 2026-12-02T05:00:00Z, at its end: vacuum=finish"
    assert details["next fire"] == "2026-12-02 03:00 CET (2026-12-01 21:00 EST local)"
    assert json.loads(cli("schedule", "get", "nightly", "--json").out)["jitter"] == "90s"


@pytest.mark.parametrize("command", ["get", "pause", "resume", "delete", "run", "history"])
def test_an_unknown_schedule_is_not_found_exit_4(command: str, cli: Cli) -> None:
    result = cli("schedule", command, "nope")

    assert result.code == 4
    assert result.out == ""
    assert result.err.strip() == "dbmaint: error: schedule 'nope' not found"


# -- pause, resume, delete -------------------------------------------------------------------------------------


def test_pause_and_resume_update_only_paused(cli: Cli, fake: FakeManager) -> None:
    cli(*NIGHTLY, "--jitter", "1m")

    paused = cli("schedule", "pause", "nightly")
    stored_while_paused = fake.schedules.schedules["nightly"].paused
    resumed = cli("schedule", "resume", "nightly")

    assert paused.code == resumed.code == 0
    assert stored_while_paused is True
    assert fake.schedules.schedules["nightly"].paused is False
    assert fake.schedules.schedules["nightly"].jitter.ToTimedelta() == timedelta(minutes=1), "nothing else changed"
    updates = requests_of(fake, spb.UpdateScheduleRequest)
    assert [list(u.update_mask.paths) for u in updates] == [["paused"], ["paused"]]  # type: ignore[attr-defined]
    assert paused.out.strip() == (
        "paused schedule nightly: its slots are recorded as skipped until `dbmaint schedule resume`"
    )
    assert (
        resumed.out.strip()
        == "resumed schedule nightly: next fire 2026-12-02 03:00 CET (2026-12-01 21:00 EST local)"
    )


def test_delete_removes_the_schedule_and_a_second_delete_is_not_found(cli: Cli, fake: FakeManager) -> None:
    cli(*NIGHTLY)

    deleted = cli("schedule", "delete", "nightly")
    again = cli("schedule", "delete", "nightly")

    assert (deleted.code, deleted.out.strip()) == (0, "deleted schedule nightly (the parents it created stay)")
    assert "nightly" not in fake.schedules.schedules
    assert again.code == 4


# -- run, history, and the parents' schedule -------------------------------------------------------------------


def test_run_fires_now_and_get_of_its_parent_shows_the_schedule_and_window(cli: Cli, fake: FakeManager) -> None:
    cli(*NIGHTLY, "-o", "vacuum", "--window-cron", "0 2 * * *", "--window-duration", "4h", "--cutoff", "30m")

    result = cli("schedule", "run", "nightly")

    assert result.code == 0, result.err
    parent_id = fake.service.order[0]
    parent = fake.service.jobs[parent_id]
    slot = parent.scheduled_time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.out.strip() == f"fired schedule nightly at {slot} (fired): parent {parent_id} with 2 children"
    shown = cli("get", parent_id)
    assert shown.code == 0, shown.err
    details = {
        name: value.strip()
        for name, value in (line.split(maxsplit=1) for line in shown.out.splitlines() if line[:1].isalpha())
    }
    assert details["schedule"] == "nightly"
    assert details["scheduled"] == slot
    assert details["window"] == "0 2 * * * (Europe/Berlin) for 4h, no start in the last 30m"


def test_run_json_holds_the_firing_and_the_parent(cli: Cli, fake: FakeManager) -> None:
    cli(*NIGHTLY)

    data = json.loads(cli("schedule", "run", "nightly", "--json").out)

    assert data["firing"]["outcome"] == "FIRING_OUTCOME_FIRED"
    assert data["firing"]["reason"] == "triggered by hand"
    assert data["parent"]["id"] == data["firing"]["parent_id"] == fake.service.order[0]
    assert data["parent"]["schedule_id"] == "nightly"


def test_list_schedule_shows_only_the_parents_of_that_schedule(cli: Cli, fake: FakeManager) -> None:
    cli(*NIGHTLY)
    by_hand = fake.create("alpha")
    fired = json.loads(cli("schedule", "run", "nightly", "--json").out)["parent"]["id"]

    result = cli("list", "--schedule", "nightly", "--json")

    assert result.code == 0, result.err
    assert [job["id"] for job in json.loads(result.out)["jobs"]] == [fired]
    assert by_hand.parent.id != fired
    request = next(r for r in reversed(fake.service.requests) if isinstance(r, pb.ListJobsRequest))
    assert request.schedule_id == "nightly"


def test_history_reads_every_page_newest_first(cli: Cli, fake: FakeManager) -> None:
    cli(*NIGHTLY)
    assert cli("schedule", "history", "nightly").out.strip() == "schedule nightly has not fired yet"
    fake.schedules.page_size = 2
    fake.schedules.record(
        "nightly",
        firing(0, spb.FIRING_OUTCOME_MISSED, missed_count=7, reason="manager was down"),
        firing(15, spb.FIRING_OUTCOME_FIRED, parent_id="parent-1", missed_count=1),
        firing(30, spb.FIRING_OUTCOME_SKIPPED_OVERLAP, reason="parent parent-1 still running", missed_count=1),
        firing(45, spb.FIRING_OUTCOME_SKIPPED_PAUSED, reason="paused", missed_count=1),
        firing(60, spb.FIRING_OUTCOME_OUTSIDE_RANGE, reason="after end_at", missed_count=1),
    )

    result = cli("schedule", "history", "nightly")

    assert result.code == 0, result.err
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.out.splitlines() if "│" in line]
    assert rows == [
        ["2026-12-01T03:00:00Z", "outside range", "", "", "after end_at"],
        ["2026-12-01T02:45:00Z", "skipped (paused)", "", "", "paused"],
        ["2026-12-01T02:30:00Z", "skipped (overlap)", "", "", "parent parent-1 still running"],
        ["2026-12-01T02:15:00Z", "fired", "", "parent-1", ""],
        ["2026-12-01T02:00:00Z", "missed", "7", "", "manager was down"],
    ]
    tokens = [r.page_token for r in requests_of(fake, spb.ListFiringsRequest)][1:]  # [0]: the empty history
    assert tokens == ["", "2", "4"]


def test_history_json_is_one_document_with_every_firing(cli: Cli, fake: FakeManager) -> None:
    cli(*NIGHTLY)
    fake.schedules.page_size = 1
    fake.schedules.record("nightly", *(firing(m, spb.FIRING_OUTCOME_FIRED, missed_count=1) for m in (0, 15, 30)))

    data = json.loads(cli("schedule", "history", "nightly", "--json").out)

    assert [f["scheduled_time"] for f in data["firings"]] == [
        "2026-12-01T02:30:00Z",
        "2026-12-01T02:15:00Z",
        "2026-12-01T02:00:00Z",
    ]


# -- dbmaint create with a window ------------------------------------------------------------------------------


def test_create_sends_a_one_off_window(cli: Cli, fake: FakeManager) -> None:
    result = cli(
        "create",
        "alpha",
        "--window-start",
        "2026-12-02T02:00:00+01:00",
        "--window-end",
        "2026-12-02T06:00:00+01:00",
        "--cutoff",
        "30m",
        "--on-end",
        "reindex=cancel",
        "--on-end",
        "vacuum=finish",
    )

    assert result.code == 0, result.err
    request = next(r for r in fake.service.requests if isinstance(r, pb.CreateMaintenanceRequest))
    window = request.window
    assert window.start.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 2, 1, tzinfo=UTC)
    assert window.end.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 2, 5, tzinfo=UTC)
    assert window.cutoff.ToTimedelta() == timedelta(minutes=30)
    assert dict(window.on_end) == {"reindex": pb.WINDOW_END_CANCEL, "vacuum": pb.WINDOW_END_FINISH}
    assert not window.cron


def test_create_sends_a_recurring_window_in_its_zone(cli: Cli, fake: FakeManager) -> None:
    result = cli(
        "create", "alpha", "--window-cron", "0 2 * * 6", "--window-duration", "4h", "--tz", "Europe/Berlin"
    )

    assert result.code == 0, result.err
    request = next(r for r in fake.service.requests if isinstance(r, pb.CreateMaintenanceRequest))
    window = request.window
    assert (window.cron, window.time_zone) == ("0 2 * * 6", "Europe/Berlin")
    assert window.duration.ToTimedelta() == timedelta(hours=4)
    assert not window.HasField("start") and not window.HasField("cutoff")


def test_create_without_window_flags_sends_no_window(cli: Cli, fake: FakeManager) -> None:
    assert cli("create", "alpha").code == 0

    request = next(r for r in fake.service.requests if isinstance(r, pb.CreateMaintenanceRequest))
    assert not request.HasField("window")
