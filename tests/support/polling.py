"""Poll with a deadline instead of sleeping: a test waits as long as it must and no longer.

One module for every tier: ``wait_for`` (blocking), ``eventually`` (asyncio; the predicate may be sync or
return an awaitable), ``within`` (an awaitable with a deadline) and ``run_async`` (a bounded coroutine
run from synchronous code).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> T:
    """Call ``probe`` until it returns something truthy and return that; fail with ``message`` at the deadline.
    Exceptions from the probe count as "not yet" and the last one is shown on failure."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            last_value = probe()
            if last_value:
                return last_value
        except Exception as error:
            last_error = error
        if time.monotonic() >= deadline:
            text = (message() if callable(message) else message) or f"{probe!r} stayed false"
            detail = f"last error: {last_error!r}" if last_error else f"last value: {last_value!r}"
            raise AssertionError(f"not true within {timeout:.1f}s: {text} ({detail})")
        time.sleep(interval)


assert_eventually = wait_for


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str = "",
) -> Any:
    """The asyncio twin of ``wait_for``: returns the first truthy value of ``predicate`` or fails."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {message or predicate!r} (last value {last!r})")
        await asyncio.sleep(interval)


async def within(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {timeout}s") from None


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a coroutine from synchronous code on a fresh event loop, bounded so a hang fails instead of blocking
    the suite. A test body is an ``async def`` test instead (pytest-asyncio, auto mode)."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())
