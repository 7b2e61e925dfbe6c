"""How schedules, their firings and maintenance windows look on a terminal.

Times are shown in the schedule's own zone (cron times are wall-clock times there) and in the local zone of
the machine running the CLI; the firing history shows slots in UTC, as the manager records them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.table import Table
from rich.text import Text

from dbmaint.cron_words import describe
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.wire import from_timestamp, operation_label

_OVERLAP_NAMES: dict[int, str] = {
    spb.OVERLAP_POLICY_UNSPECIFIED: "skip",  # the manager's default
    spb.OVERLAP_POLICY_SKIP: "skip",
    spb.OVERLAP_POLICY_BUFFER_ONE: "buffer-one",
    spb.OVERLAP_POLICY_CANCEL_OTHER: "cancel-other",
}
_OUTCOME_NAMES: dict[int, str] = {
    spb.FIRING_OUTCOME_FIRED: "fired",
    spb.FIRING_OUTCOME_SKIPPED_OVERLAP: "skipped (overlap)",
    spb.FIRING_OUTCOME_SKIPPED_PAUSED: "skipped (paused)",
    spb.FIRING_OUTCOME_MISSED: "missed",
    spb.FIRING_OUTCOME_OUTSIDE_RANGE: "outside range",
}
_OUTCOME_STYLES: dict[int, str] = {
    spb.FIRING_OUTCOME_FIRED: "green",
    spb.FIRING_OUTCOME_MISSED: "yellow",
}
_END_POLICY_NAMES: dict[int, str] = {pb.WINDOW_END_FINISH: "finish", pb.WINDOW_END_CANCEL: "cancel"}
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_duration(length: timedelta) -> str:
    """The shortest form the CLI also reads: "1h30m", "90s" is shown as "1m30s", zero as "0s"."""
    seconds = int(length.total_seconds())
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def overlap_name(value: int) -> str:
    return _OVERLAP_NAMES.get(value, str(value))


def outcome_name(value: int) -> str:
    return _OUTCOME_NAMES.get(value, str(value))


def zone_of(name: str) -> ZoneInfo:
    """The schedule's zone; UTC when empty or unknown to this machine's time zone database."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_zone(moment: datetime, zone: str) -> str:
    """``moment`` as wall-clock time in ``zone``: "2026-12-02 03:00 CET"."""
    return moment.astimezone(zone_of(zone)).strftime("%Y-%m-%d %H:%M %Z")


def in_local_time(moment: datetime) -> str:
    """``moment`` in the local zone of this machine (the TZ variable, else the system's)."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def utc_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def cadence_text(schedule: spb.Schedule) -> str:
    """ "cron 0 3 * * *" or "every 1h30m"."""
    if schedule.cron:
        return f"cron {schedule.cron}"
    return f"every {format_duration(schedule.every.ToTimedelta())}"


def cadence_words(schedule: spb.Schedule) -> str:
    if schedule.cron:
        return describe(schedule.cron)
    return f"every {format_duration(schedule.every.ToTimedelta())} (absolute time)"


def next_fire_texts(schedule: spb.Schedule) -> tuple[str, str]:
    """The next fire time in the schedule's zone and in local time; "-" when there is none (paused, ended)."""
    if not schedule.HasField("next_fire_time"):
        return "-", "-"
    moment = from_timestamp(schedule.next_fire_time)
    return in_zone(moment, schedule.time_zone), in_local_time(moment)


def window_text(window: pb.MaintenanceWindow) -> str:
    """One line: "2026-12-02T01:00:00Z → 2026-12-02T05:00:00Z" or "0 2 * * * (Europe/Berlin) for 4h", then
    the cutoff and the explicit end policies."""
    if window.cron:
        text = f"{window.cron} ({window.time_zone or 'UTC'}) for {format_duration(window.duration.ToTimedelta())}"
    else:
        text = f"{utc_text(from_timestamp(window.start))} → {utc_text(from_timestamp(window.end))}"
    if window.HasField("cutoff") and window.cutoff.ToTimedelta():
        text += f", no start in the last {format_duration(window.cutoff.ToTimedelta())}"
    if window.on_end:
        policies = ", ".join(
            f"{name}={_END_POLICY_NAMES.get(value, str(value))}" for name, value in sorted(window.on_end.items())
        )
        text += f", at its end: {policies}"
    return text


