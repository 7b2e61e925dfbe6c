"""MODE_PLAN in a maintenance spec: which modes are taken, what the children's config carries, the fingerprint
and a schedule's stored maintenance."""

from __future__ import annotations

import pytest

from dbmaint.operations import Operation
from manager_service.domain import MaintenanceSpec, ScheduleSpec, is_plan_config
from manager_service.errors import RequestInvalid
from manager_service.validation import Limits, validate_maintenance, validate_mode, validate_parallel


@pytest.mark.parametrize(("mode", "plan"), [("MODE_UNSPECIFIED", False), ("MODE_ALL", False), ("MODE_PLAN", True)])
def test_unspecified_and_all_run_everything_and_plan_only_observes(mode: str, plan: bool) -> None:
    assert validate_mode(mode) is plan


@pytest.mark.parametrize(
    ("mode", "problem"), [("MODE_AUTO", "mode AUTO is not available yet"), ("7", "unknown mode 7")]
)
def test_auto_and_an_unknown_mode_are_refused(mode: str, problem: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        validate_mode(mode)
    assert info.value.field == "mode" and problem in info.value.problem


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
    plan = validate_maintenance(["db1"], [Operation.VACUUM], "", Limits(), plan=True)
    every = validate_maintenance(["db1"], [Operation.VACUUM], "", Limits())
    assert plan.child_config() == {"mode": "plan"} and is_plan_config(plan.child_config())
    assert every.child_config() == {} and not is_plan_config(every.child_config())


def test_the_mode_is_part_of_the_fingerprint_and_all_keeps_the_old_one() -> None:
    every = MaintenanceSpec(("db1",), (Operation.VACUUM,), "r1")
    plan = MaintenanceSpec(("db1",), (Operation.VACUUM,), "r1", plan=True)
    assert plan.fingerprint != every.fingerprint
    assert "mode" not in every.fingerprint


def test_a_schedule_keeps_its_plan_mode_through_its_stored_form() -> None:
    spec = ScheduleSpec("nightly", MaintenanceSpec(("db1",), (Operation.VACUUM,), plan=True), every_seconds=60)
    assert ScheduleSpec.from_dict(spec.to_dict()).maintenance.plan
    assert not ScheduleSpec.from_dict({**spec.to_dict(), "mode": None}).maintenance.plan
