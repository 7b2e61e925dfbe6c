"""MODE_PLAN in a maintenance spec: which modes are taken, what the children's config carries, the fingerprint
and a schedule's stored maintenance."""

from __future__ import annotations

import pytest

from dbmaint.operations import Operation
from manager_service.domain import MaintenanceSpec, ScheduleSpec, is_plan_config
from manager_service.errors import RequestInvalid
from manager_service.validation import Limits, validate_maintenance, validate_mode


@pytest.mark.parametrize(("mode", "plan"), [("MODE_UNSPECIFIED", False), ("MODE_ALL", False), ("MODE_PLAN", True)])
def test_unspecified_and_all_run_everything_and_plan_only_observes(mode: str, plan: bool) -> None:
    assert validate_mode(mode, 0) is plan
    assert validate_mode(mode, 1) is plan


@pytest.mark.parametrize(
    ("mode", "parallel", "field", "problem"),
    [
        ("MODE_AUTO", 0, "mode", "mode AUTO is not available yet"),
        ("7", 0, "mode", "unknown mode 7"),
        ("MODE_PLAN", 2, "parallel", "parallel > 1 is not available yet"),
        ("MODE_ALL", -1, "parallel", "parallel > 1 is not available yet"),
    ],
)
def test_auto_an_unknown_mode_and_parallel_above_one_are_refused(
    mode: str, parallel: int, field: str, problem: str
) -> None:
    with pytest.raises(RequestInvalid) as info:
        validate_mode(mode, parallel)
    assert info.value.field == field and problem in info.value.problem


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
