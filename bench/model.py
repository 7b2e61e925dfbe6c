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
