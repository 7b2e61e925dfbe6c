"""``python -m bench``: generate (once) and restore the fleet, run the runners, print the tables, write JSON.

    .venv/bin/python -m bench --size all --with-celery

Run it from the repository root. See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import celery_runner, dbmaint_runner, direct, ops, report, scale, tiers
from bench.model import RunResult, summarize
from bench.workload import Fleet, Workload, ensure_fleet, manifest, restore_fleet, workload

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "latest.json"
DEFAULT_CACHE = REPO_ROOT / "bench" / ".cache"
DEFAULT_RUNS = {"small": 3, "large": 2, "scale": 1}
TIER_RUNS = 3
SIZE_CHOICES = ("small", "large", "scale", "all")
TIER_CHOICES = (*tiers.TIERS, "all")
SCHEMA = "dbmaint-bench/1"


# Children a worker runs at once. The worker's own default is 1 (like vacuumdb's --jobs); a fleet of many small
# databases is where slots pay, and where dbmaint's per-child overhead is measured.
DEFAULT_WORKER_SLOTS = 32


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark dbmaint against the same SQL run directly (and optionally through Celery).",
    )
    parser.add_argument(
        "--size",
        choices=SIZE_CHOICES,
        default=None,
        help="which workload(s) (default: all, unless --tier is given)",
    )
    parser.add_argument(
        "--tier",
        choices=TIER_CHOICES,
        action="append",
        default=None,
        help="a named tier of issue 10 (repeatable; all: every tier); fixed workers and slots",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help=f"runs per runner (default: small 3, large 2, scale 1; every tier {TIER_RUNS})",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated fleets (default: 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default: {DEFAULT_OUT})")
    parser.add_argument("--with-celery", action="store_true", help="also run the Celery runner (small, large)")
    parser.add_argument(
        "--worker-slots",
        type=int,
        default=DEFAULT_WORKER_SLOTS,
        help=f"dbmaint workers' --slots and Celery workers' --concurrency (default: {DEFAULT_WORKER_SLOTS})",
    )
    parser.add_argument("--workers", type=int, default=2, help="dbmaint (and Celery) workers for small/large")
    parser.add_argument("--scale-workers", type=int, default=scale.DEFAULT_WORKERS, help="dbmaint workers, scale")
    parser.add_argument("--targets", type=int, default=None, help="override T of every size (smoke tests)")
    parser.add_argument("--rows", type=int, default=None, help="override R of every size (smoke tests)")
    parser.add_argument("--scale-repeats", type=int, default=scale.REPEATS, help="four-operation repeats, scale")
    parser.add_argument(
        "--redis-url", default=celery_runner.DEFAULT_URL, help="Celery broker and backend (flushed)"
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where generated fleets are kept")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (fleets, logs, job stores)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take")
    args = parser.parse_args(argv)
    for name in ("runs", "workers", "scale_workers", "targets", "rows", "scale_repeats", "worker_slots"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# -- machine --------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git() -> str:
    """The commit and whether the services' code differs from it (read-only git commands)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--",
                "dbmaint",
                "manager_service",
                "worker_service",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in the services' if dirty else ''}" if head else "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "grpcio": _version("grpcio"),
        "celery": _version("celery"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git(),
    }


# -- sizes --------------------------------------------------------------------------------------------------------


def _failed(runner: str, size: str, run: int, children: int, error: BaseException) -> RunResult:
    return RunResult(runner, size, run, children, 0, 0.0, {}, 0.0, 0, 0, error=f"{type(error).__name__}: {error}")


