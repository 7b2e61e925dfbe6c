"""dbmaint schedule ... as a process against a real manager: the CLI and the ScheduleService agree."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import DBMAINT
from tests.support.processes import Cluster
from tests.support.targets import make_sqlite_target

pytestmark = pytest.mark.e2e


def dbmaint(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DBMAINT), "--manager", address, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC"},
    )


def test_the_schedule_commands_against_a_real_manager(fleet: Cluster, tmp_path: Path) -> None:
    demo = tmp_path / "demo.db"
    make_sqlite_target(demo, rows=2_000)
    fleet.start_manager()
    fleet.start_worker("cli-worker", {"demo": demo})
    address = fleet.address

    created = dbmaint(
        address,
        *("schedule", "create", "nightly", "--cron", "*/15 2 * * *", "--tz", "Europe/Berlin", "demo"),
        *("-o", "analyze", "--jitter", "1m", "--overlap", "buffer-one", "--catchup", "30m"),
        *(
            "--window-cron",
            "0 1 * * *",
            "--window-duration",
            "4h",
            "--cutoff",
            "30m",
            "--on-end",
            "analyze=finish",
        ),
    )
    again = dbmaint(address, "schedule", "create", "nightly", "--every", "1h", "demo")
    tolerated = dbmaint(address, "schedule", "create", "nightly", "--every", "1h", "demo", "--exist-ok")
    bad_zone = dbmaint(address, "schedule", "create", "x", "--cron", "@daily", "--tz", "Mars/Olympus", "demo")
    listed = dbmaint(address, "schedule", "list")
    paused = dbmaint(address, "schedule", "pause", "nightly", "--json")
    resumed = dbmaint(address, "schedule", "resume", "nightly", "--json")
    fired = dbmaint(address, "schedule", "run", "nightly", "--json")
    history = dbmaint(address, "schedule", "history", "nightly")
    parent_id = json.loads(fired.stdout)["parent"]["id"] if fired.returncode == 0 else "-"
    parent = dbmaint(address, "get", parent_id)
    by_hand = dbmaint(address, "create", "demo", "-o", "analyze")
    by_schedule = dbmaint(address, "list", "--schedule", "nightly", "--type", "parent", "--json")
    deleted = dbmaint(address, "schedule", "delete", "nightly")
    gone = dbmaint(address, "schedule", "get", "nightly")

    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(
        "created schedule nightly: cron */15 2 * * * (Europe/Berlin), "
        "every 15 minutes during 02:00-02:59; next fire "
    )
    assert again.returncode == 2
    assert again.stderr == "dbmaint: error: request rejected (ALREADY_EXISTS): schedule 'nightly' already exists\n"
    assert (tolerated.returncode, tolerated.stdout) == (0, "schedule nightly already exists; left as it is\n")
    assert bad_zone.returncode == 2 and "schedule.time_zone: unknown time zone 'Mars/Olympus'" in bad_zone.stderr
    assert listed.returncode == 0 and "every 15 minutes during 02:00-02:59" in listed.stdout
    assert "buffer-one" in listed.stdout
    assert json.loads(paused.stdout)["paused"] is True and "next_fire_time" not in json.loads(paused.stdout)
    resumed_schedule = json.loads(resumed.stdout)
    assert resumed_schedule.get("paused", False) is False and resumed_schedule["jitter"] == "60s"
    assert resumed_schedule["window"]["on_end"] == {"analyze": "WINDOW_END_FINISH"}
    assert fired.returncode == 0, fired.stderr
    assert json.loads(fired.stdout)["firing"]["outcome"] == "FIRING_OUTCOME_FIRED"
    assert history.returncode == 0 and parent_id in history.stdout and "fired" in history.stdout
    assert parent.returncode == 0, parent.stderr
    shown = {
        name: value.strip()
        for name, value in (line.split(maxsplit=1) for line in parent.stdout.splitlines() if line[:1].isalpha())
    }
    assert shown["schedule"] == "nightly"
    assert shown["scheduled"] == json.loads(fired.stdout)["firing"]["scheduled_time"][:19] + "Z"
    assert by_hand.returncode == 0, by_hand.stderr
    assert [job["id"] for job in json.loads(by_schedule.stdout)["jobs"]] == [parent_id], "not the one by hand"
    assert deleted.returncode == 0 and gone.returncode == 4
    assert gone.stderr == "dbmaint: error: schedule 'nightly' not found\n"
