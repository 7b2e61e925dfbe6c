from __future__ import annotations

import pytest

from dbmaint.operations import Operation
from worker_service.faults import FaultPlan, FaultSpecError, parse_faults


def test_empty_spec_means_no_faults() -> None:
    assert parse_faults("").empty
    assert parse_faults(" , ").empty
    assert FaultPlan.from_env({}).slow_seconds(Operation.VACUUM) == 0


def test_named_and_star_entries() -> None:
    plan = parse_faults(" slow:vacuum=5 , slow:*=0.5,slow:ANALYZE=2")
    assert plan.slow_seconds(Operation.VACUUM) == 5
    assert plan.slow_seconds("analyze") == 2
    assert plan.slow_seconds(Operation.REINDEX) == 0.5  # the star covers the others


def test_from_env() -> None:
    plan = FaultPlan.from_env({"DBMAINT_FAULTS": "slow:optimize=1.5"})
    assert plan.slow_seconds(Operation.OPTIMIZE) == 1.5
    assert plan.slow_seconds(Operation.VACUUM) == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fast:vacuum=1", "unknown fault 'fast:vacuum=1'"),
        ("vacuum=1", "unknown fault"),
        ("slow:vacuum", "has no '=<seconds>'"),
        ("slow:vacume=1", "unknown operation 'vacume'"),
        ("slow:vacuum=abc", "'abc' is not a number"),
        ("slow:vacuum=-1", "finite number >= 0"),
        ("slow:vacuum=nan", "finite number >= 0"),
    ],
)
def test_bad_specs_name_the_entry(spec: str, expected: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        parse_faults(spec)
    assert expected in str(info.value)
    assert "DBMAINT_FAULTS" in str(info.value)
