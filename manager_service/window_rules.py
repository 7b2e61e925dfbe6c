"""Maintenance window rules: when a child may START, and what happens to a running one when the window ends.

Pure: no I/O and no clock (every function takes ``now``); datetimes in and out are UTC-aware.

* A window is one-off (``start`` and ``end``) or recurring (``cron``, ``duration`` and ``time_zone``: it opens at
  each cron time and stays open ``duration``). Recurring openings follow the schedules' cron and DST rules
  (``schedule_rules``): a wall-clock time that does not exist opens at the end of the gap, a repeated one at its
  first occurrence.
* An opening is open for ``opens <= now < closes``. A child may start inside it until ``closes - cutoff``
  (``last_start``); no new start at or after that. Once started, a child may run past it (see ``on_end``).
* A one-off window is closed for good from its ``last_start``: a child that never started is cancelled. A child of
  a recurring window waits for the next opening.
* ``on_end`` says what a running child does when its opening closes: CANCEL (interrupted) or FINISH (runs on).
  The defaults: CANCEL for vacuum, analyze and optimize; FINISH for reindex, because an interrupted REINDEX
  CONCURRENTLY leaves invalid indexes behind.
* Validation (ScheduleRuleError, shown as INVALID_ARGUMENT): exactly one kind; ``end > start``; a recurring
  ``duration`` of at least MIN_WINDOW and shorter than the shortest gap between two cron times (openings never
  overlap, except where a DST change brings two closer); ``0 <= cutoff <`` the window's length; ``on_end`` keys
  are operation names.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from dbmaint.operations import Operation
from manager_service.schedule_rules import (
    Cadence,
    ScheduleRuleError,
    check_cron,
    next_slot,
    slots_after,
    zone_named,
)


class EndPolicy(StrEnum):
    FINISH = "finish"
    CANCEL = "cancel"


DEFAULT_END_POLICY: Mapping[Operation, EndPolicy] = MappingProxyType(
    {
        Operation.VACUUM: EndPolicy.CANCEL,
        Operation.ANALYZE: EndPolicy.CANCEL,
        Operation.OPTIMIZE: EndPolicy.CANCEL,
        Operation.REINDEX: EndPolicy.FINISH,
    }
)

MIN_WINDOW = timedelta(minutes=1)

# Recurring openings are cron slots after this instant: long before any window anyone will create.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How many consecutive cron times are compared to find the shortest gap (a monthly cron: 40 years of them).
_GAPS_SAMPLED = 500


@dataclass(frozen=True, slots=True)
class Window:
    """A validated maintenance window; build it with ``window()``."""

    start: datetime | None  # one-off: both start and end ...
    end: datetime | None
    cron: str | None  # ... or recurring: cron and duration (normalized)
    duration: timedelta | None
    zone: ZoneInfo  # the zone of cron, and the zone waiting reasons are shown in
    cutoff: timedelta
    on_end: Mapping[Operation, EndPolicy]  # only the explicit entries

    @property
    def is_one_off(self) -> bool:
        return self.start is not None


@dataclass(frozen=True, slots=True)
class Opening:
    """One period of a window: children may start from ``opens`` until ``last_start``."""

    opens: datetime
    closes: datetime
    cutoff: timedelta = timedelta(0)

    @property
    def last_start(self) -> datetime:
        """No new start at or after this instant."""
        return self.closes - self.cutoff


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the window rules take timezone-aware datetimes")
    return moment.astimezone(UTC)


def _is_set(duration: timedelta | None) -> bool:
    # A protobuf Duration's default (zero) means "not given".
    return duration is not None and duration != timedelta(0)


def shortest_cron_gap(cron: str) -> timedelta:
    """The shortest time between two consecutive wall-clock times of a (valid) cron, over its next many times."""
    walker = croniter(cron, datetime(2026, 1, 1))
    times = [walker.get_next(datetime) for _ in range(_GAPS_SAMPLED)]
    return min(later - earlier for earlier, later in itertools.pairwise(times))


def _check_one_off(start: datetime, end: datetime | None) -> timedelta:
    if end is None:
        raise ScheduleRuleError("a one-off maintenance window needs both start and end")
    if end <= start:
        raise ScheduleRuleError(f"the maintenance window ends ({end.isoformat()}) before it starts")
    return end - start


def _check_recurring(cron: str, duration: timedelta | None) -> tuple[str, timedelta]:
    if not cron.strip() or duration is None:
        raise ScheduleRuleError("a recurring maintenance window needs both cron and duration")
    normalized = check_cron(cron)
    if duration < MIN_WINDOW:
        raise ScheduleRuleError(f"a recurring maintenance window lasts at least {MIN_WINDOW}, not {duration}")
    gap = shortest_cron_gap(normalized)
    if duration >= gap:
        raise ScheduleRuleError(
            f"the maintenance window lasts {duration}, which is not shorter than its cron's interval ({gap})"
        )
    return normalized, duration


def _check_on_end(on_end: Mapping[str, EndPolicy | str]) -> dict[Operation, EndPolicy]:
    checked: dict[Operation, EndPolicy] = {}
    for name, policy in on_end.items():
        try:
            operation = Operation(name)
        except ValueError:
            known = ", ".join(op.value for op in Operation)
            raise ScheduleRuleError(f"on_end names an unknown operation {name!r} (known: {known})") from None
        try:
            checked[operation] = EndPolicy(policy)
        except ValueError:
            raise ScheduleRuleError(f"on_end of {name}: unknown policy {policy!r} (finish or cancel)") from None
    return checked


def window(
    start: datetime | None,
    end: datetime | None,
    cron: str,
    duration: timedelta | None,
    time_zone: str,
    cutoff: timedelta,
    on_end: Mapping[str, EndPolicy | str],
) -> Window:
    """A validated Window (see the module docstring for the rules); a ScheduleRuleError names what is wrong."""
    zone = zone_named(time_zone)
    one_off = start is not None or end is not None
    recurring = bool(cron.strip()) or _is_set(duration)
    if one_off == recurring:
        raise ScheduleRuleError(
            "a maintenance window is either one-off (start, end) or recurring (cron, duration)"
        )
    if start is None and end is not None:
        raise ScheduleRuleError("a one-off maintenance window needs both start and end")
    normalized: str | None = None
    length: timedelta
    if start is not None:
        start, end = _utc(start), _utc(end) if end is not None else None
        length = _check_one_off(start, end)
    else:
        normalized, length = _check_recurring(cron, duration if _is_set(duration) else None)
    if not timedelta(0) <= cutoff < length:
        raise ScheduleRuleError(f"the cutoff ({cutoff}) must be at least 0 and shorter than the window ({length})")
    return Window(
        start=start,
        end=end,
        cron=normalized,
        duration=length if normalized is not None else None,
        zone=zone,
        cutoff=cutoff,
        on_end=_check_on_end(on_end),
    )


def end_policy(w: Window, operation: Operation) -> EndPolicy:
    """What a running child of this operation does when the window closes: the explicit entry or the default."""
    return w.on_end.get(operation, DEFAULT_END_POLICY[operation])


# -- openings


def _cadence(w: Window) -> Cadence:
    assert w.cron is not None
    return Cadence(cron=w.cron, every=None, zone=w.zone, anchor=_EPOCH)


def _opening_at(w: Window, opens: datetime) -> Opening:
    assert w.duration is not None
    return Opening(opens, opens + w.duration, w.cutoff)


def current_opening(w: Window, now: datetime) -> Opening | None:
    """The opening with opens <= now < closes, if any (the latest one, where a DST change makes two overlap)."""
    now = _utc(now)
    if w.start is not None and w.end is not None:
        return Opening(w.start, w.end, w.cutoff) if w.start <= now < w.end else None
    assert w.duration is not None
    latest = None
    for latest in slots_after(_cadence(w), now - w.duration, now):  # noqa: B007 - the loop keeps the last one
        pass
    return _opening_at(w, latest) if latest is not None else None


def next_opening(w: Window, now: datetime) -> Opening | None:
    """The first opening with opens > now (None: a one-off window that has opened, or a cron that never fires)."""
    now = _utc(now)
    if w.start is not None and w.end is not None:
        return Opening(w.start, w.end, w.cutoff) if w.start > now else None
    try:
        return _opening_at(w, next_slot(_cadence(w), now))
    except ScheduleRuleError:
        return None


def may_start(w: Window, now: datetime) -> bool:
    """Whether a child may start now: inside an opening and before its last_start."""
    opening = current_opening(w, now)
    return opening is not None and _utc(now) < opening.last_start


def closed_for_good(w: Window, now: datetime) -> bool:
    """A one-off window past its last_start: what never started never will."""
    return w.end is not None and _utc(now) >= w.end - w.cutoff


def wakeup_after(w: Window, now: datetime) -> datetime | None:
    """The next instant may_start or closed_for_good may change (None: never again)."""
    now = _utc(now)
    upcoming = next_opening(w, now)
    current = current_opening(w, now)
    if current is not None and now < current.last_start:
        if upcoming is not None:
            return min(current.last_start, upcoming.opens)
        return current.last_start
    if upcoming is not None:
        return upcoming.opens
    return None


def _shown(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return f"{local} {zone.key} ({moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')})"


def waiting_reason(w: Window, now: datetime) -> str:
    """Why a pending child of this window does not start now, in words ("" when it may start)."""
    if may_start(w, now):
        return ""
    if closed_for_good(w, now):
        assert w.end is not None
        return f"its maintenance window closed: no new start after {_shown(w.end - w.cutoff, w.zone)}"
    upcoming = next_opening(w, now)
    if upcoming is None:
        return "waiting for its maintenance window: it never opens again"
    return f"waiting for its maintenance window: opens {_shown(upcoming.opens, w.zone)}"


# -- JSON (the store keeps a window as JSON text)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _seconds(duration: timedelta | None) -> float | None:
    return duration.total_seconds() if duration is not None else None


def to_dict(w: Window) -> dict[str, Any]:
    """A JSON-safe dict of the window; ``from_dict`` reads it back."""
    return {
        "start": _iso(w.start),
        "end": _iso(w.end),
        "cron": w.cron,
        "duration_seconds": _seconds(w.duration),
        "time_zone": w.zone.key,
        "cutoff_seconds": w.cutoff.total_seconds(),
        "on_end": {operation.value: policy.value for operation, policy in w.on_end.items()},
    }


def _datetime_or_none(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def from_dict(data: Mapping[str, Any]) -> Window:
    """The window of a ``to_dict`` dict, validated again."""
    duration = data.get("duration_seconds")
    return window(
        start=_datetime_or_none(data.get("start")),
        end=_datetime_or_none(data.get("end")),
        cron=data.get("cron") or "",
        duration=timedelta(seconds=duration) if duration is not None else None,
        time_zone=data.get("time_zone") or "",
        cutoff=timedelta(seconds=data.get("cutoff_seconds") or 0),
        on_end=dict(data.get("on_end") or {}),
    )