def _describe(spec: Workload, cached: Path, children: int, runs: int) -> dict[str, Any]:
    info = manifest(cached)
    return {
        "name": spec.name,
        "targets": spec.targets,
        "rows": spec.rows,
        "seed": spec.seed,
        "children": children,
        "fleet_bytes": sum(f.stat().st_size for f in cached.glob("*.db")),
        "sha256": info.get("sha256"),
        "cache": str(cached),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, console: Console) -> None:
        self.args = args
        self.workdir = workdir
        self.console = console
        self.findings: dict[str, dict[str, list[str]]] = {}

    def log(self, text: str) -> None:
        self.console.log(text)

    def _prepare(self, name: str) -> tuple[Workload, Path]:
        spec = workload(name, self.args.seed, self.args.targets, self.args.rows)
        began = time.perf_counter()
        cached = ensure_fleet(spec, self.args.cache_dir)
        self.log(f"{name}: fleet {cached} ready in {time.perf_counter() - began:.1f}s")
        return spec, cached

    def _one(
        self,
        name: str,
        label: str,
        cached: Path,
        run: int,
        children: int,
        body: Callable[[Fleet, Path, int], RunResult],
    ) -> RunResult:
        place = self.workdir / f"{name}-{run}-{label}"
        fleet = restore_fleet(cached, place / "fleet")
        load = os.getloadavg()
        try:
            result = body(fleet, place, run)
        except Exception as error:  # one failed run is reported, the others still run
            result = _failed(label, name, run, children, error)
        result.details["loadavg_before"] = [round(x, 2) for x in load]
        if findings := result.details.get("log_findings"):
            self.findings[f"{name} run {run} {label}"] = findings
        if not self.args.keep:
            shutil.rmtree(place / "fleet", ignore_errors=True)
        state = f"{result.wall_seconds:.3f}s" if result.ok else f"FAILED: {result.error or 'incomplete'}"
        self.log(f"{name} run {run} {label}: {state} ({result.completed}/{result.children} children)")
        return result

    def run_size(self, name: str) -> dict[str, Any]:
        began = time.perf_counter()
        spec, cached = self._prepare(name)
        operations = ops.OPERATIONS
        children = spec.children(len(operations))
        runs = self.args.runs or DEFAULT_RUNS[name]
        skipped: dict[str, str] = {}
        runners: dict[str, Callable[[Fleet, Path, int], RunResult]] = {
            "direct-p1": lambda fleet, _place, run: direct.run_once(fleet, 1, name, run, operations),
            "direct-p2": lambda fleet, _place, run: direct.run_once(fleet, 2, name, run, operations),
            "dbmaint": lambda fleet, place, run: dbmaint_runner.run_once(
                fleet, place, name, run, self.args.workers, self.args.worker_slots, operations, self.args.timeout
            ),
        }
        if self.args.with_celery:
            reason = celery_runner.unavailable(self.args.redis_url)
            if reason is None:
                runners["celery"] = lambda fleet, place, run: celery_runner.run_once(
                    fleet,
                    place,
                    name,
                    run,
                    self.args.workers,
                    self.args.worker_slots or 1,
                    operations,
                    self.args.redis_url,
                    self.args.timeout,
                )
            else:
                skipped["celery"] = reason
                self.log(f"[yellow]celery skipped: {reason}[/yellow]")
        results: list[RunResult] = []
        for run in range(1, runs + 1):  # interleaved: run i of every runner, then run i + 1
            for label, body in runners.items():
                results.append(self._one(name, label, cached, run, children, body))
        summaries = {label: summarize(label, [r for r in results if r.runner == label]) for label in runners}
        ratios = {
            "dbmaint/direct-p2": report.paired_ratio(results, "dbmaint", "direct-p2"),
            "dbmaint/celery": report.paired_ratio(results, "dbmaint", "celery") if "celery" in runners else None,
        }
        targets = report.size_targets(name, ratios)
        section = {
            "workload": _describe(spec, cached, children, runs),
            "runs_per_runner": runs,
            "runs": [r.to_json() for r in results],
            "summary": {label: s.to_json() if s else None for label, s in summaries.items()},
            "ratios": ratios,
            "skipped": skipped,
            "targets": [t.to_json() for t in targets],
            "elapsed_seconds": round(time.perf_counter() - began, 1),
        }
        report.print_size(self.console, section, summaries)
        report.print_targets(self.console, targets)
        return section

    def _tier_runner(
        self, tier: tiers.Tier, setup: tiers.TierRunner, operations: Sequence[str]
    ) -> Callable[[Fleet, Path, int], RunResult]:
        if tier.size == "scale":
            return lambda fleet, place, run: scale.run_once(
                fleet, place, run, setup.workers, setup.slots, self.args.scale_repeats, self.args.timeout
            )
        return lambda fleet, place, run: dbmaint_runner.run_once(
            fleet,
            place,
            tier.name,
            run,
            setup.workers,
            setup.slots,
            operations,
            self.args.timeout,
            job_only=setup.job_only,
            runner=setup.label,
        )

    def run_tier(self, tier: tiers.Tier) -> dict[str, Any]:
        """Every run of the tier's runners (direct(P=2) first), interleaved; then the figures and verdicts."""
        began = time.perf_counter()
        spec, cached = self._prepare(tier.size)
        repeats = self.args.scale_repeats if tier.size == "scale" else 1
        operations = list(ops.OPERATIONS) * repeats
        children = spec.children(len(operations))
        runs = self.args.runs or TIER_RUNS
        runners: dict[str, Callable[[Fleet, Path, int], RunResult]] = {}
        if tier.baseline:
            runners[tiers.DIRECT] = lambda fleet, _place, run: direct.run_once(
                fleet, 2, tier.name, run, operations
            )
        for setup in tier.runners:
            runners[setup.label] = self._tier_runner(tier, setup, operations)
        results: list[RunResult] = []
        for run in range(1, runs + 1):
            for label, body in runners.items():
                results.append(self._one(tier.name, label, cached, run, children, body))
        figures = tiers.tier_figures(tier, results)
        targets = tiers.tier_targets(tier.name, figures)
        section = {
            "tier": tier.name,
            "description": tier.description,
            "workload": _describe(spec, cached, children, runs),
            "runs_per_runner": runs,
            "runners": list(runners),
            "runs": [r.to_json() for r in results],
            "figures": asdict(figures),
            "targets": [t.to_json() for t in targets],
            "elapsed_seconds": round(time.perf_counter() - began, 1),
        }
        per_run = {index: tiers.run_figures(result) for index, result in enumerate(results)}
        report.print_tier(self.console, section, results, per_run)
        report.print_targets(self.console, targets)
        return section

    def run_scale(self) -> dict[str, Any]:
        began = time.perf_counter()
        spec, cached = self._prepare("scale")
        children = spec.children(len(ops.OPERATIONS) * self.args.scale_repeats)
        runs = self.args.runs or DEFAULT_RUNS["scale"]
        results = [
            self._one(
                "scale",
                "dbmaint",
                cached,
                run,
                children,
                lambda fleet, place, run: scale.run_once(
                    fleet,
                    place,
                    run,
                    self.args.scale_workers,
                    self.args.worker_slots,
                    self.args.scale_repeats,
                    self.args.timeout,
                ),
            )
            for run in range(1, runs + 1)
        ]
        best = next((r for r in results if r.ok), results[0] if results else None)
        targets = report.scale_targets(best)
        section = {
            "workload": _describe(spec, cached, children, runs),
            "runs_per_runner": runs,
            "runs": [r.to_json() for r in results],
            "targets": [t.to_json() for t in targets],
            "elapsed_seconds": round(time.perf_counter() - began, 1),
        }
        report.print_scale(self.console, section, best)
        report.print_targets(self.console, targets)
        return section


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 130))
    size = args.size or ("all" if not args.tier else None)
    sizes = ["small", "large", "scale"] if size == "all" else [size] if size else []
    chosen = list(tiers.TIERS) if args.tier and "all" in args.tier else list(dict.fromkeys(args.tier or []))
    began = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    description = machine()
    report.print_machine(console, description)
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="dbmaint-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, scratch, console)
    output: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started_at,
        "machine": description,
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "sizes": {},
        "tiers": {},
    }
    try:
        for name in sizes:
            output["sizes"][name] = bench.run_scale() if name == "scale" else bench.run_size(name)
        for name in chosen:
            output["tiers"][name] = bench.run_tier(tiers.TIERS[name])
    finally:
        if args.keep:
            console.print(f"scratch folder kept: {scratch}")
        elif args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    report.print_findings(console, bench.findings)
    output["log_findings"] = bench.findings
    output["elapsed_seconds"] = round(time.perf_counter() - began, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=1) + "\n")
    console.print(f"total {output['elapsed_seconds']:.1f}s; JSON: {args.out}")
    sections = [*output["sizes"].values(), *output["tiers"].values()]
    failed = [r for s in sections for r in s["runs"] if not r["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
