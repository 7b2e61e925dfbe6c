"""MODE_PLAN and MODE_AUTO in a maintenance spec: which modes and thresholds are taken, what the children's
config carries, the fingerprint and a schedule's stored maintenance."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from dbmaint.operations import Operation, RunMode
from manager_service.domain import MaintenanceSpec, ScheduleSpec, is_plan_config
from manager_service.errors import RequestInvalid
from manager_service.validation import Limits, validate_maintenance, validate_mode, validate_parallel


@pytest.mark.parametrize(
    ("mode", "taken"),
    [
        ("MODE_UNSPECIFIED", RunMode.ALL),
        ("MODE_ALL", RunMode.ALL),
        ("MODE_PLAN", RunMode.PLAN),
        ("MODE_AUTO", RunMode.AUTO),
    ],
)
def test_unspecified_means_all_and_every_named_mode_is_taken(mode: str, taken: RunMode) -> None:
    assert validate_mode(mode) is taken


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(RequestInvalid) as info:
        validate_mode("7")
    assert info.value.field == "mode" and "unknown mode 7" in info.value.problem


def test_an_auto_spec_carries_its_mode_and_thresholds_sorted_in_the_config_and_the_fingerprint() -> None:
    auto = validate_maintenance(
        ["db1"],
        [Operation.VACUUM],
        "",
        Limits(),
        mode=RunMode.AUTO,
        thresholds={"vacuum_threshold": 10, "bloat_min_ratio": 0.5},
    )
    assert auto.child_config() == {
        "mode": "auto",
        "thresholds": {"bloat_min_ratio": 0.5, "vacuum_threshold": 10.0},
    }
    assert not is_plan_config(auto.child_config())
    other = replace(auto, thresholds={"vacuum_threshold": 11.0})
    assert other.fingerprint != auto.fingerprint


@pytest.mark.parametrize(
    ("mode", "thresholds", "field", "problem"),
    [
        (RunMode.ALL, {"vacuum_threshold": 1.0}, "thresholds", "MODE_PLAN and MODE_AUTO only"),
        (RunMode.AUTO, {"dead_ratio": 0.1}, "thresholds['dead_ratio']", "unknown threshold 'dead_ratio'"),
        (RunMode.PLAN, {"freeze_age_ratio": -1.0}, "thresholds['freeze_age_ratio']", "must not be negative"),
        (RunMode.AUTO, {"bloat_min_bytes": math.inf}, "thresholds['bloat_min_bytes']", "finite number"),
    ],
)
def test_a_threshold_with_mode_all_an_unknown_name_or_a_bad_value_is_refused_naming_it(
    mode: RunMode, thresholds: dict[str, float], field: str, problem: str
) -> None:
    with pytest.raises(RequestInvalid) as info:
        validate_maintenance(["db1"], [Operation.VACUUM], "", Limits(), mode=mode, thresholds=thresholds)
    assert info.value.field == field and problem in info.value.problem


@pytest.mark.parametrize(("parallel", "taken"), [(0, 1), (1, 1), (4, 4), (8, 8)])
def test_parallel_zero_means_one_and_one_to_eight_are_taken(parallel: int, taken: int) -> None:
    assert validate_parallel(parallel) == taken


@pytest.mark.parametrize("parallel", [9, -1])
def test_parallel_above_eight_or_negative_is_refused(parallel: int) -> None:
    with pytest.raises(RequestInvalid) as info:
        validate_parallel(parallel)
    assert info.value.field == "parallel" and "not from 1 to 8" in info.value.problem


def test_parallel_above_one_is_in_the_config_and_the_fingerprint_and_one_leaves_both_as_they_were() -> None:
    serial = MaintenanceSpec(("db1",), (Operation.VACUUM,), "r1")
    four = MaintenanceSpec(("db1",), (Operation.VACUUM,), "r1", parallel=4)
    assert four.child_config() == {"parallel": 4} and serial.child_config() == {}
    assert four.fingerprint != serial.fingerprint
    assert "parallel" not in serial.fingerprint


def test_a_plan_spec_puts_the_mode_in_the_config_and_an_all_spec_leaves_it_out() -> None:
    plan = validate_maintenance(["db1"], [Operation.VACUUM], "", Limits(), mode=RunMode.PLAN)
    every = validate_maintenance(["db1"], [Operation.VACUUM], "", Limits())
    assert plan.child_config() == {"mode": "plan"} and is_plan_config(plan.child_config())
    assert every.child_config() == {} and not is_plan_config(every.child_config())


def test_the_mode_is_part_of_the_fingerprint_and_all_keeps_the_old_one() -> None:
    every = MaintenanceSpec(("db1",), (Operation.VACUUM,), "r1")
    plan = MaintenanceSpec(("db1",), (Operation.VACUUM,), "r1", mode=RunMode.PLAN)
    assert plan.fingerprint != every.fingerprint
    assert "mode" not in every.fingerprint


def test_a_schedule_keeps_its_plan_mode_through_its_stored_form() -> None:
    spec = ScheduleSpec(
        "nightly", MaintenanceSpec(("db1",), (Operation.VACUUM,), mode=RunMode.PLAN), every_seconds=60
    )
    assert ScheduleSpec.from_dict(spec.to_dict()).maintenance.plan
    assert not ScheduleSpec.from_dict({**spec.to_dict(), "mode": None}).maintenance.plan


def test_a_schedule_keeps_its_auto_mode_and_thresholds_through_its_stored_form() -> None:
    maintenance = MaintenanceSpec(
        ("db1",), (Operation.VACUUM,), mode=RunMode.AUTO, thresholds={"freeze_age_ratio": 0.25}
    )
    stored = ScheduleSpec.from_dict(ScheduleSpec("nightly", maintenance, every_seconds=60).to_dict()).maintenance
    assert stored.mode is RunMode.AUTO and stored.thresholds == {"freeze_age_ratio": 0.25}
