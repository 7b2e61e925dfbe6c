"""Schedule rules: when a schedule's slots are, which of them fire now, and what a firing does on overlap.

Pure: no I/O and no clock (every function takes ``now``); datetimes in and out are UTC-aware.

Slots:
* a schedule has exactly one of ``cron`` (5 fields, or an alias such as ``@daily``) and ``every`` (at least 1 s);
* ``every`` is absolute time: the slots are ``anchor + k * every`` for k >= 1 (anchor: start_at or creation time),
  so DST never moves them;
* cron times are wall-clock times in the schedule's zone (default UTC). DST rules (ours, pinned by the tests for
  Europe/Berlin and America/New_York on both change days):
  - a wall-clock time that does not exist (spring forward) fires once, at the first valid instant after the gap
    (``*/15 2 * * *`` fires once, at 03:00 local, on that day); slots that map to the same instant are one slot;
  - a wall-clock time that occurs twice (fall back) fires once, at its first occurrence (fold=0);
  - ``@hourly`` and every other alias follow the same two rules.

Why croniter, and on NAIVE times: croniter is maintained again and understands zoneinfo, but cron libraries
disagree on DST days (Debian-cron-style ones such as cronsim treat wildcard hours differently from fixed hours
there). We want one explicit rule for every expression, so croniter only walks naive wall-clock times and this
module maps each one to UTC with the two rules above.

Due slots (what the scheduler fires at ``now``):
* a slot is due when it is after the last recorded slot (or the anchor), within [start_at, end_at], and its
  jittered time ``slot + jitter_for(key, slot, jitter)`` has passed; slots become due in order (a later slot whose
  jitter is smaller waits for the earlier ones), so jitter never reorders firings;
* only the LATEST due slot may fire, and only if its jittered time is at most ``catchup`` old; every other due slot
  is missed. After downtime this gives one catch-up firing and one MISSED row (first slot + count); nothing older
  fires. The count is exact and cheap even for a 1-second schedule down for a week.

Overlap (the previous parent of the schedule still running):
* SKIP: record the slot as skipped; BUFFER_ONE: keep one slot to fire when the previous parent ends (a second
  one is skipped); CANCEL_OTHER: cancel the previous parent, then fire.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from dbmaint.cron_words import CRON_ALIASES


class ScheduleRuleError(ValueError):
    """A schedule (or window) the rules refuse; the message is shown to the client as INVALID_ARGUMENT."""


MIN_EVERY = timedelta(seconds=1)
DEFAULT_CRON_CATCHUP = timedelta(hours=1)


_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_CHARACTERS = re.compile(r"[0-9A-Za-z*/,?#-]+")
# Jenkins-style hashed ("H") and random ("R") fields depend on a seed croniter would invent: refused.
_SEEDED_FIELD = re.compile(r"(?:^|,)[HhRr](?:$|[/,(])")
# The smallest step of a datetime: "just before" an instant, for the half-open ranges below.
_TICK = timedelta(microseconds=1)
# A cron that matches some date does so within a few years (Feb 29 on a given weekday: at most 28).
_VALIDATION_START = datetime(2000, 1, 1)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the schedule rules take timezone-aware datetimes")
    return moment.astimezone(UTC)


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name`` ("" means UTC); an unknown name is a ScheduleRuleError."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a directory such as "Europe"
        raise ScheduleRuleError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from exc


def _check_cron_field(name: str, field: str, position: int) -> None:
    if not _FIELD_CHARACTERS.fullmatch(field):
        raise ScheduleRuleError(f"cron {name} field {field!r} has a character cron does not allow")
    if _SEEDED_FIELD.search(field):
        raise ScheduleRuleError(f"cron {name} field {field!r}: hashed (H) and random (R) fields are not supported")
    # The field alone, with wildcards elsewhere, so the error names the field that is wrong.
    probe = ["*"] * 5
    probe[position] = field
    try:
        croniter.expand(" ".join(probe))
    except CroniterError as exc:
        raise ScheduleRuleError(f"cron {name} field {field!r} is not valid: {exc}") from exc


def check_cron(expression: str) -> str:
    """The expression normalized (aliases expanded, whitespace collapsed); a ScheduleRuleError names a problem."""
    text = " ".join(expression.split())
    if not text:
        raise ScheduleRuleError("the cron expression is empty")
    if text.startswith("@"):
        expanded = CRON_ALIASES.get(text.lower())
        if expanded is None:
            raise ScheduleRuleError(f"unknown cron alias {text!r} (known: {', '.join(CRON_ALIASES)})")
        return expanded
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleRuleError(
            f"cron expression {text!r} has {len(fields)} fields; it needs 5 "
            "(minute hour day-of-month month day-of-week) or an alias such as @daily"
        )
    for position, (name, field) in enumerate(zip(_FIELD_NAMES, fields, strict=True)):
        _check_cron_field(name, field, position)
    try:
        croniter(text, _VALIDATION_START).get_next(datetime)
    except CroniterBadDateError as exc:
        raise ScheduleRuleError(f"cron expression {text!r} never matches a date") from exc
    except CroniterError as exc:
        raise ScheduleRuleError(f"cron expression {text!r} is not valid: {exc}") from exc
    return text


@dataclass(frozen=True, slots=True)
class Cadence:
    """When a schedule (or a recurring window) fires: exactly one of ``cron`` and ``every``."""

    cron: str | None  # normalized
    every: timedelta | None
    zone: ZoneInfo
    anchor: datetime  # UTC; ``every`` slots are anchor + k*every, k >= 1; cron slots are after it


def cadence(cron: str, every: timedelta | None, time_zone: str, anchor: datetime) -> Cadence:
    """A validated Cadence. A zero ``every`` counts as unset (a protobuf Duration's default)."""
    zone = zone_named(time_zone)
    has_cron = bool(cron.strip())
    has_every = every is not None and every != timedelta(0)
    if has_cron == has_every:
        raise ScheduleRuleError("a schedule needs exactly one of cron and every")
    if every is not None and has_every and every < MIN_EVERY:
        raise ScheduleRuleError(f"every must be at least {MIN_EVERY.total_seconds():g}s, not {every}")
    return Cadence(
        cron=check_cron(cron) if has_cron else None,
        every=every if has_every else None,
        zone=zone,
        anchor=_utc(anchor),
    )


# -- wall-clock times to instants


def _gap_end(naive: datetime, zone: ZoneInfo) -> datetime:
    """The first valid instant after the DST gap that swallows ``naive``: the moment the offset changes."""
    earlier, later = sorted(naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    new_offset = later.astimezone(zone).utcoffset()
    low, high = int(earlier.timestamp()), int(later.timestamp())
    # Invariant: the offset at `low` is the old one, at `high` the new one; transitions fall on whole seconds.
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == new_offset:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def local_to_utc(naive: datetime, zone: ZoneInfo) -> datetime:
    """The instant of a wall-clock time: its first occurrence, or the end of the gap it falls in."""
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    return _gap_end(naive, zone)


def _local_naive(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


# -- slots


def _cron_slots(cron: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    # The mapping naive -> UTC never decreases, and the wall-clock time of `after` maps to `after` or earlier, so
    # walking the naive times after it and dropping those that map to `after` or earlier (or to the previous
    # slot: a DST gap) gives every slot > after exactly once, ascending.
    walker = croniter(cron, _local_naive(after, zone))
    previous = after
    while True:
        try:
            naive = walker.get_next(datetime)
        except CroniterBadDateError:  # the expression never matches again
            return
        slot = local_to_utc(naive, zone)
        if slot > previous:
            previous = slot
            yield slot


def _first_every_index(c: Cadence, after: datetime) -> int:
    assert c.every is not None
    return max(1, (after - c.anchor) // c.every + 1)


def _every_slots(c: Cadence, after: datetime) -> Iterator[datetime]:
    assert c.every is not None
    index = _first_every_index(c, after)
    while True:
        yield c.anchor + index * c.every
        index += 1


def _slots(c: Cadence, after: datetime) -> Iterator[datetime]:
    if c.cron is not None:
        return _cron_slots(c.cron, c.zone, after)
    return _every_slots(c, after)


def slots_after(c: Cadence, after: datetime, until: datetime) -> Iterator[datetime]:
    """The slots s with after < s <= until, ascending (UTC)."""
    limit = _utc(until)
    for slot in _slots(c, _utc(after)):
        if slot > limit:
            return
        yield slot


def next_slot(c: Cadence, after: datetime) -> datetime:
    """The first slot > after (a ScheduleRuleError if the cron never matches again)."""
    for slot in _slots(c, _utc(after)):
        return slot
    raise ScheduleRuleError(f"cron expression {c.cron!r} never fires after {after.isoformat()}")


def interval_hint(c: Cadence) -> timedelta:
    """``every``, or the gap between the next two cron slots after the anchor (for defaults and limits)."""
    if c.every is not None:
        return c.every
    first = next_slot(c, c.anchor)
    return next_slot(c, first) - first


def default_catchup(c: Cadence) -> timedelta:
    """The catch-up window when the schedule sets none: the interval for ``every``, 1 hour for cron."""
    return c.every if c.every is not None else DEFAULT_CRON_CATCHUP


def jitter_for(schedule_key: str, slot: datetime, jitter: timedelta) -> timedelta:
    """The delay of one slot, in [0, jitter): the same key and slot always get the same delay."""
    if jitter <= timedelta(0):
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_key}|{_utc(slot).isoformat()}".encode()).digest()
    spread = jitter // _TICK
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % spread)


# -- counting slots over long ranges (a week of downtime of a 1-second schedule is not enumerated)


def _slots_per_matching_day(cron: str) -> int:
    minutes, hours = croniter.expand(cron)[0][:2]
    return (60 if minutes == ["*"] else len(minutes)) * (24 if hours == ["*"] else len(hours))


def _local_day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = local_to_utc(datetime.combine(day, time()), zone)
    end = local_to_utc(datetime.combine(day + timedelta(days=1), time()), zone)
    return start, end


def _is_quiet_day(start: datetime, end: datetime, zone: ZoneInfo) -> bool:
    """No DST change inside: every wall-clock time of the day exists once."""
    return end - start == timedelta(days=1) and start.astimezone(zone).utcoffset() == (
        (end - _TICK).astimezone(zone).utcoffset()
    )


def _count_cron_slots(c: Cadence, after: datetime, until: datetime) -> int:
    """The number of slots in (after, until]: whole quiet days by multiplication, the rest one by one."""
    assert c.cron is not None
    per_day = _slots_per_matching_day(c.cron)
    count = 0
    cursor = after
    while (slot := next(_slots(c, cursor), None)) is not None and slot <= until:
        day_start, day_end = _local_day_bounds(slot.astimezone(c.zone).date(), c.zone)
        if cursor < day_start and day_end - _TICK <= until and _is_quiet_day(day_start, day_end, c.zone):
            count += per_day
            cursor = day_end - _TICK
            continue
        stop = min(until, day_end - _TICK)
        count += sum(1 for _ in slots_after(c, cursor, stop))
        cursor = stop
    return count


def _latest_at_or_before(c: Cadence, moment: datetime, floor: datetime) -> datetime | None:
    """The last slot s with floor < s <= moment, if any."""
    if c.every is not None:
        index = (moment - c.anchor) // c.every
        slot = c.anchor + index * c.every
        return slot if index >= 1 and slot > floor else None
    span = timedelta(hours=1)
    while True:
        start = max(floor, moment - span)
        found = None
        for found in slots_after(c, start, moment):  # noqa: B007 - the loop keeps the last one
            pass
        if found is not None or start == floor:
            return found
        span *= 2


@dataclass(frozen=True, slots=True)
class _Span:
    first: datetime | None = None
    last: datetime | None = None
    count: int = 0

    def extended(self, slot: datetime) -> _Span:
        return _Span(self.first or slot, slot, self.count + 1)


def _span(c: Cadence, after: datetime, until: datetime) -> _Span:
    """The first and last slot in (after, until] and how many there are, without listing them."""
    if until <= after:
        return _Span()
    last = _latest_at_or_before(c, until, after)
    if last is None:
        return _Span()
    first = next_slot(c, after)
    if c.every is not None:
        count = (last - c.anchor) // c.every - _first_every_index(c, after) + 1
    else:
        count = _count_cron_slots(c, after, until)
    return _Span(first, last, count)


# -- what is due now


@dataclass(frozen=True, slots=True)
class Due:
    """What the scheduler does at ``now``.

    ``fire``: the ONE slot to fire now (the latest due slot, if within the catch-up window), or None.
    ``missed_first`` / ``missed_count``: every other due slot (all older than ``fire``), recorded as ONE MISSED
    row: the first of them and how many there are (None and 0 when nothing was missed).
    """

    fire: datetime | None
    missed_first: datetime | None
    missed_count: int


NOTHING_DUE = Due(fire=None, missed_first=None, missed_count=0)


def _due_lower_bound(c: Cadence, last_slot: datetime | None, start_at: datetime | None) -> datetime:
    """Slots after this one may be due: after the last recorded slot (or the anchor), and not before start_at."""
    lower = _utc(last_slot) if last_slot is not None else c.anchor
    if start_at is not None:
        lower = max(lower, _utc(start_at) - _TICK)
    return lower


def due(
    c: Cadence,
    key: str,
    last_slot: datetime | None,
    now: datetime,
    catchup: timedelta,
    jitter: timedelta,
    start_at: datetime | None,
    end_at: datetime | None,
) -> Due:
    """The slot to fire now and the slots missed (see the module docstring for the rules)."""
    now = _utc(now)
    lower = _due_lower_bound(c, last_slot, start_at)
    upper = now if end_at is None else min(now, _utc(end_at))
    # A slot this old is due whatever its jitter (jitter_for < jitter); younger ones are checked one by one.
    surely_due = max(lower, min(upper, now - max(jitter, timedelta(0))))
    span = _span(c, lower, surely_due)
    for slot in slots_after(c, surely_due, upper):
        if slot + jitter_for(key, slot, jitter) > now:
            break
        span = span.extended(slot)
    if span.last is None:
        return NOTHING_DUE
    if now - (span.last + jitter_for(key, span.last, jitter)) <= catchup:
        older = span.count - 1
        return Due(fire=span.last, missed_first=span.first if older else None, missed_count=older)
    return Due(fire=None, missed_first=span.first, missed_count=span.count)


# -- overlap


class OverlapPolicy(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    CANCEL_OTHER = "cancel_other"


class OverlapAction(StrEnum):
    FIRE = "fire"
    SKIP = "skip"
    BUFFER = "buffer"
    CANCEL_PREVIOUS_AND_FIRE = "cancel_previous_and_fire"


def on_overlap(policy: OverlapPolicy, previous_running: bool, already_buffered: bool) -> OverlapAction:
    """What a firing does given the schedule's previous parent (still running or not)."""
    if not previous_running:
        return OverlapAction.FIRE
    if policy is OverlapPolicy.CANCEL_OTHER:
        return OverlapAction.CANCEL_PREVIOUS_AND_FIRE
    if policy is OverlapPolicy.BUFFER_ONE and not already_buffered:
        return OverlapAction.BUFFER
    return OverlapAction.SKIP


# -- the DST table (pinned by the tests; `python -m manager_service.schedule_rules` prints it for the issue note)


def _hours(day: str, first: int, last: int) -> tuple[str, ...]:
    return tuple(f"{day}T{hour:02d}:00Z" for hour in range(first, last + 1))


# (zone, local day, cron, the UTC instants it fires at on that local day). Written by hand from the rules above:
# Berlin changes at 01:00 UTC on 2026-03-29 (02:00 -> 03:00) and 2026-10-25 (03:00 -> 02:00); New York at
# 07:00 UTC on 2026-03-08 (02:00 -> 03:00) and 06:00 UTC on 2026-11-01 (02:00 -> 01:00).
DST_EXPECTATIONS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("Europe/Berlin", "2026-03-29", "0 2 * * *", ("2026-03-29T01:00Z",)),
    ("Europe/Berlin", "2026-03-29", "30 2 * * *", ("2026-03-29T01:00Z",)),
    ("Europe/Berlin", "2026-03-29", "*/15 2 * * *", ("2026-03-29T01:00Z",)),
    ("Europe/Berlin", "2026-03-29", "30 1 * * *", ("2026-03-29T00:30Z",)),
    ("Europe/Berlin", "2026-03-29", "0 * * * *", ("2026-03-28T23:00Z", *_hours("2026-03-29", 0, 21))),
    ("Europe/Berlin", "2026-03-29", "@daily", ("2026-03-28T23:00Z",)),
    ("Europe/Berlin", "2026-10-25", "0 2 * * *", ("2026-10-25T00:00Z",)),
    ("Europe/Berlin", "2026-10-25", "30 2 * * *", ("2026-10-25T00:30Z",)),
    (
        "Europe/Berlin",
        "2026-10-25",
        "*/15 2 * * *",
        ("2026-10-25T00:00Z", "2026-10-25T00:15Z", "2026-10-25T00:30Z", "2026-10-25T00:45Z"),
    ),
    ("Europe/Berlin", "2026-10-25", "30 1 * * *", ("2026-10-24T23:30Z",)),
    (
        "Europe/Berlin",
        "2026-10-25",
        "0 * * * *",
        ("2026-10-24T22:00Z", "2026-10-24T23:00Z", "2026-10-25T00:00Z", *_hours("2026-10-25", 2, 22)),
    ),
    ("Europe/Berlin", "2026-10-25", "@daily", ("2026-10-24T22:00Z",)),
    ("America/New_York", "2026-03-08", "0 2 * * *", ("2026-03-08T07:00Z",)),
    ("America/New_York", "2026-03-08", "30 2 * * *", ("2026-03-08T07:00Z",)),
    ("America/New_York", "2026-03-08", "*/15 2 * * *", ("2026-03-08T07:00Z",)),
    ("America/New_York", "2026-03-08", "30 1 * * *", ("2026-03-08T06:30Z",)),
    ("America/New_York", "2026-03-08", "0 * * * *", (*_hours("2026-03-08", 5, 23), *_hours("2026-03-09", 0, 3))),
    ("America/New_York", "2026-03-08", "@daily", ("2026-03-08T05:00Z",)),
    ("America/New_York", "2026-11-01", "0 2 * * *", ("2026-11-01T07:00Z",)),
    ("America/New_York", "2026-11-01", "30 2 * * *", ("2026-11-01T07:30Z",)),
    (
        "America/New_York",
        "2026-11-01",
        "*/15 2 * * *",
        ("2026-11-01T07:00Z", "2026-11-01T07:15Z", "2026-11-01T07:30Z", "2026-11-01T07:45Z"),
    ),
    ("America/New_York", "2026-11-01", "30 1 * * *", ("2026-11-01T05:30Z",)),
    (
        "America/New_York",
        "2026-11-01",
        "*/30 * * * *",
        (
            "2026-11-01T04:00Z",
            "2026-11-01T04:30Z",
            "2026-11-01T05:00Z",
            "2026-11-01T05:30Z",
            *(f"2026-11-01T{hour:02d}:{minute:02d}Z" for hour in range(7, 24) for minute in (0, 30)),
            "2026-11-02T00:00Z",
            "2026-11-02T00:30Z",
            "2026-11-02T01:00Z",
            "2026-11-02T01:30Z",
            "2026-11-02T02:00Z",
            "2026-11-02T02:30Z",
            "2026-11-02T03:00Z",
            "2026-11-02T03:30Z",
            "2026-11-02T04:00Z",
            "2026-11-02T04:30Z",
        ),
    ),
    (
        "America/New_York",
        "2026-11-01",
        "0 * * * *",
        ("2026-11-01T04:00Z", "2026-11-01T05:00Z", *_hours("2026-11-01", 7, 23), *_hours("2026-11-02", 0, 4)),
    ),
    ("America/New_York", "2026-11-01", "@daily", ("2026-11-01T04:00Z",)),
    ("UTC", "2026-03-29", "0 2 * * *", ("2026-03-29T02:00Z",)),
    ("UTC", "2026-03-29", "30 2 * * *", ("2026-03-29T02:30Z",)),
    (
        "UTC",
        "2026-03-29",
        "*/15 2 * * *",
        ("2026-03-29T02:00Z", "2026-03-29T02:15Z", "2026-03-29T02:30Z", "2026-03-29T02:45Z"),
    ),
    ("UTC", "2026-03-29", "30 1 * * *", ("2026-03-29T01:30Z",)),
    ("UTC", "2026-03-29", "0 * * * *", _hours("2026-03-29", 0, 23)),
    ("UTC", "2026-03-29", "@daily", ("2026-03-29T00:00Z",)),
)


@dataclass(frozen=True, slots=True)
class DstRow:
    zone: str
    day: str
    cron: str
    expected: tuple[str, ...]
    actual: tuple[str, ...]


def _format_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def slots_on_local_day(cron: str, zone_name: str, day: date) -> tuple[datetime, ...]:
    """The UTC instants a cron fires at during one local day of a zone."""
    zone = zone_named(zone_name)
    day_start, day_end = _local_day_bounds(day, zone)
    c = cadence(cron, None, zone_name, day_start - timedelta(days=1))
    return tuple(slots_after(c, day_start - _TICK, day_end - _TICK))


def dst_table() -> list[DstRow]:
    """The DST rules at work: for each pinned (zone, day, cron), the expected and the actual UTC instants."""
    return [
        DstRow(
            zone,
            day,
            cron,
            expected,
            tuple(_format_instant(s) for s in slots_on_local_day(cron, zone, date.fromisoformat(day))),
        )
        for zone, day, cron, expected in DST_EXPECTATIONS
    ]


def _print_dst_table() -> None:
    print("| zone | day | cron | expected (UTC) | actual (UTC) | ok |")
    print("|---|---|---|---|---|---|")
    for row in dst_table():
        expected, actual = " ".join(row.expected), " ".join(row.actual)
        print(f"| {row.zone} | {row.day} | `{row.cron}` | {expected} | {actual} | {row.expected == row.actual} |")


if __name__ == "__main__":
    _print_dst_table()
