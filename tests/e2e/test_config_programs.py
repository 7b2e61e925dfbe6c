"""The three programs, run as processes: a bad setting is `<program>: error: ...` and exit 2 in each, and
--print-config shows every setting and its source, secrets masked, without starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MANAGER = (sys.executable, "-m", "manager_service")
WORKER = (sys.executable, "-m", "worker_service")
CLI = (sys.executable, "-m", "dbmaint.cli.main")
TARGET = ("--target", "a=sqlite:///a.db")


def run(
    command: tuple[str, ...], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the program with no DBMAINT_* setting from this environment, only those of ``env``."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DBMAINT_")}
    return subprocess.run(
        [*command, *args], env=clean | (env or {}), capture_output=True, text=True, timeout=60, check=False
    )


# The program as it names itself in its error line -> the command that runs it.
COMMANDS = {
    "dbmaint-manager": MANAGER,
    "dbmaint-manager migrate": (*MANAGER, "migrate"),
    "dbmaint-worker": (*WORKER, *TARGET),
    "dbmaint": CLI,
}
NO_FILE = "/no/such/file"


@pytest.mark.parametrize(
    ("program", "args", "env", "expected"),
    [
        ("dbmaint-manager", ["--lease-timeout", "soon"], {}, "--lease-timeout: expected a number"),
        ("dbmaint-manager", [], {"DBMAINT_MAX_WORKERS": "0"}, "DBMAINT_MAX_WORKERS: must be at least 1"),
        (
            "dbmaint-manager",
            [],
            {"DBMAINT_CLIENT_TOKENS_FILE": NO_FILE},
            "DBMAINT_CLIENT_TOKENS_FILE: cannot read",
        ),
        ("dbmaint-manager migrate", [], {"DBMAINT_LOG_LEVEL": "loud"}, "DBMAINT_LOG_LEVEL: unknown log level"),
        ("dbmaint-worker", ["--slots", "0"], {}, "--slots: must be at least 1"),
        ("dbmaint-worker", [], {"DBMAINT_LOG_FORMAT": "xml"}, "DBMAINT_LOG_FORMAT: unknown log format"),
        ("dbmaint-worker", [], {"DBMAINT_WORKER_TOKEN_FILE": NO_FILE}, "DBMAINT_WORKER_TOKEN_FILE: cannot read"),
        ("dbmaint-worker", [], {"DBMAINT_FAULTS": "slow:vacuum=1"}, "DBMAINT_FAULTS is set"),
        ("dbmaint", ["--manager", "nohost", "list"], {}, "--manager: expected HOST:PORT"),
        ("dbmaint", ["list"], {"DBMAINT_MANAGER": "h:99999"}, "DBMAINT_MANAGER: port 99999 is out of range"),
        ("dbmaint", ["list"], {"DBMAINT_TOKEN_FILE": NO_FILE}, "DBMAINT_TOKEN_FILE: cannot read"),
    ],
)
def test_a_bad_setting_is_one_error_line_and_exit_2_in_every_program(
    program: str, args: list[str], env: dict[str, str], expected: str
) -> None:
    result = run(COMMANDS[program], *args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{program}: error: {expected}"), result.stderr
    assert "Traceback" not in result.stderr


def test_manager_print_config_masks_secrets_and_starts_nothing(tmp_path: Path) -> None:
    tokens = tmp_path / "worker-tokens"
    tokens.write_text("w-secret-1\n")
    store = tmp_path / "store.db"
    result = run(
        MANAGER,
        "--print-config",
        "--listen",
        "127.0.0.1:0",
        env={
            "DBMAINT_DATABASE_URL": f"sqlite:///{store}",
            "DBMAINT_CLIENT_TOKENS": "c-secret-1,c-secret-2",
            "DBMAINT_WORKER_TOKENS_FILE": str(tokens),
            "DBMAINT_LOG_LEVEL": "debug",
        },
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split(" = ")[0].strip(): line.split(" = ")[1] for line in result.stdout.splitlines()}
    assert lines["listen"] == "127.0.0.1:0  (flag --listen)"
    assert lines["log_level"] == "DEBUG  (variable DBMAINT_LOG_LEVEL)"
    assert lines["lease_timeout"] == "30  (default)"
    assert lines["client_tokens"] == "***  (variable DBMAINT_CLIENT_TOKENS)"
    assert lines["worker_tokens"] == "***  (file DBMAINT_WORKER_TOKENS_FILE)"
    assert "secret" not in result.stdout + result.stderr
    assert not store.exists(), "--print-config must not open the job store"


def test_manager_print_config_masks_the_password_of_the_database_url() -> None:
    url = "postgresql+psycopg://dbmaint:pg-s3cret@db.invalid:5432/jobs"
    result = run(MANAGER, "--print-config", env={"DBMAINT_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert "database_url" in result.stdout and "dbmaint:***@db.invalid:5432/jobs" in result.stdout
    assert "pg-s3cret" not in result.stdout


def test_worker_print_config_masks_secrets_and_starts_nothing() -> None:
    result = run(
        WORKER,
        "--print-config",
        "--target",
        "orders=postgresql+psycopg://app:t-s3cret@db.invalid/orders",
        "--manager",
        "127.0.0.1:9",
        env={"DBMAINT_WORKER_TOKEN": "w-s3cret", "DBMAINT_SLOTS": "2"},
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split(" = ")[0].strip(): line.split(" = ")[1] for line in result.stdout.splitlines()}
    assert lines["targets"] == "orders=postgresql+psycopg://app:***@db.invalid/orders  (flag --target)"
    assert lines["token"] == "***  (variable DBMAINT_WORKER_TOKEN)"
    assert lines["slots"] == "2  (variable DBMAINT_SLOTS)"
    assert lines["allow_fault_injection"] == "off  (default)"
    assert "s3cret" not in result.stdout + result.stderr
    assert result.stderr == "", "nothing starts, so nothing logs"
