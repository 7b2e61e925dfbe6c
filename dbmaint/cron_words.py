"""A cron expression in words, for the CLI's schedule listings ("at 02:00 every day").

Readable for the common shapes: fixed times ("at 02:00 and 14:00"), steps of minutes within hours ("every 15
minutes during 02:00-02:59"), hourly steps ("every 6 hours on the hour"), and days of the week, of the month or of
a month ("Monday to Friday", "on day 1 of every month", "on 1 January"). Anything else (steps over days, L, W, #,
more than four times a day) is shown as the expression itself: a wrong sentence would be worse than the cron.

Times are wall-clock times in the schedule's zone (the CLI shows the zone next to them). ``CRON_ALIASES`` is the
one table of cron aliases: the manager's schedule rules take it from here (the CLI must not import the manager).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

CRON_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    }
)
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DAY_NUMBERS = {name[:3].lower(): number for number, name in enumerate(_DAYS)}
_MONTH_NUMBERS = {name[:3].lower(): number for number, name in enumerate(_MONTHS, start=1)}
_NO_NAMES: Mapping[str, int] = {}
# More fixed times than this a day read better as the expression.
_MAX_TIMES = 4


class _Exotic(Exception):
    """A field this module has no words for: describe() falls back to the expression."""


def _number(text: str, names: Mapping[str, int], low: int, high: int) -> int:
    value = int(text) if text.isdigit() else names.get(text.lower())
    if value is None or not low <= value <= high:
        raise _Exotic(text)
    return value


def _values(field: str, names: Mapping[str, int], low: int, high: int) -> list[int]:
    """The values of a list of numbers and ranges ("1,3,5", "1-5"); steps and wildcards are exotic here."""
    values: set[int] = set()
    for part in field.split(","):
        first, _, last = part.partition("-")
        start = _number(first, names, low, high)
        end = _number(last, names, low, high) if last else start
        if end < start:
            raise _Exotic(part)
        values.update(range(start, end + 1))
    return sorted(values)


def _step(field: str) -> int | None:
    """n for "*/n", 1 for "*", None for anything else."""
    if field == "*":
        return 1
    if field.startswith("*/") and field[2:].isdigit() and int(field[2:]) > 0:
        return int(field[2:])
    return None


def _join(items: Iterable[str]) -> str:
    words = list(items)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _is_contiguous(values: list[int]) -> bool:
    return values == list(range(values[0], values[-1] + 1))


def _hour_span(hour: str) -> str:
    hours = _values(hour, _NO_NAMES, 0, 23)
    if not _is_contiguous(hours):
        raise _Exotic(hour)
    return f"during {hours[0]:02d}:00-{hours[-1]:02d}:59"


def _every(step: int, unit: str) -> str:
    return f"every {unit}" if step == 1 else f"every {step} {unit}s"


def _minute_of_hour(minute: int) -> str:
    return "on the hour" if minute == 0 else f"at minute {minute}"


def _time_phrase(minute: str, hour: str) -> tuple[str, bool]:
    """The time of day in words, and whether it names fixed times ("at ...", which then wants a day phrase)."""
    minute_step = _step(minute)
    if minute_step is not None:
        every_minutes = _every(minute_step, "minute")
        return (every_minutes if hour == "*" else f"{every_minutes} {_hour_span(hour)}"), False
    minutes = _values(minute, _NO_NAMES, 0, 59)
    hour_step = _step(hour)
    if hour_step is not None:
        if len(minutes) != 1:
            raise _Exotic(minute)
        return f"{_every(hour_step, 'hour')} {_minute_of_hour(minutes[0])}", False
    hours = _values(hour, _NO_NAMES, 0, 23)
    if len(minutes) == 1 and len(hours) > _MAX_TIMES and "," not in hour:
        return f"every hour {_minute_of_hour(minutes[0])} {_hour_span(hour)}", False
    times = [f"{h:02d}:{m:02d}" for h in hours for m in minutes]
    if len(times) > _MAX_TIMES:
        raise _Exotic(f"{minute} {hour}")
    return f"at {_join(times)}", True


def _weekday_phrase(day_of_week: str) -> str:
    raw = _values(day_of_week, _DAY_NUMBERS, 0, 7)  # 0 and 7 are both Sunday
    if "-" in day_of_week and "," not in day_of_week and len(raw) > 1:
        return f"{_DAYS[raw[0] % 7]} to {_DAYS[raw[-1] % 7]}"
    return "on " + _join(_DAYS[day] for day in sorted({day % 7 for day in raw}))


def _month_day_phrase(day_of_month: str, month: str) -> str:
    if month == "*":
        days = _values(day_of_month, _NO_NAMES, 1, 31)
        label = "day" if len(days) == 1 else "days"
        return f"on {label} {_join(str(day) for day in days)} of every month"
    months = _values(month, _MONTH_NUMBERS, 1, 12)
    if day_of_month == "*":
        return "every day in " + _join(_MONTHS[m - 1] for m in months)
    days = _values(day_of_month, _NO_NAMES, 1, 31)
    if len(days) != 1 or len(months) != 1:
        raise _Exotic(f"{day_of_month} {month}")
    return f"on {days[0]} {_MONTHS[months[0] - 1]}"


def _day_phrase(day_of_month: str, month: str, day_of_week: str, fixed_times: bool) -> str:
    day_of_month = "*" if day_of_month == "?" else day_of_month
    day_of_week = "*" if day_of_week == "?" else day_of_week
    if day_of_month == month == day_of_week == "*":
        return "every day" if fixed_times else ""
    if day_of_month == month == "*":
        return _weekday_phrase(day_of_week)
    if day_of_week == "*":
        return _month_day_phrase(day_of_month, month)
    raise _Exotic(f"{day_of_month} {month} {day_of_week}")


def describe(cron: str) -> str:
    """The cron in words, or the expression itself (whitespace collapsed) when it has an unusual shape."""
    text = " ".join(cron.split())
    fields = CRON_ALIASES.get(text.lower(), text).split(" ")
    if len(fields) != 5:
        return text
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        time_of_day, fixed_times = _time_phrase(minute, hour)
        days = _day_phrase(day_of_month, month, day_of_week, fixed_times)
    except _Exotic:
        return text
    return f"{time_of_day} {days}" if days else time_of_day
