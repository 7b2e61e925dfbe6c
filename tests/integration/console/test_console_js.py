"""static/console.js, run by Node against a minimal fake DOM (the browser tests drive it in Chromium): it listens
to /api/v1/events only on a parent page, batches changes (one timer per batch, applied in an animation frame),
updates the parent's status and its children's cells, reloads on a child it has no cell for, and reads the parent
again through the JSON API after a reset."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from manager_service.console.pages import STATIC_DIR

HARNESS = Path(__file__).with_name("console_js_harness.js")
NODE = shutil.which("node")


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    if NODE is None:
        pytest.skip("node is not installed")
    done = subprocess.run(
        [NODE, str(HARNESS), str(STATIC_DIR / "console.js")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_script_opens_the_event_stream_on_a_parent_page(run: dict[str, Any]) -> None:
    assert run["sources"] == ["/api/v1/events"]


def test_changes_wait_for_the_batch_and_then_update_the_parent_and_its_cells(run: dict[str, Any]) -> None:
    assert run["beforeFlush"]["c1"] == ["pending", "pending"]  # nothing drawn before the batch is due
    assert run["timersForFirstBatch"] == 1  # four events, one batch
    after = run["afterFlush"]
    assert after["c1"] == ["completed", "completed"]  # the latest of the child's two changes
    assert after["row1"] == "completed"
    assert after["c2"] == ["pending", "pending"]  # another parent's child changed nothing here
    assert after["parent"] == ["running", "running"]
    assert after["cancelRemoved"] == 0


def test_a_finished_parent_loses_its_cancel_button(run: dict[str, Any]) -> None:
    assert run["afterParentDone"]["parent"] == ["completed", "completed"]
    assert run["afterParentDone"]["cancelRemoved"] == 1


def test_an_unknown_child_reloads_the_page_and_a_reset_reads_the_parent_again(run: dict[str, Any]) -> None:
    assert run["reloadsAfterUnknownChild"] == 1
    assert run["fetches"] == ["/api/v1/jobs/P?children_page_size=5000"]
    assert run["afterReset"]["c2"] == ["failed", "failed"]
