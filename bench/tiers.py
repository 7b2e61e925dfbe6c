"""The named tiers of issue 10 (``python -m bench --tier NAME``): fixed setups, each measured side by side
with its baseline in one invocation, and the issue's targets checked against the medians.

* ``one-slot``: small fleet, 2 workers x 1 slot (the worker's default) vs direct(P=2).
* ``eight-slot-watched``: small fleet, 2 workers x 8 slots with one full ``WatchJob`` watcher (every child's
  change, as grpcurl watches), and the same with a ``job_only`` watcher, vs direct(P=2).
* ``large-one-slot``: large fleet, 2 workers x 1 slot vs direct(P=2).
* ``scale``: one parent of 10,000 children, 2 workers x 8 slots: create, GetJob, ``dbmaint get``, peak RSS.

Rules of the verdicts (pure functions: figures in, targets out; ``report.Target`` decides met/missed):

* every figure is the **median over the tier's successful runs** (runs of a runner that failed do not count);
  a figure no run produced is None, and its target says "not measured", never "met";
* ratios are ratios of medians measured in the same invocation (run i of every runner, then run i + 1);
* "<=" targets are met exactly on the limit; "<" targets (the scale tier's) are not;
* the dispatch gap (p50, p99) is checked on the tier's main dbmaint runner (``TIER.main``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.model import RunResult
from bench.report import Target

MIB = 1024 * 1024

# Runner labels of the tiers.
DIRECT = "direct-p2"
DBMAINT = "dbmaint"
FULL_WATCH = "dbmaint-full-watch"
JOB_ONLY_WATCH = "dbmaint-job-only"


@dataclass(frozen=True)
class TierRunner:
    """One dbmaint setup of a tier (``direct-p2`` is implied by ``Tier.baseline``)."""

    label: str
    workers: int
    slots: int
    job_only: bool = True


@dataclass(frozen=True)
class Tier:
    name: str
    size: str  # the workload (bench.workload.SIZES)
    runners: tuple[TierRunner, ...]
    main: str  # the dbmaint runner whose figures are checked
    baseline: bool = True  # direct(P=2) side by side
    description: str = ""


TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier(
            "one-slot",
            "small",
            (TierRunner(DBMAINT, 2, 1),),
            DBMAINT,
            description="small fleet, 2 workers x 1 slot (job_only watcher) vs direct(P=2)",
        ),
        Tier(
            "eight-slot-watched",
            "small",
            (TierRunner(FULL_WATCH, 2, 8, job_only=False), TierRunner(JOB_ONLY_WATCH, 2, 8)),
            FULL_WATCH,
            description="small fleet, 2 workers x 8 slots, one full WatchJob watcher; again with a job_only one",
        ),
        Tier(
            "large-one-slot",
            "large",
            (TierRunner(DBMAINT, 2, 1),),
            DBMAINT,
            description="large fleet, 2 workers x 1 slot vs direct(P=2)",
        ),
        Tier(
            "scale",
            "scale",
            (TierRunner(DBMAINT, 2, 8),),
            DBMAINT,
            baseline=False,
            description="one parent: 100 targets x (4 operations x 25) = 10,000 children, 2 workers x 8 slots",
        ),
    )
}


@dataclass(frozen=True)
class TierFigures:
    """The medians a tier's verdicts are made of; None: not measured."""

    ratio_to_direct: float | None = None  # main runner / direct(P=2), ratio of median wall times
    cpu_ms_per_child: float | None = None  # main runner: manager + workers, CPU ms per child
    direct_cpu_ms_per_child: float | None = None  # direct(P=2)'s pool processes, CPU ms per child
    full_over_job_only: float | None = None  # full watcher's median wall / job_only watcher's
    gap_p50_ms: float | None = None
    gap_p99_ms: float | None = None
    gap_count: int | None = None
    create_seconds: float | None = None
    getjob_seconds: float | None = None
    getjob_bytes: float | None = None
    cli_get_seconds: float | None = None
    cli_get_error: str = ""  # `dbmaint get` exited non-zero (or was killed) in some run
    manager_peak_rss_mib: float | None = None


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _good(results: Sequence[RunResult], runner: str) -> list[RunResult]:
    return [r for r in results if r.ok and r.runner == runner]


def _wall_ratio(results: Sequence[RunResult], top: str, bottom: str) -> float | None:
    tops = _median([r.wall_seconds for r in _good(results, top)])
    bottoms = _median([r.wall_seconds for r in _good(results, bottom)])
    if tops is None or not bottoms:
        return None
    return tops / bottoms


def _gap(result: RunResult, key: str) -> float | None:
    gap = result.details.get("dispatch_gap") or {}
    value = gap.get(key)
    return None if value is None else float(value)


def _peak_rss_mib(result: RunResult) -> float | None:
    rss = result.details.get("manager_rss_kib")
    if not rss:
        return None
    return max(rss.get("VmHWM_at_end") or 0, rss.get("peak_sampled") or 0) / 1024


def _read(result: RunResult, key: str) -> float | None:
    value = (result.details.get("parent_reads") or {}).get(key)
    return None if value is None else float(value)


def _cli_failures(results: Sequence[RunResult]) -> list[str]:
    """Exit codes of the ``dbmaint get`` runs that did not exit 0 ("None": killed at its timeout)."""
    codes = [(r.details.get("parent_reads") or {}).get("cli_get_exit_code", 0) for r in results]
    return sorted({str(code) for code in codes if code != 0})


