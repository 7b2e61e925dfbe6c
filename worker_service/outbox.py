"""Results waiting to be written to a stream.

An outcome stays here until a stream accepted it (``remove`` after the write returned). A stream that drops
leaves the rest here; the next stream re-sends all of them right after ``Hello`` (the manager applies each
``(job_id, attempt)`` at most once, so re-sending is safe).
"""

from __future__ import annotations

import asyncio

from worker_service.executor import Outcome, RunKey


class Outbox:
    """Undelivered outcomes in the order they were produced, keyed by attempt. Use on the event loop."""

    def __init__(self) -> None:
        self._items: dict[RunKey, Outcome] = {}
        self._changed = asyncio.Event()
        self._emptied = asyncio.Event()
        self._emptied.set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, outcome: Outcome) -> None:
        """Add (or replace: the first outcome of an attempt is kept) an outcome and wake the sender."""
        self._items.setdefault(outcome.key, outcome)
        self._emptied.clear()
        self._changed.set()

    def pending(self) -> list[Outcome]:
        """A snapshot, oldest first."""
        return list(self._items.values())

    def remove(self, key: RunKey) -> None:
        self._items.pop(key, None)
        if not self._items:
            self._emptied.set()

    async def wait_for_items(self) -> None:
        """Return once there is something to send (immediately if there already is)."""
        while not self._items:
            self._changed.clear()
            await self._changed.wait()

    async def wait_empty(self, timeout: float | None) -> bool:
        """Wait until everything was written; False on timeout."""
        try:
            await asyncio.wait_for(self._emptied.wait(), timeout)
        except TimeoutError:
            return False
        return True
