"""The real ``dbmaint`` entry point as a subprocess: one-line errors, exit codes, no traceback."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.cli import DBMAINT
from tests.support.fake_manager_for_cli import FakeManager


def dbmaint(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DBMAINT), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize(
    "command",
    [
        ["workers"],
        ["get", "some-id"],
        ["list"],
        ["cancel", "some-id"],
        ["create", "alpha", "--watch"],
        ["watch", "some-id"],
        ["health"],
        ["schedule", "list"],
        ["schedule", "create", "nightly", "--cron", "@daily", "alpha"],
        ["schedule", "run", "nightly"],
        ["schedule", "history", "nightly"],
    ],
)
def test_an_unreachable_manager_is_one_line_and_exit_3(command: list[str], closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"

    result = dbmaint("--manager", address, *command)

    assert result.returncode == 3
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dbmaint: error: cannot reach the dbmaint manager at {address}: ")
    assert "Connection refused" in lines[0]


def test_the_manager_address_comes_from_dbmaint_manager(closed_port: int) -> None:
    result = dbmaint("workers", env={"DBMAINT_MANAGER": f"127.0.0.1:{closed_port}"})

    assert result.returncode == 3
    assert f"cannot reach the dbmaint manager at 127.0.0.1:{closed_port}: " in result.stderr


def test_health_of_another_endpoint_names_it(closed_port: int) -> None:
    result = dbmaint("health", f"127.0.0.1:{closed_port}")

    assert result.returncode == 3
    assert result.stderr.startswith(
        f"dbmaint: error: cannot reach the health endpoint at 127.0.0.1:{closed_port}: "
    )


def test_an_unresolvable_host_is_unreachable_too() -> None:
    result = dbmaint("--manager", "no-such-host.invalid:50051", "workers")

    assert result.returncode == 3
    assert result.stderr.startswith(
        "dbmaint: error: cannot reach the dbmaint manager at no-such-host.invalid:50051: "
    )
    assert "Traceback" not in result.stderr


def test_server_errors_through_the_entry_point(fake: FakeManager) -> None:
    missing = dbmaint("--manager", fake.address, "get", "nope")
    rejected = dbmaint("--manager", fake.address, "create", "bad/name")
    served = dbmaint("--manager", fake.address, "health")

    assert (missing.returncode, missing.stderr) == (4, "dbmaint: error: job 'nope' not found\n")
    assert rejected.returncode == 2
    assert rejected.stderr.startswith("dbmaint: error: request rejected (INVALID_ARGUMENT): targets[0]: ")
    assert (served.returncode, served.stdout) == (0, "SERVING\n")


def test_bad_usage_exits_2_with_argparse_usage() -> None:
    result = dbmaint("create")

    assert result.returncode == 2
    assert "usage: dbmaint create" in result.stderr
    assert "Traceback" not in result.stderr
