"""The benchmark suite end to end, tiny: ``python -m bench`` on 4 targets of 50 rows, one run of each runner
(direct P=1, P=2, dbmaint; no Celery, no scale), then the JSON's structure and the dbmaint run's outcome."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.scale import ChildTimes, assignment_latency

REPO_ROOT = Path(__file__).resolve().parents[3]
TARGETS, ROWS, OPERATIONS = 4, 50, 4


@pytest.mark.e2e
def test_tiny_benchmark_writes_the_expected_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    began = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--size",
            "small",
            "--targets",
            str(TARGETS),
            "--rows",
            str(ROWS),
            "--runs",
            "1",
            "--seed",
            "7",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - began
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert elapsed < 60, f"the smoke run took {elapsed:.1f}s"
    assert "targets from the issue" in completed.stdout

    data = json.loads(out.read_text())
    assert data["schema"] == "dbmaint-bench/1"
    assert {"cpu_model", "cores", "python", "sqlite", "date"} <= set(data["machine"])
    assert list(data["sizes"]) == ["small"]
    small = data["sizes"]["small"]
    children = TARGETS * OPERATIONS
    assert (
        small["workload"] | {"targets": TARGETS, "rows": ROWS, "seed": 7, "children": children}
        == small["workload"]
    )

    runs = {run["runner"]: run for run in small["runs"]}
    assert set(runs) == {"direct-p1", "direct-p2", "dbmaint"}
    for run in runs.values():
        assert run["ok"], run
        assert run["children"] == run["completed"] == children
        assert run["wall_seconds"] > 0
        assert run["cpu_ms_per_child"] > 0
        # The same work: every runner vacuumed the same restored files from the same size to the same size.
        assert run["vacuum_bytes_before"] == runs["dbmaint"]["vacuum_bytes_before"]
        assert run["vacuum_bytes_after"] == runs["dbmaint"]["vacuum_bytes_after"] < run["vacuum_bytes_before"]

    dbmaint = runs["dbmaint"]
    assert dbmaint["details"]["parent_status"] == "JOB_STATUS_COMPLETED"
    assert dbmaint["details"]["children_reported"] == children
    assert {"manager", "worker-1", "worker-2", "client"} <= set(dbmaint["cpu_seconds"])
    assert dbmaint["details"]["setup"]["workers"] == 2

    assert set(small["summary"]) == {"direct-p1", "direct-p2", "dbmaint"}
    assert small["summary"]["dbmaint"]["median_seconds"] == dbmaint["wall_seconds"]
    assert small["ratios"]["dbmaint/direct-p2"]["ratio_of_medians"] > 0
    assert small["ratios"]["dbmaint/celery"] is None
    assert [t["name"] for t in small["targets"]] == ["small: dbmaint / direct(P=2)", "small: dbmaint / Celery"]
    assert small["targets"][1]["met"] is None  # no Celery run: not measured


@pytest.mark.e2e
def test_tiny_tiers_write_their_figures_and_verdicts(tmp_path: Path) -> None:
    """The one-slot and scale tiers on 4 targets of 50 rows (scale: the four operations twice), one run each:
    every runner completes, the manager's dispatch-gap histogram is read, the scale tier's reads succeed, and
    every target has a verdict (whatever the timings)."""
    out = tmp_path / "tiers.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--tier",
            "one-slot",
            "--tier",
            "scale",
            "--targets",
            str(TARGETS),
            "--rows",
            str(ROWS),
            "--runs",
            "1",
            "--scale-repeats",
            "2",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    data = json.loads(out.read_text())
    assert data["sizes"] == {}
    assert list(data["tiers"]) == ["one-slot", "scale"]
    one_slot, scale = data["tiers"]["one-slot"], data["tiers"]["scale"]
    assert [r["runner"] for r in one_slot["runs"]] == ["direct-p2", "dbmaint"]
    assert all(r["ok"] for tier in (one_slot, scale) for r in tier["runs"])
    dbmaint = one_slot["runs"][1]["details"]
    assert dbmaint["setup"] == {"workers": 2, "slots": [1], "watcher": "job_only"}
    # One slot per worker, each target's next operation queued from the start: every assignment after the
    # first one per worker is paired with a result. It is observed unless the worker was idle for want of
    # runnable work, which happens only at the end, when the last target with queued work is the one the other
    # worker holds (its next operation waits for that result, not for the manager).
    pairs = TARGETS * OPERATIONS - 2
    assert pairs - (OPERATIONS - 1) <= dbmaint["dispatch_gap"]["count"] <= pairs
    assert one_slot["figures"]["gap_p50_ms"] is not None
    reads = scale["runs"][0]["details"]["parent_reads"]
    assert reads["cli_get_exit_code"] == 0 and reads["getjob_children"] == TARGETS * OPERATIONS * 2
    for tier in (one_slot, scale):
        assert tier["targets"] and all(t["met"] is not None for t in tier["targets"]), tier["targets"]


def test_assignment_latency_from_job_records() -> None:
    # One worker with one slot, two targets: a0 runs 0.0-1.0, b0 waits for the slot and starts at 1.1,
    # a1 waits for its target (a0, finished at 1.0) and for the slot (b0 finishes at 2.0), starts at 2.05.
    times = [
        ChildTimes("a", 0, "w", created=0.0, started=0.0, finished=1.0, received=0.004),
        ChildTimes("b", 0, "w", created=0.0, started=1.1, finished=2.0, received=1.103),
        ChildTimes("a", 1, "w", created=0.0, started=2.05, finished=3.0),
    ]
    latency = assignment_latency(times, {"w": 1})
    assert latency["target_ready"] == pytest.approx([0.0, 1.1, 1.05])
    assert latency["target_and_slot_ready"] == pytest.approx([0.0, 0.1, 0.05])
    assert latency["worker_log"] == pytest.approx([0.004, 0.103])


def test_the_floor_measures_each_piece_of_a_round_trip() -> None:
    """``python -m bench.floor`` with tiny sizes: every piece is measured and the floor is their sum."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.floor", "--runs", "1", "--targets", "2", "--rows", "20", "--trips", "20"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    figures = {
        line.split(":")[0]: float(line.split(":")[1].split("/")[1].strip().rstrip("msx "))
        for line in completed.stdout.splitlines()
        if ":" in line
    }
    pieces = ("SQL per operation, through the SQLite engine", "store turn, one result + one start (SQLite)")
    grpc_trip = "bare grpc.aio round trip between two processes"
    assert all(figures[name] > 0 for name in (*pieces, grpc_trip)), figures
    floor = figures["one-slot floor per child (engine + store + grpc)"]
    assert floor == pytest.approx(sum(figures[name] for name in (*pieces, grpc_trip)), abs=0.002)
