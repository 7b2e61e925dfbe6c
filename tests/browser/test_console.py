"""The web console in a real browser (Debian's Chromium, driven by Playwright), against a real manager process
with two real workers, tokens on: what an operator does with it, and what the page must never do (reload to
show a change, run an inline script, offer a read-only token a Cancel button). Each page is saved as a
screenshot (``test-artifacts/screenshots``), at 1280 px and at phone width."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbmaint.local import LocalFleet, ServiceProcess, clean_env, free_port
from tests.support.browser import screenshot_path
from tests.support.polling import wait_for
from tests.support.targets import make_sqlite_targets

CLIENT_TOKEN = "console-client-3f1c9a"
READONLY_TOKEN = "console-reader-8d2e47"
WORKER_TOKEN = "console-worker-61b0d5"
# Long enough to see each child running, short enough to see the parent end.
SLOW_VACUUM = "slow:vacuum=2"
PHONE = {"width": 390, "height": 844}


@dataclass
class Console:
    """A manager serving its console on ``url``, with two workers; ``cli`` runs the dbmaint CLI against it."""

    fleet: LocalFleet
    url: str
    workers: list[ServiceProcess]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "dbmaint.cli.main", *args, "--manager", self.fleet.address]
        env = clean_env({"DBMAINT_TOKEN": CLIENT_TOKEN})
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)

    def create(self, *targets: str) -> str:
        """A maintenance started from the CLI; the parent's id."""
        done = self.cli("create", *targets, "-o", "vacuum", "-o", "analyze", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return str(json.loads(done.stdout)["parent"]["id"])

    def api(self, path: str, token: str | None = CLIENT_TOKEN) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path.lstrip("/"))
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def status(self, job_id: str) -> str:
        return str(self.api(f"/api/v1/jobs/{job_id}")[1]["job"]["status"])

    def logs(self) -> str:
        return self.fleet.logs()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    targets = make_sqlite_targets(tmp_path / "targets", "orders", "billing", "events")
    port = free_port()
    fleet = LocalFleet(tmp_path / "fleet", manager_port=free_port())
    fleet.workdir.mkdir(parents=True, exist_ok=True)
    tokens = {
        "DBMAINT_CLIENT_TOKENS": CLIENT_TOKEN,
        "DBMAINT_READONLY_TOKENS": READONLY_TOKEN,
        "DBMAINT_WORKER_TOKENS": WORKER_TOKEN,
    }
    try:
        fleet.start_manager("--http-listen", f"127.0.0.1:{port}", "--heartbeat-interval", "0.5", env=tokens)
        workers = []
        for worker_id in ("w1", "w2"):
            argv = fleet.worker_argv(worker_id, targets={n: f"sqlite:///{p}" for n, p in targets.items()})
            env = {"DBMAINT_WORKER_TOKEN": WORKER_TOKEN, "DBMAINT_FAULTS": SLOW_VACUUM}
            env["DBMAINT_ALLOW_FAULT_INJECTION"] = "1"
            process = ServiceProcess(worker_id, argv, fleet.log_path(worker_id), clean_env(env))
            workers.append(fleet.launch(process))
        running = Console(fleet, f"http://127.0.0.1:{port}/", workers)
        wait_for(
            lambda: len(running.api("/api/v1/workers")[1].get("workers", [])) == 2,
            timeout=30,
            message=running.logs,
        )
        yield running
    finally:
        fleet.kill()


def log_in(page: Any, console: Console, token: str) -> None:
    page.goto(console.url)
    assert page.url.endswith("/login"), "the console asks for a token first"
    page.fill("input[type=password]", token)
    page.keyboard.press("Enter")
    page.wait_for_url(console.url)


def csp_violations(page: Any) -> list[str]:
    """Console messages of this page that report a Content-Security-Policy violation (collected as they come)."""
    found: list[str] = []

    def seen(message: Any) -> None:
        if "Content Security Policy" in message.text:
            found.append(message.text)

    page.on("console", seen)
    return found


def shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(screenshot_path(name)), full_page=True)


