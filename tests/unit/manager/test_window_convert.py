"""Maintenance windows between protobuf and the domain: what a client sends is validated (a wrong window is
INVALID_ARGUMENT naming the field) and shown back on its jobs as sent."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from dbmaint import wire
from dbmaint.operations import PARENT_JOB_TYPE, JobStatus, Operation
from dbmaint.v1 import maintenance_pb2 as pb
from manager_service import window_rules
from manager_service.convert import job_to_proto, window_from_proto, window_to_proto
from manager_service.domain import Job, MaintenanceSpec
from manager_service.errors import RequestInvalid

START = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def hours(count: float) -> Duration:
    return wire.duration(count * 3600)


def test_a_one_off_window_comes_back_as_it_was_sent() -> None:
    sent = pb.MaintenanceWindow(
        start=wire.timestamp(START),
        end=wire.timestamp(START + timedelta(hours=4)),
        cutoff=hours(0.5),
        on_end={"reindex": pb.WINDOW_END_CANCEL, "vacuum": pb.WINDOW_END_FINISH},
    )
    window = window_from_proto(sent)
    assert (window.start, window.end, window.cutoff) == (START, START + timedelta(hours=4), timedelta(minutes=30))
    assert window_rules.end_policy(window, Operation.REINDEX) is window_rules.EndPolicy.CANCEL
    assert window_rules.end_policy(window, Operation.ANALYZE) is window_rules.EndPolicy.CANCEL  # the default
    assert window_to_proto(window) == sent


def test_a_recurring_window_comes_back_with_its_zone_and_unspecified_policies_mean_the_default() -> None:
    sent = pb.MaintenanceWindow(
        cron="0 2 * * *",
        duration=hours(4),
        time_zone="Europe/Berlin",
        on_end={"vacuum": pb.WINDOW_END_UNSPECIFIED},
    )
    window = window_from_proto(sent)
    assert window.on_end == {}
    assert window_rules.end_policy(window, Operation.VACUUM) is window_rules.EndPolicy.CANCEL
    shown = window_to_proto(window)
    assert (shown.cron, shown.duration, shown.time_zone) == ("0 2 * * *", hours(4), "Europe/Berlin")
    assert not shown.HasField("start") and not shown.on_end


@pytest.mark.parametrize(
    "wrong",
    [
        pb.MaintenanceWindow(start=wire.timestamp(START), end=wire.timestamp(START - timedelta(hours=1))),
        pb.MaintenanceWindow(
            start=wire.timestamp(START), end=wire.timestamp(START + timedelta(hours=1)), cron="@daily"
        ),
        pb.MaintenanceWindow(cron="0 2 * * *", duration=hours(1), time_zone="Mars/Olympus_Mons"),
        pb.MaintenanceWindow(),
    ],
)
def test_a_wrong_window_is_an_invalid_request_naming_the_window(wrong: pb.MaintenanceWindow) -> None:
    with pytest.raises(RequestInvalid) as raised:
        window_from_proto(wrong)
    assert raised.value.field == "window" and raised.value.problem


def test_an_unknown_end_policy_is_an_invalid_request_naming_the_entry() -> None:
    wrong = pb.MaintenanceWindow(
        start=wire.timestamp(START), end=wire.timestamp(START + timedelta(hours=1)), on_end={"vacuum": 7}
    )
    with pytest.raises(RequestInvalid, match="unknown end policy 7") as raised:
        window_from_proto(wrong)
    assert raised.value.field == "window.on_end['vacuum']"


def test_a_job_shows_its_window() -> None:
    window = window_rules.window(START, START + timedelta(hours=2), "", None, "", timedelta(0), {})
    job = Job(
        id="p",
        seq=1,
        type=PARENT_JOB_TYPE,
        status=JobStatus.PENDING,
        config={},
        created_at=START,
        window=window_rules.to_dict(window),
    )
    assert job_to_proto(job).window == window_to_proto(window)
    assert not job_to_proto(Job("q", 2, PARENT_JOB_TYPE, JobStatus.PENDING, {}, START)).HasField("window")


def test_a_request_id_reused_with_another_window_is_another_request() -> None:
    spec = MaintenanceSpec(targets=("db1",), operations=(Operation.VACUUM,), request_id="nightly")
    one = window_rules.to_dict(
        window_rules.window(START, START + timedelta(hours=2), "", None, "", timedelta(0), {})
    )
    other = window_rules.to_dict(
        window_rules.window(START, START + timedelta(hours=3), "", None, "", timedelta(0), {})
    )
    assert replace(spec, window=one).fingerprint == replace(spec, window=dict(one)).fingerprint
    assert replace(spec, window=one).fingerprint != replace(spec, window=other).fingerprint
    assert replace(spec, window=one).fingerprint != spec.fingerprint
    # A request without a window keeps the fingerprint stored before windows existed.
    assert json.loads(spec.fingerprint) == {"targets": ["db1"], "operations": ["vacuum"]}
