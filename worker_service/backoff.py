"""Exponential backoff with jitter for reconnecting to the manager: 0.1 s, 0.2 s, 0.4 s ... capped at 5 s, or at
1 s when several managers are configured (the worker moves to another address each time: one of them leads, so a
short wait finds it soon after a failover, and a refusing standby costs one round trip).

Each delay is the exponential base times a random factor in [1 - jitter, 1 + jitter], never above the cap, so
a fleet of workers that lost the same manager does not reconnect in lock-step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

INITIAL_DELAY = 0.1
MAX_DELAY = 5.0
ROTATION_MAX_DELAY = 1.0


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
