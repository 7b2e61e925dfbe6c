"""Results the manager may not have yet.

The rules:

* An outcome stays here until the manager has it: for a manager that acknowledges results (``Welcome.sends_acks``)
  that is its ``ResultAck`` (``acknowledge``); for an older one, the write returning (``remove``). A write that
  returned only means the bytes left this process: a link that dies right after loses them.
* An outcome is written at most once per stream: ``unsent(stream)`` is what ``stream`` has not carried yet, and
  ``mark_sent`` records the write. Every new stream carries all of them again, right after ``Hello`` (the manager
  applies each ``(job_id, attempt)`` at most once and acknowledges a duplicate too, so re-sending is safe).
* An acknowledgement for an attempt that is not here (already forgotten, another attempt) is ignored.

A stream is any object compared by identity; this module knows nothing of gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from worker_service.executor import Outcome, RunKey


class Outbox:
    """Undelivered outcomes in the order they were produced, keyed by attempt. Use on the event loop."""

    def __init__(self) -> None:
        self._items: dict[RunKey, Outcome] = {}
        # The stream each outcome was last written to (absent: not written to any stream yet).
        self._sent_on: dict[RunKey, object] = {}
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
        """Every outcome the manager may not have yet (written or not), oldest first: a snapshot."""
        return list(self._items.values())

    def unsent(self, stream: object) -> list[Outcome]:
        """The outcomes not yet written to ``stream``, oldest first: a snapshot."""
        return [o for key, o in self._items.items() if self._sent_on.get(key) is not stream]

    def mark_sent(self, keys: Iterable[RunKey], stream: object) -> None:
        """Record that ``stream`` carried these outcomes: they stay until acknowledged, but not re-sent on it."""
        for key in keys:
            if key in self._items:
                self._sent_on[key] = stream

    def remove(self, key: RunKey) -> bool:
        """Forget an outcome; False if it was not here."""
        if self._items.pop(key, None) is None:
            return False
        self._sent_on.pop(key, None)
        if not self._items:
            self._emptied.set()
        return True

    def acknowledge(self, keys: Iterable[RunKey]) -> list[RunKey]:
        """Forget the acknowledged outcomes; returns those that were here (unknown keys are ignored)."""
        return [key for key in keys if self.remove(key)]

    async def wait_unsent(self, stream: object) -> None:
        """Return once there is something ``stream`` has not carried (immediately if there already is)."""
        while not self.unsent(stream):
            self._changed.clear()
            await self._changed.wait()

    async def wait_empty(self, timeout: float | None) -> bool:
        """Wait until the manager has everything (written, or acknowledged when it sends acks); False on
        timeout."""
        try:
            await asyncio.wait_for(self._emptied.wait(), timeout)
        except TimeoutError:
            return False
        return True
