"""``dbmaint schedule ...`` and the maintenance-window options of ``dbmaint create``.

Input rules (checked before anything is sent; the manager validates the rest, such as cron expressions and zones):

* DURATION is one or more ``<number><unit>`` with the units d, h, m, s in that order: ``90s``, ``15m``, ``4h``,
  ``1d``, ``1h30m``;
* T is an RFC 3339 time with its offset: ``2026-12-02T02:00:00+01:00`` or ``2026-12-02T01:00:00Z``;
* a window is one-off (``--window-start`` and ``--window-end``) or recurring (``--window-cron`` and
  ``--window-duration``, read in ``--tz``), never both; ``--cutoff`` and ``--on-end`` need a window;
* ``--on-end OP=finish|cancel`` (repeatable) overrides the operation's default end policy.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from rich.console import Console
from rich.text import Text

from dbmaint.cli.client import EXIT_OK, EXIT_REJECTED, CliError, ManagerClient
from dbmaint.cli.modes import add_mode_options, apply_mode_options
from dbmaint.cli.render import print_json
from dbmaint.cli.render_schedules import (
    cadence_text,
    cadence_words,
    firings_table,
    next_fire_texts,
    outcome_name,
    schedule_details,
    schedules_table,
    utc_text,
)
from dbmaint.operations import Operation
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.wire import from_timestamp, operation_to_proto

Handler = Callable[[argparse.Namespace, Console], int]
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (86400, 3600, 60, 1)
OVERLAP_POLICIES = {
    "skip": spb.OVERLAP_POLICY_SKIP,
    "buffer-one": spb.OVERLAP_POLICY_BUFFER_ONE,
    "cancel-other": spb.OVERLAP_POLICY_CANCEL_OTHER,
}
END_POLICIES = {"finish": pb.WINDOW_END_FINISH, "cancel": pb.WINDOW_END_CANCEL}


# -- values ------------------------------------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """An argparse type: "90s", "15m", "4h", "1d", "1h30m" (units d, h, m, s, each at most once, in that order)."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 15m, 4h, 1d or 1h30m)")
    seconds = sum(int(count or 0) * size for count, size in zip(match.groups(), _UNIT_SECONDS, strict=True))
    return timedelta(seconds=seconds)


