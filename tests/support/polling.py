"""Poll with a deadline instead of sleeping: the test waits as long as it must and no longer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Call ``probe`` until it returns something truthy and return that; fail with ``message`` at the deadline.
    Exceptions from the probe count as "not yet" and the last one is shown on failure."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as error:
            last_error = error
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            suffix = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"after {timeout:.1f}s: {text}{suffix}")
        time.sleep(interval)


def assert_eventually(predicate: Callable[[], bool], *, timeout: float = 20.0, message: str = "") -> None:
    wait_for(lambda: predicate() or None, timeout=timeout, message=message or "predicate stayed false")
