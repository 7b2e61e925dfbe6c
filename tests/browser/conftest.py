"""The browser tier: one Chromium per test module, a fresh context (cookies, storage) per test. Not per session:
Playwright's sync API runs its own event loop in the main thread until it stops, and the async tests that follow
need that thread free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import LAUNCH_ARGS, chromium_version, playwright_version, require_chromium


def pytest_report_header() -> list[str]:
    return [f"browser tests: Playwright {playwright_version()}, {chromium_version()}"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = require_chromium()
    from playwright.sync_api import sync_playwright  # here: only the browser tier needs it

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=LAUNCH_ARGS)
        print(f"Playwright {playwright_version()} drives Chromium {launched.version}")
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()
