"""Exponential backoff with jitter for reconnecting to the manager: 0.1 s, 0.2 s, 0.4 s ... capped at 5 s, or at
1 s when several managers are configured (the worker moves to another address each time: one of them leads, so a
short wait finds it soon after a failover, and a refusing standby costs one round trip).

With several managers the backoff is paid once per round, not once per address (``RoundPacer``): after a
failure the worker tries the next address it has not tried since its last backoff at once (after
``NEXT_ADDRESS_PAUSE``), so a dead leader in the list does not double the wait for the standby taking over.

Each delay is the exponential base times a random factor in [1 - jitter, 1 + jitter], never above the cap, so
a fleet of workers that lost the same manager does not reconnect in lock-step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

INITIAL_DELAY = 0.1
MAX_DELAY = 5.0
ROTATION_MAX_DELAY = 1.0
# Between two addresses of one round: no backoff, only enough not to spin if every address fails at once.
NEXT_ADDRESS_PAUSE = 0.05


@dataclass(slots=True)
class Backoff:
    initial: float = INITIAL_DELAY
    cap: float = MAX_DELAY
    multiplier: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempts: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap:
            raise ValueError("need 0 < initial <= cap")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("need multiplier >= 1 and 0 <= jitter < 1")

    def base(self, attempt: int) -> float:
        """The delay before attempt ``attempt`` (0-based) without jitter."""
        return min(self.cap, self.initial * self.multiplier ** min(attempt, 64))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one attempt."""
        base = self.base(self.attempts)
        self.attempts += 1
        factor = self.rng.uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.cap, base * factor)

    def reset(self) -> None:
        self.attempts = 0


def for_managers(count: int) -> Backoff:
    """The reconnect backoff of a worker configured with ``count`` manager addresses."""
    return Backoff(cap=ROTATION_MAX_DELAY if count > 1 else MAX_DELAY)


@dataclass(slots=True)
class RoundPacer:
    """The wait before the next connect attempt: ``backoff``'s next delay when the next address was already tried
    since the last such delay (a round of the list is over, or there is one address), else NEXT_ADDRESS_PAUSE."""

    backoff: Backoff
    tried: set[str] = field(default_factory=set)

    def delay(self, failed: str, next_address: str) -> float:
        self.tried.add(failed)
        if next_address in self.tried:
            self.tried.clear()
            return self.backoff.next_delay()
        return NEXT_ADDRESS_PAUSE

    def connected(self) -> None:
        """A stream was opened: the next failure begins a new round (the backoff goes on growing until
        ``reset``, so a manager that takes streams only to drop them is not hammered)."""
        self.tried.clear()

    def reset(self) -> None:
        """A stream held long enough: start over, backoff and round."""
        self.tried.clear()
        self.backoff.reset()