def _table(title: str | None = None) -> Table:
    return Table(title=title, title_justify="left", header_style="bold")


def schedules_table(schedules: list[spb.Schedule]) -> Table:
    table = _table()
    table.add_column("id", overflow="fold")
    table.add_column("cadence", no_wrap=True)
    table.add_column("zone", no_wrap=True)
    table.add_column("in words", overflow="fold")
    table.add_column("next fire (zone)", no_wrap=True)
    table.add_column("next fire (local)", no_wrap=True)
    for name in ("paused", "overlap"):
        table.add_column(name, no_wrap=True)
    table.add_column("last parent", overflow="fold")
    for schedule in schedules:
        in_its_zone, local = next_fire_texts(schedule)
        table.add_row(
            Text(schedule.id),
            Text(cadence_text(schedule)),
            Text(schedule.time_zone or "UTC"),
            Text(cadence_words(schedule)),
            in_its_zone,
            local,
            Text("paused", style="yellow") if schedule.paused else "no",
            overlap_name(schedule.overlap),
            Text(schedule.last_parent_id),
        )
    return table


def schedule_details(schedule: spb.Schedule) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    maintenance = schedule.maintenance
    in_its_zone, local = next_fire_texts(schedule)
    rows: list[tuple[str, str]] = [
        ("id", schedule.id),
        ("cadence", cadence_text(schedule)),
        ("in words", cadence_words(schedule)),
        ("zone", schedule.time_zone or "UTC"),
        ("targets", ", ".join(maintenance.targets)),
        ("operations", ", ".join(operation_label(op) for op in maintenance.operations) or "the default ones"),
        ("schemas", ", ".join(maintenance.schemas)),
        ("tables", ", ".join(maintenance.tables)),
        ("mode", mode_text(maintenance)),
        ("parallel", str(maintenance.parallel) if maintenance.parallel > 1 else ""),
        ("thresholds", thresholds_text(maintenance)),
        ("overlap", overlap_name(schedule.overlap)),
        ("catch-up", _duration_field(schedule, "catchup_window")),
        ("jitter", _duration_field(schedule, "jitter")),
        ("paused", "yes" if schedule.paused else "no"),
        ("start at", _time_field(schedule, "start_at")),
        ("end at", _time_field(schedule, "end_at")),
        ("window", window_text(schedule.window) if schedule.HasField("window") else ""),
        ("next fire", f"{in_its_zone} ({local} local)" if schedule.HasField("next_fire_time") else "-"),
        ("last parent", schedule.last_parent_id),
        ("created", _time_field(schedule, "created_at")),
        ("updated", _time_field(schedule, "updated_at")),
    ]
    for name, value in rows:
        if value:
            grid.add_row(name, Text(value))
    return grid


def mode_text(request: pb.CreateMaintenanceRequest) -> str:
    """ "plan" or "auto"; "" for MODE_ALL (unset or set), the mode every request had before modes."""
    if request.mode in (pb.MODE_UNSPECIFIED, pb.MODE_ALL):
        return ""
    return pb.Mode.Name(request.mode).removeprefix("MODE_").lower() if request.mode in pb.Mode.values() else "?"


def thresholds_text(request: pb.CreateMaintenanceRequest) -> str:
    """ "name=value, ..." in name order."""
    return ", ".join(f"{name}={value:g}" for name, value in sorted(request.thresholds.items()))


def _duration_field(schedule: spb.Schedule, field: str) -> str:
    return format_duration(getattr(schedule, field).ToTimedelta()) if schedule.HasField(field) else ""


def _time_field(schedule: spb.Schedule, field: str) -> str:
    return utc_text(from_timestamp(getattr(schedule, field))) if schedule.HasField(field) else ""


def firings_table(firings: list[spb.Firing]) -> Table:
    table = _table()
    table.add_column("slot (UTC)", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("missed", justify="right", no_wrap=True)
    table.add_column("parent", overflow="fold")
    table.add_column("reason", overflow="fold")
    for firing in firings:
        missed = firing.outcome == spb.FIRING_OUTCOME_MISSED
        table.add_row(
            utc_text(from_timestamp(firing.scheduled_time)),
            Text(outcome_name(firing.outcome), style=_OUTCOME_STYLES.get(firing.outcome, "dim")),
            str(firing.missed_count) if missed else "",
            Text(firing.parent_id),
            Text(firing.reason),
        )
    return table
