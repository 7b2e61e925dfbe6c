"""``dbmaint demo`` end to end: the real manager and two real workers as processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from dbmaint.cli.demo import sqlite_stats
from tests.support.cli import DBMAINT


def run_demo(*args: str, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DBMAINT_")}
    env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [str(DBMAINT), "demo", "--rows", "4000", *args], capture_output=True, text=True, timeout=180, env=env
    )


@pytest.mark.e2e
def test_demo_runs_the_fleet_reclaims_space_and_cleans_up(tmp_path: Path) -> None:
    result = run_demo(tmpdir=tmp_path)

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    out = result.stdout
    assert "manager SERVING after" in out
    assert re.search(r"web console: http://127\.0\.0\.1:\d+/ ", out), "the demo prints its console's URL"
    assert "workers demo-worker-1, demo-worker-2 connected" in out
    assert re.search(r"parent \S+ completed in [\d.]+s: 8 succeeded, 0 failed, 0 cancelled", out)
    for target in ("alpha", "beta"):
        for operation in ("vacuum", "analyze", "reindex", "optimize"):
            assert re.search(rf"│ {target}\s+│ {operation}\s+│ completed\s+│ demo-worker-[12]\s+│ 1 ", out), out
        reclaimed = re.search(rf"  {target}: .* reclaimed .* \((\d+) bytes, ([\d.]+)%\)", out)
        assert reclaimed, out
        assert int(reclaimed.group(1)) > 100_000 and float(reclaimed.group(2)) > 30
    assert re.search(r"maintenance took [\d.]+s", out)
    assert "all processes exited cleanly" in out
    assert not list(tmp_path.glob("dbmaint-demo-*")), "the temporary workdir was not removed"


@pytest.mark.e2e
def test_demo_keeps_a_given_workdir_with_databases_and_logs(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"

    result = run_demo("--workdir", str(workdir), tmpdir=tmp_path)

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert f"workdir kept: {workdir}" in result.stdout
    assert {path.name for path in (workdir / "logs").iterdir()} == {
        "manager.log",
        "demo-worker-1.log",
        "demo-worker-2.log",
    }
    for target in ("alpha", "beta"):
        assert sqlite_stats(workdir / f"{target}.db").freelist_count == 0  # VACUUM gave the pages back


@pytest.mark.e2e
def test_demo_prints_its_web_console_url_and_with_stay_serves_it_until_ctrl_c(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DBMAINT_")}
    env["TMPDIR"] = str(tmp_path)
    demo = subprocess.Popen(
        [str(DBMAINT), "demo", "--rows", "2000", "--stay"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if "the fleet keeps running" in line:
                break
        url = re.search(r"web console: (http://127\.0\.0\.1:\d+/)", "".join(seen))
        assert url, "".join(seen)
        with urllib.request.urlopen(url.group(1), timeout=10) as page:
            assert page.status == 200 and "dbmaint" in page.read().decode()
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
        assert demo.returncode == 0, "".join(seen) + rest
        assert "all processes exited cleanly" in rest
    finally:
        if demo.poll() is None:
            demo.kill()