def tier_figures(tier: Tier, results: Sequence[RunResult]) -> TierFigures:
    """The medians of ``tier``'s successful runs (see the module docstring)."""
    main = _good(results, tier.main)
    failed_cli = _cli_failures(main)
    return TierFigures(
        ratio_to_direct=_wall_ratio(results, tier.main, DIRECT) if tier.baseline else None,
        cpu_ms_per_child=_median([r.service_cpu_ms_per_child for r in main]),
        direct_cpu_ms_per_child=_median([r.service_cpu_ms_per_child for r in _good(results, DIRECT)]),
        full_over_job_only=_wall_ratio(results, FULL_WATCH, JOB_ONLY_WATCH) if tier.main == FULL_WATCH else None,
        gap_p50_ms=_median([_gap(r, "p50_ms") for r in main]),
        gap_p99_ms=_median([_gap(r, "p99_ms") for r in main]),
        gap_count=None if not main else int(_median([_gap(r, "count") for r in main]) or 0),
        create_seconds=_median([r.details.get("create_seconds") for r in main]),
        getjob_seconds=_median([_read(r, "getjob_median_seconds") for r in main]),
        getjob_bytes=_median([_read(r, "getjob_bytes") for r in main]),
        cli_get_seconds=_median([_read(r, "cli_get_seconds") for r in main]),
        cli_get_error=f"`dbmaint get` exit code {', '.join(failed_cli)}" if failed_cli else "",
        manager_peak_rss_mib=_median([_peak_rss_mib(r) for r in main]),
    )


def _gap_targets(tier: str, figures: TierFigures) -> list[Target]:
    note = "manager metric dbmaint_dispatch_gap_seconds; p from its buckets (median over runs)"
    return [
        Target(f"{tier}: dispatch gap p50", 1.0, figures.gap_p50_ms, " ms", note=note),
        Target(f"{tier}: dispatch gap p99", 10.0, figures.gap_p99_ms, " ms", note=note),
    ]


def tier_targets(tier: str, figures: TierFigures) -> list[Target]:
    """The issue's targets for ``tier``, each with its measured median (None: not measured)."""
    if tier == "one-slot":
        return [
            Target("one-slot: dbmaint / direct(P=2)", 2.0, figures.ratio_to_direct, "x"),
            Target(
                "one-slot: CPU per child, manager + workers",
                1.6,
                figures.cpu_ms_per_child,
                " ms",
                note=f"direct(P=2): {_ms(figures.direct_cpu_ms_per_child)} ms per child",
            ),
            *_gap_targets(tier, figures),
        ]
    if tier == "eight-slot-watched":
        return [
            Target("eight-slot-watched: dbmaint (full watcher) / direct(P=2)", 1.5, figures.ratio_to_direct, "x"),
            Target(
                "eight-slot-watched: full watcher / job_only watcher",
                1.10,
                figures.full_over_job_only,
                "x",
                note="the full watcher adds at most 10 % to the wall time",
            ),
            *_gap_targets(tier, figures),
        ]
    if tier == "large-one-slot":
        return [
            Target("large-one-slot: dbmaint / direct(P=2)", 1.10, figures.ratio_to_direct, "x"),
            *_gap_targets(tier, figures),
        ]
    if tier == "scale":
        size = None if figures.getjob_bytes is None else figures.getjob_bytes / MIB
        return [
            Target("scale: CreateMaintenance", 1.0, figures.create_seconds, " s", inclusive=False),
            Target(
                "scale: GetJob of the parent",
                100.0,
                None if figures.getjob_seconds is None else 1000 * figures.getjob_seconds,
                " ms",
                inclusive=False,
            ),
            Target("scale: GetJob size", 1.0, size, " MiB", inclusive=False),
            Target(
                "scale: `dbmaint get` of the parent",
                1.0,
                figures.cli_get_seconds,
                " s",
                inclusive=False,
                note="process start included",
                error=figures.cli_get_error,
            ),
        ]
    raise KeyError(tier)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run_figures(result: RunResult) -> dict[str, float | None]:
    """The per-run figures the tier tables show (None: not measured in that run)."""
    reads = result.details.get("parent_reads") or {}
    return {
        "wall s": result.wall_seconds if result.ok else None,
        "CPU ms/child (services)": result.service_cpu_ms_per_child,
        "CPU ms/child (all, with client)": 1000 * result.total_cpu_seconds / result.children
        if result.children
        else None,
        "dispatch gap p50 ms": _gap(result, "p50_ms"),
        "dispatch gap p99 ms": _gap(result, "p99_ms"),
        "dispatch gaps observed": _gap(result, "count"),
        "create s": result.details.get("create_seconds"),
        "GetJob ms": None if reads.get("getjob_median_seconds") is None else 1000 * reads["getjob_median_seconds"],
        "GetJob MiB": None if reads.get("getjob_bytes") is None else reads["getjob_bytes"] / MIB,
        "dbmaint get s": reads.get("cli_get_seconds"),
        "manager peak RSS MiB": _peak_rss_mib(result),
        # CPU time other processes used during the run (see CpuMeter): well above 0, the run was disturbed.
        "other CPU s": result.details.get("other_cpu_seconds"),
    }