def test_without_a_token_the_console_asks_for_one_and_refuses_a_wrong_one(page: Any, console: Console) -> None:
    page.goto(console.url + "jobs")
    assert page.url.endswith("/login")
    assert page.locator("input[type=password]").count() == 1, "the token is typed in a password field"
    shoot(page, "login")
    page.fill("input[type=password]", "not-a-token")
    with page.expect_navigation() as answered:
        page.keyboard.press("Enter")
    assert answered.value is not None and answered.value.status == 401, "the console's own form is not refused"
    page.get_by_role("alert").wait_for()
    assert page.url.endswith("/login")
    status, body = console.api("/api/v1/jobs", token=None)
    assert (status, body["code"]) == (401, "UNAUTHENTICATED")


def test_a_maintenance_started_from_the_cli_goes_from_running_to_completed_on_the_page_without_a_reload(
    page: Any, console: Console
) -> None:
    violations = csp_violations(page)
    log_in(page, console, CLIENT_TOKEN)
    parent_id = console.create("orders", "billing", "events")
    page.goto(f"{console.url}jobs/{parent_id}")
    page.evaluate("window.dbmaintNotReloaded = true")
    page.wait_for_selector("#parent-status[data-status=running]", timeout=20_000)
    page.wait_for_selector("#grid td[data-status=running]", timeout=20_000)
    shoot(page, "parent-running")
    page.wait_for_selector("#parent-status[data-status=completed]", timeout=60_000)
    assert page.evaluate("window.dbmaintNotReloaded") is True, "the page changed without a reload"
    cells = page.locator("#grid td[data-child]")
    assert cells.count() == 6
    statuses = {cells.nth(i).get_attribute("data-status") for i in range(cells.count())}
    assert statuses == {"completed"}
    shoot(page, "parent-completed")
    assert console.status(parent_id) == "JOB_STATUS_COMPLETED"
    assert violations == []


def test_a_client_cancels_a_running_parent_from_its_page_after_confirming(page: Any, console: Console) -> None:
    log_in(page, console, CLIENT_TOKEN)
    parent_id = console.create("orders", "billing", "events")
    page.goto(f"{console.url}jobs/{parent_id}")
    page.wait_for_selector("#parent-status[data-status=running]", timeout=20_000)
    page.click("#cancel")
    shoot(page, "cancel-confirmation")
    assert console.status(parent_id) != "JOB_STATUS_CANCELLED", "nothing is cancelled before the confirmation"
    page.click("#confirm-cancel")
    page.wait_for_url(f"{console.url}jobs/{parent_id}")
    page.wait_for_selector("#parent-status[data-status=cancelled]", timeout=30_000)
    assert console.status(parent_id) == "JOB_STATUS_CANCELLED"


def test_a_read_only_token_sees_the_parent_but_no_cancel_button_and_cannot_cancel(
    page: Any, console: Console
) -> None:
    parent_id = console.create("orders", "billing", "events")
    log_in(page, console, READONLY_TOKEN)
    page.goto(f"{console.url}jobs/{parent_id}")
    page.wait_for_selector("#grid td[data-child]")
    assert page.locator("#grid td[data-child]").count() == 6
    assert page.locator("#cancel").count() == 0
    shoot(page, "parent-read-only")
    refused = page.request.post(
        f"{console.url}api/v1/jobs/{parent_id}/cancel",
        headers={"X-CSRF-Token": page.get_attribute("meta[name=csrf-token]", "content") or ""},
    )
    assert refused.status == 403
    assert console.status(parent_id) != "JOB_STATUS_CANCELLED"


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_every_page_renders_without_a_policy_violation_and_is_saved(
    page: Any, console: Console, width: str
) -> None:
    if width == "phone":
        page.set_viewport_size(PHONE)
    violations = csp_violations(page)
    log_in(page, console, CLIENT_TOKEN)
    parent_id = console.create("orders", "billing")
    for name, path in [
        ("overview", ""),
        ("jobs", "jobs"),
        ("parent", f"jobs/{parent_id}"),
        ("workers", "workers"),
        ("schedules", "schedules"),
    ]:
        answer = page.goto(console.url + path)
        assert answer is not None and answer.status == 200, f"{path}: {answer.status if answer else 'no answer'}"
        assert page.locator("nav").count() >= 1, f"{name}: every page has the navigation"
        shoot(page, f"{name}-{width}")
    assert violations == []
