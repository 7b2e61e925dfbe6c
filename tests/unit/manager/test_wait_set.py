"""wait_set: a wait for an event that a cancellation always ends."""

from __future__ import annotations

import asyncio

import pytest

from manager_service.events import wait_set


async def test_a_wait_cancelled_just_as_its_event_is_set_ends_cancelled() -> None:
    # asyncio.wait_for (Python 3.11) returns here instead: a side task looping on it never ended, and the
    # manager's shutdown waited for it forever.
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_set(event, 10))
    await asyncio.sleep(0)
    event.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_wait_returns_when_its_event_is_set_or_its_time_is_up() -> None:
    event = asyncio.Event()
    await wait_set(event, 0.01)
    assert not event.is_set()
    event.set()
    await wait_set(event, None)