def parse_time(text: str) -> datetime:
    """An argparse type: an RFC 3339 time with its offset ("2026-12-02T01:00:00Z")."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"not an RFC 3339 time with an offset: {text!r} (use e.g. 2026-12-02T01:00:00Z)"
        )
    return moment


def parse_end_policy(text: str) -> tuple[str, pb.WindowEndPolicy]:
    """An argparse type: "OP=finish" or "OP=cancel" for one of the operations."""
    operation, _, policy = text.partition("=")
    operations = [op.value for op in Operation]
    if operation not in operations or policy not in END_POLICIES:
        raise argparse.ArgumentTypeError(f"not OP=finish|cancel: {text!r} (OP is one of {', '.join(operations)})")
    return operation, END_POLICIES[policy]


def proto_duration(length: timedelta) -> Duration:
    value = Duration()
    value.FromTimedelta(length)
    return value


# -- windows -----------------------------------------------------------------------------------------------------


def add_window_options(parser: argparse.ArgumentParser, *, with_zone: bool) -> None:
    """The window flags; ``with_zone``: also ``--tz`` (``schedule create`` has its own, shared with the window)."""
    group = parser.add_argument_group("maintenance window (when the children may start)")
    group.add_argument("--window-start", type=parse_time, metavar="T", help="one-off window: opens at T")
    group.add_argument("--window-end", type=parse_time, metavar="T", help="one-off window: closes at T")
    group.add_argument("--window-cron", metavar="EXPR", help="recurring window: opens at these cron times")
    group.add_argument(
        "--window-duration", type=parse_duration, metavar="DURATION", help="recurring window: stays open this long"
    )
    if with_zone:
        group.add_argument("--tz", default="", metavar="ZONE", help="IANA zone of --window-cron (default UTC)")
    group.add_argument(
        "--cutoff", type=parse_duration, metavar="DURATION", help="no new start this long before the window ends"
    )
    group.add_argument(
        "--on-end",
        type=parse_end_policy,
        action="append",
        default=[],
        metavar="OP=finish|cancel",
        help="what a running OP does when the window ends (default: cancel; finish for reindex); repeatable",
    )


def window_from_args(args: argparse.Namespace) -> pb.MaintenanceWindow | None:
    """The window the flags describe, None without any; a half-given or mixed window is rejected (exit 2)."""
    one_off = args.window_start is not None or args.window_end is not None
    recurring = args.window_cron is not None or args.window_duration is not None
    if one_off and recurring:
        raise CliError(
            "a window is one-off (--window-start/--window-end) or recurring (--window-cron), not both",
            EXIT_REJECTED,
        )
    if one_off and (args.window_start is None or args.window_end is None):
        raise CliError("a one-off window needs both --window-start and --window-end", EXIT_REJECTED)
    if recurring and (args.window_cron is None or args.window_duration is None):
        raise CliError("a recurring window needs both --window-cron and --window-duration", EXIT_REJECTED)
    if not one_off and not recurring:
        if args.cutoff is not None or args.on_end:
            raise CliError(
                "--cutoff and --on-end need a window (--window-start/--window-end or --window-cron)", EXIT_REJECTED
            )
        return None
    window = pb.MaintenanceWindow(on_end=dict(args.on_end))
    if one_off:
        window.start.FromDatetime(args.window_start)
        window.end.FromDatetime(args.window_end)
    else:
        window.cron = args.window_cron
        window.duration.CopyFrom(proto_duration(args.window_duration))
        window.time_zone = args.tz
    if args.cutoff is not None:
        window.cutoff.CopyFrom(proto_duration(args.cutoff))
    return window


def add_maintenance_options(parser: argparse.ArgumentParser) -> None:
    """TARGET..., -o, --schema, --table: what each firing maintains (as ``dbmaint create``)."""
    parser.add_argument("targets", nargs="+", metavar="TARGET", help="database names, as the workers know them")
    parser.add_argument(
        "--operation",
        "-o",
        action="append",
        choices=[op.value for op in Operation],
        help="run this operation (repeat, in order; default: vacuum, analyze, reindex)",
    )
    parser.add_argument(
        "--schema", dest="schemas", action="append", default=[], metavar="NAME", help="only tables of this schema"
    )
    parser.add_argument(
        "--table", dest="tables", action="append", default=[], metavar="[SCHEMA.]TABLE", help="only this table"
    )


def maintenance_from_args(args: argparse.Namespace) -> pb.CreateMaintenanceRequest:
    """What each firing creates (no request id: the manager refuses one, each firing has its own)."""
    request = pb.CreateMaintenanceRequest(
        targets=args.targets,
        operations=[operation_to_proto(Operation(name)) for name in args.operation or ()],
        schemas=args.schemas,
        tables=args.tables,
    )
    apply_mode_options(request, args)
    return request


# -- commands ----------------------------------------------------------------------------------------------------


def schedule_from_args(args: argparse.Namespace) -> spb.Schedule:
    schedule = spb.Schedule(
        id=args.id,
        cron=args.cron or "",
        time_zone=args.tz,
        maintenance=maintenance_from_args(args),
        overlap=OVERLAP_POLICIES[args.overlap] if args.overlap else spb.OVERLAP_POLICY_UNSPECIFIED,
        paused=args.paused,
    )
    durations = (("every", args.every), ("catchup_window", args.catchup), ("jitter", args.jitter))
    for field, length in durations:
        if length is not None:
            getattr(schedule, field).CopyFrom(proto_duration(length))
    for field, moment in (("start_at", args.start_at), ("end_at", args.end_at)):
        if moment is not None:
            getattr(schedule, field).FromDatetime(moment)
    window = window_from_args(args)
    if window is not None:
        schedule.window.CopyFrom(window)
    return schedule


def _next_fire_line(schedule: spb.Schedule) -> str:
    in_its_zone, local = next_fire_texts(schedule)
    if in_its_zone == "-":
        return "no next fire time (paused or past its end)"
    return f"next fire {in_its_zone} ({local} local)"


def _print(console: Console, message: Message, as_json: bool, line: str) -> None:
    if as_json:
        print_json(console, message)
    else:
        console.print(Text(line))


def cmd_schedule_create(args: argparse.Namespace, console: Console) -> int:
    request = schedule_from_args(args)
    with ManagerClient(args.manager, args.timeout) as client:
        try:
            schedule = client.create_schedule(request)
        except CliError as error:
            if not (args.exist_ok and error.status is grpc.StatusCode.ALREADY_EXISTS):
                raise
            schedule = client.get_schedule(args.id)
            _print(console, schedule, args.json, f"schedule {schedule.id} already exists; left as it is")
            return EXIT_OK
    line = (
        f"created schedule {schedule.id}: {cadence_text(schedule)} ({schedule.time_zone or 'UTC'}), "
        f"{cadence_words(schedule)}; {_next_fire_line(schedule)}"
    )
    _print(console, schedule, args.json, line)
    return EXIT_OK


def cmd_schedule_list(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        schedules = client.schedules()
    if args.json:
        print_json(console, spb.ListSchedulesResponse(schedules=schedules))
    elif schedules:
        console.print(schedules_table(schedules))
    else:
        console.print("no schedules")
    return EXIT_OK


def cmd_schedule_get(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        schedule = client.get_schedule(args.id)
    if args.json:
        print_json(console, schedule)
    else:
        console.print(schedule_details(schedule))
    return EXIT_OK


def _set_paused(args: argparse.Namespace, console: Console, paused: bool) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        schedule = client.update_schedule(spb.Schedule(id=args.id, paused=paused), ["paused"])
    if paused:
        line = f"paused schedule {schedule.id}: its slots are recorded as skipped until `dbmaint schedule resume`"
    else:
        line = f"resumed schedule {schedule.id}: {_next_fire_line(schedule)}"
    _print(console, schedule, args.json, line)
    return EXIT_OK


def cmd_schedule_pause(args: argparse.Namespace, console: Console) -> int:
    return _set_paused(args, console, paused=True)


def cmd_schedule_resume(args: argparse.Namespace, console: Console) -> int:
    return _set_paused(args, console, paused=False)


def cmd_schedule_delete(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        client.delete_schedule(args.id)
    console.print(Text(f"deleted schedule {args.id} (the parents it created stay)"))
    return EXIT_OK


def cmd_schedule_run(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        response = client.trigger_schedule(args.id)
    firing, parent = response.firing, response.parent
    line = (
        f"fired schedule {args.id} at {utc_text(from_timestamp(firing.scheduled_time))} "
        f"({outcome_name(firing.outcome)}): parent {parent.id} with {parent.progress.total} children"
    )
    _print(console, response, args.json, line)
    return EXIT_OK


def cmd_schedule_history(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        firings = client.firings(args.id)
    if args.json:
        print_json(console, spb.ListFiringsResponse(firings=firings))
    elif firings:
        console.print(firings_table(firings))
    else:
        console.print(Text(f"schedule {args.id} has not fired yet"))
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------------------------


def _add_create(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    create = add("create", cmd_schedule_create, "store a schedule: each firing creates one parent, like `create`")
    create.add_argument("id", metavar="ID", help="the schedule's name ([A-Za-z0-9][A-Za-z0-9_.-]{0,63})")
    cadence = create.add_mutually_exclusive_group(required=True)
    cron_help = "fire at these wall-clock times in --tz (5 fields, or @daily, @hourly...)"
    cadence.add_argument("--cron", metavar="EXPR", help=cron_help)
    cadence.add_argument(
        "--every", type=parse_duration, metavar="DURATION", help="fire every DURATION (absolute time)"
    )
    zone_help = "IANA zone of --cron and --window-cron (default UTC)"
    create.add_argument("--tz", default="", metavar="ZONE", help=zone_help)
    add_maintenance_options(create)
    add_mode_options(create, parallel_help="; the manager refuses more than 1 for a schedule for now")
    overlap_help = "what a firing does while the previous parent runs (default skip)"
    create.add_argument("--overlap", choices=sorted(OVERLAP_POLICIES), help=overlap_help)
    durations = (
        ("--catchup", "after downtime, the latest missed slot fires if it is at most this old"),
        ("--jitter", "delay each firing by up to this long (the same delay for the same slot)"),
    )
    for flag, help_text in durations:
        create.add_argument(flag, type=parse_duration, metavar="DURATION", help=help_text)
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.add_argument("--start-at", type=parse_time, metavar="T", help="no firing before T")
    create.add_argument("--end-at", type=parse_time, metavar="T", help="no firing after T")
    create.add_argument(
        "--exist-ok", action="store_true", help="if a schedule with this id exists, leave it as it is and exit 0"
    )
    add_window_options(create, with_zone=False)
    create.add_argument("--json", action="store_true", help="print the stored schedule as JSON")


def add_schedule_commands(schedule: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """The ``schedule`` subcommands under ``schedule``; ``common`` holds the connection options."""
    commands = schedule.add_subparsers(dest="schedule_command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def by_id(name: str, handler: Handler, help_text: str, *, json: bool = True) -> None:
        sub = add(name, handler, help_text)
        sub.add_argument("id", metavar="ID")
        if json:
            sub.add_argument("--json", action="store_true", help="print the response as JSON")

    _add_create(add)
    listing = add("list", cmd_schedule_list, "list every schedule with its next fire time")
    listing.add_argument("--json", action="store_true", help="print the schedules as JSON")
    by_id("get", cmd_schedule_get, "show one schedule")
    by_id("pause", cmd_schedule_pause, "pause a schedule: its slots are recorded as skipped, nothing fires")
    by_id("resume", cmd_schedule_resume, "resume a paused schedule")
    by_id("delete", cmd_schedule_delete, "delete a schedule (the parents it created stay)", json=False)
    by_id("run", cmd_schedule_run, "fire a schedule now, as an extra firing (also while paused)")
    by_id("history", cmd_schedule_history, "a schedule's firings, newest first: slot, outcome, parent, reason")
