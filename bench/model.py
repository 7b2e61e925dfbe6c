"""What one run of one runner produced, and the statistics the report shows."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.ops import OpRecord


@dataclass
class RunResult:
    """One run: ``children`` operations over a freshly restored fleet, timed and CPU-metered."""

    runner: str
    size: str
    run: int
    children: int
    completed: int
    wall_seconds: float
    # CPU seconds (user + sys) by process role, e.g. {"manager": .., "worker-1": .., "client": ..}.
    cpu_seconds: dict[str, float]
    # Sum of the per-operation durations as measured where the operations ran.
    operation_seconds: float
    # VACUUM, summed over the targets: file size before and after (the same for every runner: same work).
    vacuum_bytes_before: int
    vacuum_bytes_after: int
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error and self.completed == self.children

    @property
    def total_cpu_seconds(self) -> float:
        return sum(self.cpu_seconds.values())

    @property
    def service_cpu_ms_per_child(self) -> float | None:
        """CPU milliseconds per child of the processes doing the work (dbmaint: manager and workers; direct: the
        pool processes), without the benchmark's own client; None without children."""
        if not self.children:
            return None
        return 1000 * sum(v for k, v in self.cpu_seconds.items() if k != "client") / self.children

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["total_cpu_seconds"] = round(self.total_cpu_seconds, 3)
        data["cpu_ms_per_child"] = (
            round(1000 * self.total_cpu_seconds / self.children, 4) if self.children else None
        )
        data["children_per_second"] = round(self.children / self.wall_seconds, 2) if self.wall_seconds else None
        return data


def vacuum_bytes(records: Iterable[OpRecord]) -> tuple[int, int]:
    before = after = 0
    for record in records:
        if record["operation"] == "vacuum":
            before += record["bytes_before"]
            after += record["bytes_after"]
    return before, after


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); ``fraction`` in [0, 1]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def histogram_quantile(buckets: Sequence[tuple[float, float]], fraction: float) -> float | None:
    """The ``fraction`` quantile of a Prometheus histogram from its cumulative buckets ``(le, count)`` (sorted,
    +Inf last), as Prometheus' ``histogram_quantile`` computes it: find the first bucket whose cumulative count
    reaches ``fraction`` x total, and interpolate linearly between its lower and upper bound (the first bucket's
    lower bound is 0). In the +Inf bucket the result is the highest finite bound (a lower bound of the truth).
    None when nothing was observed. The value is only as fine as the buckets; but whether it is <= a bucket
    bound is exact: it is iff that bucket's cumulative count reaches the rank."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = fraction * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank and cumulative > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower


@dataclass(frozen=True)
class Summary:
    """Median, min and max over the successful runs of one runner."""

    runner: str
    runs: int
    failed_runs: int
    children: int
    median_seconds: float
    min_seconds: float
    max_seconds: float
    children_per_second: float
    cpu_ms_per_child: float
    # Median of the summed per-operation durations (as measured where the operations ran).
    operation_seconds: float
    # The largest CPU time other processes used during one of the runs (a disturbance indicator).
    other_cpu_seconds_max: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(runner: str, results: Sequence[RunResult]) -> Summary | None:
    good = [r for r in results if r.ok]
    if not good:
        return None
    walls = [r.wall_seconds for r in good]
    median = statistics.median(walls)
    children = good[0].children
    cpu_per_child = statistics.median(1000 * r.total_cpu_seconds / r.children for r in good)
    return Summary(
        runner=runner,
        runs=len(good),
        failed_runs=len(results) - len(good),
        children=children,
        median_seconds=median,
        min_seconds=min(walls),
        max_seconds=max(walls),
        children_per_second=children / median if median else math.nan,
        cpu_ms_per_child=cpu_per_child,
        operation_seconds=statistics.median(r.operation_seconds for r in good),
        other_cpu_seconds_max=max(float(r.details.get("other_cpu_seconds", 0.0)) for r in good),
        details=dict(good[0].details.get("setup", {})),
    )
