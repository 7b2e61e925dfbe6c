"""Fault injection for tests: make an operation's statement slow while it genuinely runs.

Set ``DBMAINT_FAULTS`` to a comma-separated list of entries::

    slow:<operation>=<seconds>     e.g.  slow:vacuum=5
    slow:*=<seconds>               every operation

``<operation>`` is an operation name (``vacuum``, ``analyze``, ``reindex``, ``optimize``); a named entry wins
over ``*``. Whitespace around entries is ignored; an empty variable means no faults. An invalid spec stops
the worker at start (exit code 2) rather than being silently ignored, and so does a spec without the opt-in
``DBMAINT_ALLOW_FAULT_INJECTION=1`` (or ``--allow-fault-injection``): a stray variable must not slow down a
production worker.

Each engine injects the delay where a cancel or a deadline stops it like real work, and notes it in the report:

* SQLite: while the operation's statement runs, the engine's progress handler is called on every VM
  instruction and sleeps ~10 ms per call until ``<seconds>`` after the statement began. For VACUUM, once the
  statement is 48 instructions in (it holds its write lock by then), that call sleeps the rest of the time in
  10 ms steps; other statements (``PRAGMA optimize`` can be as short as 6 instructions) do so on their first
  call. So the full time is always reached, the cancel token and deadline are checked between steps, and the
  statement is really in progress: interrupted by ``Connection.interrupt()`` or by the handler returning
  non-zero, exactly like a slow VACUUM on a big file.
* PostgreSQL: ``SELECT pg_sleep(<seconds>)`` on the maintenance connection before the first statement,
  stopped by the backend cancel like any statement.
* MariaDB/MySQL: ``SELECT SLEEP(<seconds>)`` on the work connection before the first table's statement,
  stopped by ``KILL QUERY``.

A worker whose plan is not empty says so in its Hello (``faults_active``): the manager logs a warning and
ListWorkers (``dbmaint workers``) shows it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from dbmaint.operations import Operation

ENV_FAULTS = "DBMAINT_FAULTS"
ANY_OPERATION = "*"


class FaultSpecError(ValueError):
    """``DBMAINT_FAULTS`` could not be parsed; the message names the bad entry."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults to inject: a minimum statement duration per operation name (or ``*``)."""

    slow: Mapping[str, float] = field(default_factory=dict)

    def slow_seconds(self, operation: Operation | str) -> float:
        """Minimum seconds the operation's statement must take; 0 when no fault applies."""
        name = str(operation)
        if name in self.slow:
            return self.slow[name]
        return self.slow.get(ANY_OPERATION, 0.0)

    @property
    def empty(self) -> bool:
        return not self.slow

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FaultPlan:
        return parse_faults(environ.get(ENV_FAULTS, ""))


NO_FAULTS = FaultPlan()


def parse_faults(spec: str) -> FaultPlan:
    """Parse ``slow:vacuum=5,slow:*=1``. Raises FaultSpecError naming the offending entry."""
    slow: dict[str, float] = {}
    known = {op.value for op in Operation} | {ANY_OPERATION}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        kind, colon, rest = entry.partition(":")
        if not colon or kind.strip() != "slow":
            raise FaultSpecError(f"{ENV_FAULTS}: unknown fault {entry!r} (expected slow:<operation>=<seconds>)")
        name, equals, seconds_text = rest.partition("=")
        name = name.strip().lower()
        if not equals:
            raise FaultSpecError(f"{ENV_FAULTS}: {entry!r} has no '=<seconds>'")
        if name not in known:
            raise FaultSpecError(
                f"{ENV_FAULTS}: unknown operation {name!r} in {entry!r} "
                f"(expected one of {', '.join(sorted(known))})"
            )
        try:
            seconds = float(seconds_text.strip())
        except ValueError:
            raise FaultSpecError(f"{ENV_FAULTS}: {entry!r}: {seconds_text.strip()!r} is not a number") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise FaultSpecError(f"{ENV_FAULTS}: {entry!r}: seconds must be a finite number >= 0")
        slow[name] = seconds
    return FaultPlan(slow=slow)
