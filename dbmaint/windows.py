"""What both services say about maintenance windows: the manager (which cancels at a window's end, belt and
braces) and the worker (which enforces the end by itself) must give a child the same error, whoever acts first."""

from __future__ import annotations

from datetime import UTC, datetime

# The error of a child whose one-off window closed (its start deadline passed) before it ever started.
WINDOW_ENDED_BEFORE_START = "maintenance window ended before it could start"


def window_ended(end: datetime) -> str:
    """The error of a child interrupted at its window's end (its policy there is CANCEL)."""
    return f"maintenance window ended at {end.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
