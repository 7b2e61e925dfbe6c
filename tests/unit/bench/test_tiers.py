"""The tiers' verdict logic, as pure functions: figures in, verdicts out (no process is started here)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.fleet import histogram_buckets
from bench.model import RunResult, histogram_quantile
from bench.report import Target
from bench.tiers import (
    DBMAINT,
    DIRECT,
    FULL_WATCH,
    JOB_ONLY_WATCH,
    MIB,
    TIERS,
    TierFigures,
    run_figures,
    tier_figures,
    tier_targets,
)


def run(
    runner: str,
    wall: float,
    number: int = 1,
    cpu: dict[str, float] | None = None,
    ok: bool = True,
    children: int = 1000,
    **details: Any,
) -> RunResult:
    return RunResult(
        runner=runner,
        size="small",
        run=number,
        children=children,
        completed=children if ok else children - 1,
        wall_seconds=wall,
        cpu_seconds=cpu or {},
        operation_seconds=0.0,
        vacuum_bytes_before=0,
        vacuum_bytes_after=0,
        details=details,
    )


def verdicts(targets: list[Target]) -> dict[str, bool | None]:
    return {t.name: t.met for t in targets}


# -- Target ---------------------------------------------------------------------------------------------------


def test_exactly_on_an_inclusive_limit_is_met_and_on_a_strict_one_is_missed() -> None:
    assert Target("t", 2.0, 2.0, "x").met is True
    assert Target("t", 2.0, 2.0, "x").verdict == "met (0% headroom)"
    assert Target("t", 1.0, 1.0, " s", inclusive=False).met is False
    assert Target("t", 1.0, 0.999, " s", inclusive=False).met is True


@pytest.mark.parametrize("missing", [None, math.nan])
def test_a_missing_figure_is_not_measured_never_met(missing: float | None) -> None:
    target = Target("t", 2.0, missing, "x")
    assert target.met is None
    assert target.verdict == "not measured"


def test_a_failed_measurement_is_missed_whatever_its_figure() -> None:
    assert Target("t", 1.0, 0.2, " s", inclusive=False, error="exit code 3").met is False
    assert Target("t", 1.0, None, " s", error="exit code 3").verdict == "MISSED (exit code 3)"


# -- tier_targets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", list(TIERS))
def test_no_figures_means_every_target_not_measured(tier: str) -> None:
    targets = tier_targets(tier, TierFigures())
    assert targets
    assert all(t.met is None and t.verdict == "not measured" for t in targets)


def test_one_slot_targets_on_their_limits_are_met() -> None:
    figures = TierFigures(ratio_to_direct=2.0, cpu_ms_per_child=1.6, gap_p50_ms=1.0, gap_p99_ms=10.0)
    assert set(verdicts(tier_targets("one-slot", figures)).values()) == {True}


def test_one_slot_targets_just_over_their_limits_are_missed() -> None:
    figures = TierFigures(ratio_to_direct=2.01, cpu_ms_per_child=1.61, gap_p50_ms=1.01, gap_p99_ms=10.01)
    assert set(verdicts(tier_targets("one-slot", figures)).values()) == {False}


def test_eight_slot_watched_checks_the_ratio_and_the_full_watchers_share() -> None:
    met = verdicts(tier_targets("eight-slot-watched", TierFigures(ratio_to_direct=1.5, full_over_job_only=1.10)))
    assert met == {
        "eight-slot-watched: dbmaint (full watcher) / direct(P=2)": True,
        "eight-slot-watched: full watcher / job_only watcher": True,
        "eight-slot-watched: dispatch gap p50": None,
        "eight-slot-watched: dispatch gap p99": None,
    }
    missed = tier_targets("eight-slot-watched", TierFigures(ratio_to_direct=1.2, full_over_job_only=1.11))
    assert verdicts(missed)["eight-slot-watched: full watcher / job_only watcher"] is False


def test_large_one_slot_limit() -> None:
    assert verdicts(tier_targets("large-one-slot", TierFigures(ratio_to_direct=1.10)))[
        "large-one-slot: dbmaint / direct(P=2)"
    ]
    assert not verdicts(tier_targets("large-one-slot", TierFigures(ratio_to_direct=1.11)))[
        "large-one-slot: dbmaint / direct(P=2)"
    ]


def test_scale_limits_are_strict_and_a_failed_cli_is_missed() -> None:
    on_limits = TierFigures(create_seconds=1.0, getjob_seconds=0.1, getjob_bytes=MIB, cli_get_seconds=1.0)
    assert set(verdicts(tier_targets("scale", on_limits)).values()) == {False}
    under = TierFigures(create_seconds=0.5, getjob_seconds=0.05, getjob_bytes=MIB - 1, cli_get_seconds=0.9)
    assert set(verdicts(tier_targets("scale", under)).values()) == {True}
    failed = TierFigures(cli_get_seconds=0.3, cli_get_error="`dbmaint get` exit code 3")
    assert verdicts(tier_targets("scale", failed))["scale: `dbmaint get` of the parent"] is False


# -- tier_figures ------------------------------------------------------------------------------------------------


def test_figures_are_medians_of_the_successful_runs_and_ratios_of_medians() -> None:
    gap = {"count": 10, "p50_ms": 0.5, "p99_ms": 4.0}
    results = [
        run(DIRECT, 1.0, 1, {"pool-1": 0.4, "pool-2": 0.4, "client": 9.0}),
        run(DBMAINT, 3.0, 1, {"manager": 1.0, "worker-1": 1.0, "client": 9.0}, dispatch_gap=gap),
        run(DIRECT, 2.0, 2, {"pool-1": 0.5, "pool-2": 0.5}),
        run(DBMAINT, 4.0, 2, {"manager": 1.5, "worker-1": 1.5}, dispatch_gap=gap | {"p50_ms": 0.7}),
        run(DIRECT, 1.5, 3, {"pool-1": 0.6, "pool-2": 0.6}),
        run(DBMAINT, 99.0, 3, {"manager": 99.0}, ok=False),  # failed: left out
    ]
    figures = tier_figures(TIERS["one-slot"], results)
    assert figures.ratio_to_direct == pytest.approx(3.5 / 1.5)
    assert figures.cpu_ms_per_child == pytest.approx(2.5)  # client excluded; median of 2.0 and 3.0
    assert figures.direct_cpu_ms_per_child == pytest.approx(1.0)
    assert figures.gap_p50_ms == pytest.approx(0.6)
    assert figures.gap_p99_ms == pytest.approx(4.0)
    assert figures.full_over_job_only is None


def test_without_a_successful_baseline_or_gap_the_figures_are_missing() -> None:
    results = [run(DIRECT, 1.0, ok=False), run(DBMAINT, 3.0, dispatch_gap={"error": "URLError: refused"})]
    figures = tier_figures(TIERS["one-slot"], results)
    assert figures.ratio_to_direct is None
    assert figures.gap_p50_ms is None and figures.gap_p99_ms is None
    assert {t.met for t in tier_targets("one-slot", figures) if "gap" in t.name or "/" in t.name} == {None}


def test_the_watcher_share_compares_the_full_and_job_only_runs() -> None:
    results = [run(DIRECT, 1.0), run(FULL_WATCH, 1.65), run(JOB_ONLY_WATCH, 1.5)]
    figures = tier_figures(TIERS["eight-slot-watched"], results)
    assert figures.ratio_to_direct == pytest.approx(1.65)
    assert figures.full_over_job_only == pytest.approx(1.1)


def test_scale_figures_and_a_cli_that_failed_in_one_run() -> None:
    def reads(code: int | None) -> dict[str, Any]:
        return {
            "getjob_median_seconds": 0.08,
            "getjob_bytes": 500_000,
            "cli_get_seconds": 0.7,
            "cli_get_exit_code": code,
        }

    rss = {"VmHWM_at_end": 150 * 1024, "peak_sampled": 140 * 1024}
    results = [
        run(DBMAINT, 30.0, 1, create_seconds=0.4, parent_reads=reads(0), manager_rss_kib=rss),
        run(DBMAINT, 31.0, 2, create_seconds=0.6, parent_reads=reads(None), manager_rss_kib=rss),
    ]
    figures = tier_figures(TIERS["scale"], results)
    assert figures.ratio_to_direct is None
    assert figures.create_seconds == pytest.approx(0.5)
    assert figures.manager_peak_rss_mib == pytest.approx(150)
    assert figures.cli_get_error == "`dbmaint get` exit code None"
    met = verdicts(tier_targets("scale", figures))
    assert met["scale: `dbmaint get` of the parent"] is False
    assert met["scale: GetJob of the parent"] is True
    assert run_figures(results[0])["GetJob ms"] == pytest.approx(80)


# -- the dispatch gap from the manager's histogram ------------------------------------------------------------


EXPOSITION = """# HELP dbmaint_dispatch_gap_seconds gap
# TYPE dbmaint_dispatch_gap_seconds histogram
dbmaint_dispatch_gap_seconds_bucket{le="0.0005"} 10.0
dbmaint_dispatch_gap_seconds_bucket{le="0.001"} 50.0
dbmaint_dispatch_gap_seconds_bucket{le="0.01"} 99.0
dbmaint_dispatch_gap_seconds_bucket{le="+Inf"} 100.0
dbmaint_dispatch_gap_seconds_count 100.0
dbmaint_dispatch_gap_seconds_sum 0.5
# HELP other_seconds other
# TYPE other_seconds histogram
other_seconds_bucket{le="+Inf"} 3.0
other_seconds_count 3.0
other_seconds_sum 1.0
"""


def test_histogram_buckets_are_read_from_the_exposition() -> None:
    buckets = histogram_buckets(EXPOSITION, "dbmaint_dispatch_gap_seconds")
    assert buckets == [(0.0005, 10.0), (0.001, 50.0), (0.01, 99.0), (math.inf, 100.0)]
    assert histogram_buckets(EXPOSITION, "absent_seconds") == []


def test_quantiles_interpolate_within_a_bucket_and_are_exact_on_bounds() -> None:
    buckets = histogram_buckets(EXPOSITION, "dbmaint_dispatch_gap_seconds")
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.001)  # 50 of 100 are <= 1 ms: on the bound
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.01)
    assert histogram_quantile(buckets, 0.05) == pytest.approx(0.00025)  # half-way into the first bucket
    assert histogram_quantile(buckets, 0.51) > 0.001


def test_a_quantile_in_the_inf_bucket_is_the_highest_finite_bound_and_nothing_observed_is_none() -> None:
    assert histogram_quantile([(0.001, 0.0), (0.01, 1.0), (math.inf, 10.0)], 0.99) == pytest.approx(0.01)
    assert histogram_quantile([(0.001, 0.0), (math.inf, 0.0)], 0.5) is None
    assert histogram_quantile([], 0.5) is None
