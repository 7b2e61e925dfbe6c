"""The targets from the issue, checked against the measurements, and the printed tables.

Small: dbmaint <= 1.5 x direct(P=2) and < 0.35 x Celery; large: dbmaint <= 1.10 x direct(P=2); scale:
create < 1 s, manager peak RSS < 200 MiB, assignment latency p50 < 5 ms and p99 < 50 ms (the sizes' targets).
The tiers' targets (issue 10) are in ``bench/tiers.py``; their tables are printed by ``print_tier``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.model import RunResult, Summary

RUNNER_ORDER = ("direct-p1", "direct-p2", "dbmaint", "celery")


@dataclass(frozen=True)
class Target:
    """``measured`` must be below ``limit`` (``inclusive``: or equal). No figure (None or NaN): not measured,
    never met. ``error`` (the measurement itself failed, e.g. a command exited non-zero): missed, whatever
    the figure."""

    name: str
    limit: float
    measured: float | None
    unit: str
    inclusive: bool = True
    note: str = ""
    error: str = ""

    @property
    def met(self) -> bool | None:
        if self.error:
            return False
        if self.measured is None or math.isnan(self.measured):
            return None
        return self.measured <= self.limit if self.inclusive else self.measured < self.limit

    @property
    def verdict(self) -> str:
        met = self.met
        if self.error:
            return f"MISSED ({self.error})"
        if met is None:
            return "not measured"
        assert self.measured is not None
        share = self.measured / self.limit
        if met:
            return f"met ({100 * (1 - share):.0f}% headroom)"
        return f"MISSED by {100 * (share - 1):.0f}% ({share:.2f}x the limit)"

    @property
    def requirement(self) -> str:
        return f"{'<=' if self.inclusive else '<'} {self.limit:g}{self.unit}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(met=self.met, verdict=self.verdict, requirement=self.requirement)
        return data


def paired_ratio(results: Sequence[RunResult], numerator: str, denominator: str) -> dict[str, Any] | None:
    """numerator/denominator of the median wall times, and run by run (runs of the same index, measured one
    after the other on the same freshly restored fleet)."""
    by_run: dict[int, dict[str, RunResult]] = {}
    for result in results:
        if result.ok:
            by_run.setdefault(result.run, {})[result.runner] = result
    per_run = [
        round(runs[numerator].wall_seconds / runs[denominator].wall_seconds, 3)
        for _, runs in sorted(by_run.items())
        if numerator in runs and denominator in runs
    ]
    tops = [r.wall_seconds for r in results if r.ok and r.runner == numerator]
    bottoms = [r.wall_seconds for r in results if r.ok and r.runner == denominator]
    if not tops or not bottoms:
        return None
    return {
        "ratio_of_medians": round(statistics.median(tops) / statistics.median(bottoms), 3),
        "per_run": per_run,
    }


def size_targets(size: str, ratios: dict[str, dict[str, Any] | None]) -> list[Target]:
    def measured(key: str) -> float | None:
        ratio = ratios.get(key)
        return None if ratio is None else float(ratio["ratio_of_medians"])

    if size == "small":
        return [
            Target("small: dbmaint / direct(P=2)", 1.5, measured("dbmaint/direct-p2"), "x"),
            Target("small: dbmaint / Celery", 0.35, measured("dbmaint/celery"), "x", inclusive=False),
        ]
    if size == "large":
        return [Target("large: dbmaint / direct(P=2)", 1.10, measured("dbmaint/direct-p2"), "x")]
    return []


def scale_targets(result: RunResult | None) -> list[Target]:
    if result is None or not result.ok:
        return [
            Target("scale: create", 1.0, None, " s", inclusive=False),
            Target("scale: manager peak RSS", 200.0, None, " MiB", inclusive=False),
        ]
    details = result.details
    rss_kib = max(details["manager_rss_kib"].get("VmHWM_at_end") or 0, details["manager_rss_kib"]["peak_sampled"])
    latency = details["assignment_latency"]
    spec, logged = latency.get("target_ready") or {}, latency.get("worker_log") or {}
    spec_note = "as specified: runnable = max(parent created, previous child on the target finished)"
    logged_note = "runnable also waits for a free slot; received = the worker's log line"
    return [
        Target("scale: create (CreateMaintenance RPC)", 1.0, details["create_seconds"], " s", inclusive=False),
        Target("scale: manager peak RSS", 200.0, rss_kib / 1024, " MiB", inclusive=False),
        Target("scale: assignment latency p50", 5.0, spec.get("p50_ms"), " ms", False, spec_note),
        Target("scale: assignment latency p99", 50.0, spec.get("p99_ms"), " ms", False, spec_note),
        Target("scale: assignment latency p50 (worker log)", 5.0, logged.get("p50_ms"), " ms", False, logged_note),
        Target(
            "scale: assignment latency p99 (worker log)", 50.0, logged.get("p99_ms"), " ms", False, logged_note
        ),
    ]


# -- printing -----------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def _setup(details: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in details.items())


def print_machine(console: Console, machine: dict[str, Any]) -> None:
    table = Table(title="machine", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for key in ("cpu_model", "cores", "memory", "kernel", "python", "sqlite", "grpcio", "celery", "date", "git"):
        if key in machine:
            table.add_row(key, str(machine[key]))
    console.print(table)


def print_targets(console: Console, targets: Sequence[Target]) -> None:
    if not targets:
        return
    table = Table(title="targets from the issue", title_justify="left")
    table.add_column("target")
    table.add_column("required", justify="right")
    table.add_column("measured", justify="right")
    table.add_column("verdict")
    for target in targets:
        style = {True: "green", False: "red", None: "yellow"}[target.met]
        name = f"{target.name}\n[dim]{target.note}[/dim]" if target.note else target.name
        table.add_row(
            name,
            target.requirement,
            f"{_fmt(target.measured, 3)}{target.unit}",
            f"[{style}]{target.verdict}[/{style}]",
        )
    console.print(table)


def print_size(console: Console, size: dict[str, Any], summaries: dict[str, Summary | None]) -> None:
    workload = size["workload"]
    title = (
        f"{workload['name']}: {workload['targets']} targets x {workload['rows']:,} rows, "
        f"{workload['children']:,} children per run, median of {size['runs_per_runner']} run(s)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("runner")
    table.add_column("setup")
    for column in ("median s", "min s", "max s", "children/s", "CPU ms/child", "ops sum s", "other CPU s"):
        table.add_column(column, justify="right")
    for runner in RUNNER_ORDER:
        if runner in size.get("skipped", {}):
            table.add_row(
                runner, f"[yellow]skipped: {size['skipped'][runner]}[/yellow]", "", "", "", "", "", "", ""
            )
            continue
        if runner not in summaries:
            continue
        summary = summaries[runner]
        if summary is None:
            table.add_row(runner, "[red]every run failed (see the JSON)[/red]", "", "", "", "", "", "", "")
            continue
        failed = f" [red]({summary.failed_runs} failed)[/red]" if summary.failed_runs else ""
        table.add_row(
            runner,
            _setup(summary.details) + failed,
            _fmt(summary.median_seconds),
            _fmt(summary.min_seconds),
            _fmt(summary.max_seconds),
            _fmt(summary.children_per_second, 1),
            _fmt(summary.cpu_ms_per_child, 2),
            _fmt(summary.operation_seconds, 2),
            _fmt(summary.other_cpu_seconds_max, 2),
        )
    console.print(table)
    for key, ratio in size["ratios"].items():
        if ratio is not None:
            console.print(f"  {key}: {ratio['ratio_of_medians']:.3f} (run by run: {ratio['per_run']})")


def print_scale(console: Console, size: dict[str, Any], result: RunResult | None) -> None:
    workload = size["workload"]
    title = (
        f"scale: one parent of {workload['children']:,} children over {workload['targets']} targets "
        f"({workload['rows']} rows each)"
    )
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    if result is None:
        table.add_row("result", "[red]no run[/red]")
        console.print(table)
        return
    if result.error:
        table.add_row("error", f"[red]{result.error}[/red]")
    details = result.details
    rss = details.get("manager_rss_kib", {})
    table.add_row("setup", _setup(details.get("setup", {})))
    table.add_row("children completed", f"{result.completed:,} / {result.children:,}")
    table.add_row("create (CreateMaintenance RPC)", f"{_fmt(details.get('create_seconds'))} s")
    table.add_row("time to finish (from the create call)", f"{_fmt(result.wall_seconds)} s")
    if result.wall_seconds:
        table.add_row("children/s", _fmt(result.children / result.wall_seconds, 1))
    table.add_row("CPU ms/child (all processes)", _fmt(1000 * result.total_cpu_seconds / result.children, 2))
    table.add_row("CPU s of other processes meanwhile", _fmt(details.get("other_cpu_seconds"), 2))
    table.add_row("CPU s by process", ", ".join(f"{k}={v:.2f}" for k, v in result.cpu_seconds.items()))
    table.add_row(
        "manager RSS MiB (before / peak sampled / VmHWM)",
        " / ".join(_fmt((rss.get(k) or 0) / 1024, 1) for k in ("before_create", "peak_sampled", "VmHWM_at_end")),
    )
    labels = {"target_ready": "as specified", "target_and_slot_ready": "slot-aware", "worker_log": "worker log"}
    for name, label in labels.items():
        latency = details.get("assignment_latency", {}).get(name)
        if latency:
            table.add_row(
                f"assignment latency ({label}) ms",
                f"p50 {latency['p50_ms']:.2f}  p90 {latency['p90_ms']:.2f}  p99 {latency['p99_ms']:.2f}  "
                f"max {latency['max_ms']:.2f}  (n={latency['count']}, {100 * latency['zero_share']:.0f}% = 0)",
            )
    first = details.get("first_start_per_target")
    if first:
        table.add_row(
            "first start per target (s after create)",
            f"p50 {first['p50_s']:.3f}  max {first['max_s']:.3f}  ({first['targets']} targets)",
        )
    console.print(table)
    console.print(f"  note: {details.get('assignment_latency_note', '')}")


def print_findings(console: Console, findings: dict[str, dict[str, list[str]]]) -> None:
    if not findings:
        console.print("process logs: no WARNING, ERROR, CRITICAL or traceback lines")
        return
    console.print(
        "[yellow]process logs with WARNING/ERROR/CRITICAL/traceback lines (first lines; all in the JSON):"
    )
    for run, by_process in findings.items():
        for process, lines in by_process.items():
            console.print(f"  {run} {process}: {len(lines)} line(s)")
            for line in lines[:3]:
                console.print(f"    {line[:200]}", markup=False, highlight=False)


def print_tier(
    console: Console, section: dict[str, Any], results: Sequence[RunResult], figures: dict[int, dict[str, Any]]
) -> None:
    """One row per (runner, figure) the runs produced: median, min, max and the runs' values in order.
    ``figures``: index in ``results`` -> that run's figures (``tiers.run_figures``); failed runs are left out
    of the statistics and counted in the runner's first row."""
    workload = section["workload"]
    title = (
        f"tier {section['tier']}: {section['description']} — {workload['targets']} targets x "
        f"{workload['rows']:,} rows, {workload['children']:,} children per run, "
        f"{section['runs_per_runner']} run(s)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("runner")
    table.add_column("figure")
    for column in ("median", "min", "max", "runs in order"):
        table.add_column(column, justify="right")
    for runner in section["runners"]:
        indexes = [i for i, r in enumerate(results) if r.runner == runner]
        failed = sum(1 for i in indexes if not results[i].ok)
        label = runner + (f" [red]({failed} failed)[/red]" if failed else "")
        setup = next((results[i].details.get("setup") for i in indexes if results[i].ok), None)
        if setup:
            table.add_row(label, "setup", _setup(setup), "", "", "")
            label = ""
        names = [name for i in indexes for name in figures[i]]
        for name in dict.fromkeys(names):
            values = [figures[i].get(name) for i in indexes if results[i].ok]
            present = [float(v) for v in values if v is not None]
            if not present:
                continue
            digits = 0 if all(v.is_integer() for v in present) and max(present) >= 10 else 3  # counts
            table.add_row(
                label,
                name,
                _fmt(statistics.median(present), digits),
                _fmt(min(present), digits),
                _fmt(max(present), digits),
                ", ".join(_fmt(None if v is None else float(v), digits) for v in values),
            )
            label = ""
        if label:
            table.add_row(label, "[red]no successful run (see the JSON)[/red]", "", "", "", "")
    console.print(table)
