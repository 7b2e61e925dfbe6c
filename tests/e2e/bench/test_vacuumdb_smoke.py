"""The vacuumdb comparison end to end, tiny: ``python -m bench.vacuumdb`` on 2 small tables, 1 run of each; it
runs both sides and prints a verdict (the timing itself is not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.e2e
def test_the_vacuumdb_bench_runs_both_sides_and_prints_a_verdict() -> None:
    argv = [sys.executable, "-m", "bench.vacuumdb", "--tables", "2", "--rows", "1000", "--runs", "1"]
    argv += ["--database", "dbmaint_bench_vacuumdb_smoke"]
    completed = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "run 1 vacuumdb: " in completed.stdout and "run 1 dbmaint: " in completed.stdout
    assert "ratio dbmaint / vacuumdb (medians): " in completed.stdout
    assert "-- verdict: MET" in completed.stdout or "-- verdict: NOT MET" in completed.stdout
