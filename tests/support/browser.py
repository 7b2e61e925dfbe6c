"""A real browser for the console's tests: Debian's Chromium driven by Playwright, nothing downloaded.

``.ci/run`` installs Chromium with ``apt-get install chromium``; Playwright (pinned in pyproject's dev extras to a
version known to drive that Chromium) launches it by path, never its own browser build. In CI (``CI`` set) a
missing Chromium FAILS the browser tests; elsewhere they skip saying how to enable them. Screenshots go to
``SCREENSHOTS`` (kept as the run's artefacts; the README shows some).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DBMAINT_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("DBMAINT_TEST_ARTIFACTS", "test-artifacts")) / "screenshots"
# Root in a container has no user namespace for Chromium's sandbox; the tests open only the local console.
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


def chromium_version() -> str:
    """``chromium --version``'s answer, or why there is none."""
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM}"
    done = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() or done.stderr.strip()


def playwright_version() -> str:
    try:
        return importlib.metadata.version("playwright")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def require_chromium() -> str:
    """The Chromium path, once it and Playwright are there (fail in CI, skip elsewhere)."""
    missing = []
    if shutil.which(CHROMIUM) is None:
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    if playwright_version() == "not installed":
        missing.append("Playwright for Python (pip install -e '.[dev]')")
    if missing:
        reason = "the browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run them; .ci/run installs Chromium)", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
