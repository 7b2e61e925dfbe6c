"""``dbmaint``: the command-line client of the dbmaint manager.

Exit codes: 0 success; 1 the job did not complete (or the health status is not SERVING); 2 bad usage or a
request the manager rejected; 3 the manager (or health endpoint) cannot be reached; 4 no such job or schedule; 5
any other failure (a server error, a file that cannot be written, a demo process that died); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from rich.console import Console
from rich.text import Text

from dbmaint import __version__, parsers
from dbmaint.cli.client import (
    DEFAULT_TIMEOUT,
    EXIT_INTERRUPTED,
    EXIT_NOT_COMPLETED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    MANAGER,
    CliError,
    ManagerClient,
    health_status,
)
from dbmaint.cli.demo import DEFAULT_ROWS, DEMO_TABLE, describe_demo_db, make_demo_db, run_demo
from dbmaint.cli.modes import (
    add_mode_options,
    apply_mode_options,
    new_request_id,
    observes_tables,
    with_retry_hint,
)
from dbmaint.cli.plan import add_plan_command
from dbmaint.cli.render import (
    child_line,
    children_header,
    children_table,
    job_details,
    jobs_table,
    make_console,
    print_json,
    print_outcome,
    result_details,
    short_type,
    watch_view,
    workers_table,
)
from dbmaint.cli.render_tables import table_reports_table
from dbmaint.cli.schedules import add_schedule_commands, add_window_options, window_from_args
from dbmaint.cli.watch import NOT_COMPLETED, follow, is_parent
from dbmaint.config import MANAGER_ADDRESS, ConfigError, add_flags, report, resolve
from dbmaint.operations import CHILD_JOB_TYPE, JOB_TYPES, PARENT_JOB_TYPE, JobStatus, Operation
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.wire import operation_to_proto, status_from_proto, status_label, status_to_proto

Handler = Callable[[argparse.Namespace, Console], int]
# What `dbmaint get PARENT` shows by default: the children that did not complete, a screenful (a rich table row
# costs 1-2 ms to render: a page of 50 keeps the command, process start included, well under a second).
GET_PAGE_SIZE = 50
N = TypeVar("N", int, float)
_TYPE_ALIASES = {"parent": PARENT_JOB_TYPE, "child": CHILD_JOB_TYPE} | {name: name for name in JOB_TYPES}


def _ranged(kind: Callable[[str], N], low: N, high: N | None = None) -> Callable[[str], N]:
    """An argparse type: ``kind(text)`` within [low, high]."""

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or (high is not None and value > high):
            within = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {within}: {text!r}")
        return value

    return parse


def watch_until_terminal(client: ManagerClient, job_id: str, console: Console) -> int:
    """The live view, then the results table and a summary; 0 iff the job ended COMPLETED."""
    try:
        state = follow(client, job_id, watch_view(console))
    except KeyboardInterrupt:
        raise CliError(
            f"stopped watching; the job goes on (`dbmaint watch {job_id}` to follow it again, "
            f"`dbmaint cancel {job_id}` to stop it)",
            EXIT_INTERRUPTED,
        ) from None
    print_outcome(console, state)
    _print_table_reports(client, state.job, console)
    return EXIT_OK if state.completed else EXIT_NOT_COMPLETED


def _print_table_reports(client: ManagerClient, job: pb.Job, console: Console) -> None:
    """After a watch: a child's per-table reports (the stream leaves them out: one GetJob reads them); for a
    parent that observed its tables, where to read them (one GetJob per child would not scale)."""
    if is_parent(job):
        if observes_tables(job):
            console.print(Text("per-table reports of a child: `dbmaint get CHILD_ID`", style="dim"))
        return
    try:
        reports = client.get(job.id).job.result.tables
    except CliError as error:  # the outcome is known and printed: the exit code stays the job's
        console.print(Text(f"per-table reports not shown: {error.message}", style="yellow"))
        return
    if reports:
        console.print(table_reports_table(reports))


# -- commands ---------------------------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace, console: Console) -> int:
    operations = [operation_to_proto(Operation(name)) for name in args.operation or ()]
    request = pb.CreateMaintenanceRequest(
        targets=args.targets,
        operations=operations,
        # Always a key: the same request sent again after a lost answer finds its parent, never makes a second.
        request_id=args.request_id or new_request_id(),
        schemas=args.schemas,
        tables=args.tables,
    )
    apply_mode_options(request, args)
    window = window_from_args(args)
    if window is not None:
        request.window.CopyFrom(window)
    with ManagerClient(args.manager, args.timeout) as client:
        try:
            response = client.create(request)
        except CliError as error:
            raise with_retry_hint(error, request.request_id) from None
        if args.json:
            print_json(console, response)
            return EXIT_OK
        parent = response.parent
        if response.created:
            console.print(Text(f"created parent {parent.id} with {parent.progress.total} children"))
        else:
            console.print(
                Text(
                    f"request id {parent.request_id} matches existing parent {parent.id} "
                    f"({status_label(parent.status)}); nothing new was created"
                )
            )
        if not args.watch:
            console.print(children_table(list(response.children)))
            if response.next_children_page_token:
                console.print(
                    Text(
                        f"the first {len(response.children)} of {parent.progress.total} children: "
                        f"`dbmaint get {parent.id} --children` lists every child"
                    )
                )
            return EXIT_OK
        return watch_until_terminal(client, parent.id, console)


def cmd_get(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        if args.children:
            return _print_every_child(client, args.id, console, args.json)
        if args.json:
            print_json(console, client.get(args.id))
            return EXIT_OK
        response = client.get(args.id, page_size=GET_PAGE_SIZE, statuses=NOT_COMPLETED)
    job = response.job
    _print_job(console, job)
    if is_parent(job):
        if response.children:
            console.print(children_table(list(response.children), title="children not completed"))
        _print_hidden_children(console, job, len(response.children), bool(response.next_children_page_token))
    return EXIT_OK


def _print_job(console: Console, job: pb.Job) -> None:
    console.print(job_details(job))
    if not is_parent(job) and job.HasField("result"):
        console.print(Text("result", style="bold underline"))
        console.print(result_details(job.result))


def _print_hidden_children(console: Console, parent: pb.Job, shown: int, more: bool) -> None:
    """The line under the default view of a parent: how many children it did not show, and how to see them."""
    progress = parent.progress
    hidden = []
    if more:
        hidden.append(f"{max(progress.total - progress.succeeded - shown, 1)} more children not completed")
    if progress.succeeded:
        hidden.append(f"{progress.succeeded} completed children not shown")
    if hidden:
        console.print(Text(f"{'; '.join(hidden)}: `dbmaint get {parent.id} --children` lists every child"))


def _print_every_child(client: ManagerClient, job_id: str, console: Console, as_json: bool) -> int:
    """The job, then its children page by page as they arrive (never one huge read), one plain line each."""
    first = True
    for response in client.pages(job_id):
        if as_json:
            print_json(console, response)
            continue
        if first:
            _print_job(console, response.job)
            if is_parent(response.job):
                print(children_header(), file=console.file)
        if response.children:
            print("\n".join(child_line(child) for child in response.children), file=console.file)
        console.file.flush()
        first = False
    return EXIT_OK


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    request = pb.ListJobsRequest(
        status=status_to_proto(JobStatus(args.status)) if args.status else pb.JOB_STATUS_UNSPECIFIED,
        type=_TYPE_ALIASES[args.type] if args.type else "",
        parent_id=args.parent or "",
        schedule_id=args.schedule or "",
        page_size=args.limit or 0,
        page_token=args.page_token or "",
    )
    with ManagerClient(args.manager, args.timeout) as client:
        response = client.list(request)
    if args.json:
        print_json(console, response)
        return EXIT_OK
    if response.jobs:
        console.print(jobs_table(list(response.jobs)))
    else:
        console.print("no jobs")
    if response.next_page_token:
        console.print(Text(f"more jobs: --page-token {response.next_page_token}"))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        return watch_until_terminal(client, args.id, console)


def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        job = client.cancel(args.id, args.reason or "").job
    kind, status = short_type(job.type), status_from_proto(job.status)
    if status is JobStatus.CANCELLED:
        line = f"cancelled {kind} {job.id}"
    elif status is not None and status.is_terminal:
        line = f"{kind} {job.id} had already {status.value}; nothing to cancel"
    else:
        line = (
            f"cancel requested for {kind} {job.id}: its running work is being interrupted "
            f"({status_label(job.status)} for now)"
        )
    console.print(Text(line))
    return EXIT_OK


def cmd_workers(args: argparse.Namespace, console: Console) -> int:
    with ManagerClient(args.manager, args.timeout) as client:
        if args.drain:
            drained = client.drain(args.drain, args.reason or "")
            if args.json:
                print_json(console, drained)
            else:
                console.print(
                    f"worker {drained.worker.worker_id} is draining: it takes no new work, finishes its "
                    f"{len(drained.worker.running_job_ids)} running operation(s), then exits"
                )
            return EXIT_OK
        response = client.workers()
    if args.json:
        print_json(console, response)
        return EXIT_OK
    if response.workers:
        console.print(workers_table(list(response.workers)))
    else:
        console.print("no workers connected")
    if response.unserved_targets:
        console.print(Text(f"unserved targets: {', '.join(response.unserved_targets)}", style="yellow"))
    return EXIT_OK


def cmd_health(args: argparse.Namespace, console: Console) -> int:
    addresses, what = (args.manager, MANAGER) if args.address is None else (args.address, "the health endpoint")
    if len(addresses) == 1:
        status = health_status(addresses[0], args.service, args.timeout, what)
        console.print(Text(status, style="green" if status == "SERVING" else "red"))
        return EXIT_OK if status == "SERVING" else EXIT_NOT_COMPLETED
    return _health_of_each(addresses, args.service, args.timeout, what, console)


def _health_of_each(addresses: Sequence[str], service: str, timeout: float, what: str, console: Console) -> int:
    """One line per address: its status, or ``unreachable`` and why. 0 if any is SERVING; 1 if none is but one
    answered; otherwise the exit code of the last failure (3: none could be reached)."""
    statuses: list[str] = []
    failure: CliError | None = None
    for address in addresses:
        try:
            status = health_status(address, service, timeout, what)
        except CliError as error:
            failure = error
            label = "unreachable" if error.exit_code == EXIT_UNREACHABLE else "no status"
            console.print(Text(f"{address} {label}: {error.message}", style="red"))
            continue
        statuses.append(status)
        console.print(Text(f"{address} {status}", style="green" if status == "SERVING" else "red"))
    if "SERVING" in statuses:
        return EXIT_OK
    if statuses or failure is None:
        return EXIT_NOT_COMPLETED
    return failure.exit_code


def cmd_make_demo_db(args: argparse.Namespace, console: Console) -> int:
    if_exists: Literal["fail", "replace", "keep"] = (
        "replace" if args.force else "keep" if args.exist_ok else "fail"
    )
    where: str = args.where
    if "://" in where:
        # Imported here: SQLAlchemy takes a sizeable share of the CLI's start, and only this command needs it.
        from dbmaint.cli.demo_postgres import describe_demo_table, make_demo_postgres, parse_database_url

        url = parse_database_url(where)
        if url.get_backend_name() == "postgresql":
            table, made = make_demo_postgres(url, args.rows, if_exists=if_exists)
            console.print(Text(f"{'created' if made else 'kept the existing'} {describe_demo_table(url, table)}"))
            return EXIT_OK
        assert url.database is not None  # parse_database_url: a SQLite URL names a file
        where = url.database
    path = Path(where)
    stats, created = make_demo_db(path, args.rows, if_exists=if_exists)
    console.print(Text(f"{'created' if created else 'kept the existing'} {describe_demo_db(path, stats)}"))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    workdir = Path(args.workdir) if args.workdir else None
    return run_demo(console, workdir, args.keep, args.rows, args.timeout, stay=args.stay)


# -- parser -----------------------------------------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--manager and --timeout, accepted before and after the command (after: only when given)."""
    add_flags(parser, [MANAGER_ADDRESS], suppress=not defaults)
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_ranged(float, 0.01),
        default=DEFAULT_TIMEOUT if defaults else argparse.SUPPRESS,
        help=f"deadline of each request, and how long a broken watch is retried (default {DEFAULT_TIMEOUT:g})",
    )


def _health_addresses(text: str) -> tuple[str, ...]:
    try:
        return parsers.manager_addresses(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbmaint",
        description="Client of the dbmaint manager: create, follow and cancel database maintenance.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--version", action="version", version=f"dbmaint {__version__}")
    _connection_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def json_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true", help="print the response as JSON")

    create = command("create", cmd_create, "maintain one or more targets: one child per (target, operation)")
    create.add_argument("targets", nargs="+", metavar="TARGET", help="database names, as the workers know them")
    create.add_argument(
        "--operation",
        "-o",
        action="append",
        choices=[op.value for op in Operation],
        help="run this operation (repeat, in order; default: vacuum, analyze, reindex)",
    )
    create.add_argument(
        "--request-id", default="", metavar="ID", help="idempotency key (default: a fresh cli-<uuid4>)"
    )
    add_mode_options(create)
    create.add_argument(
        "--schema",
        dest="schemas",
        action="append",
        default=[],
        metavar="NAME",
        help="only tables of this schema (PostgreSQL schema, MariaDB database); repeat for more",
    )
    create.add_argument(
        "--table",
        dest="tables",
        action="append",
        default=[],
        metavar="[SCHEMA.]TABLE",
        help="only this table; repeat for more (default: all user tables)",
    )
    add_window_options(create, with_zone=True)
    mode = create.add_mutually_exclusive_group()
    mode.add_argument("--watch", "-w", action="store_true", help="follow the job live; exit 0 iff it completed")
    mode.add_argument("--json", action="store_true", help="print the response as JSON")

    get = command(
        "get",
        cmd_get,
        "show a parent with its counters and the children that did not complete, or a child with its result",
    )
    get.add_argument("id", metavar="ID")
    get.add_argument(
        "--children",
        action="store_true",
        help="list every child of the parent, page by page (with --json: one JSON document per page)",
    )
    get.add_argument(
        "--json",
        action="store_true",
        help="print the manager's answer as JSON: the job and the first page of its children (500)",
    )

    listing = command("list", cmd_list, "list jobs, newest first")
    listing.add_argument("--status", choices=[status.value for status in JobStatus])
    listing.add_argument("--type", choices=sorted(_TYPE_ALIASES), help="parent or child (or the full type name)")
    listing.add_argument("--parent", metavar="ID", help="only the children of this parent")
    listing.add_argument("--schedule", metavar="ID", help="only the parents this schedule created")
    listing.add_argument("--limit", type=_ranged(int, 1, 1000), metavar="N", help="page size (1-1000; default 50)")
    listing.add_argument("--page-token", metavar="TOKEN", help="the token printed after the previous page")
    json_option(listing)

    add_plan_command(command)

    schedule_help = "maintenance that runs itself: create, list, get, pause, resume, delete, run, history"
    schedule = commands.add_parser("schedule", help=schedule_help, description=schedule_help)
    add_schedule_commands(schedule, common)

    watch = command("watch", cmd_watch, "follow a job live until it ends; exit 0 iff it completed")
    watch.add_argument("id", metavar="ID")

    cancel = command("cancel", cmd_cancel, "cancel a parent (all its unfinished children) or one child")
    cancel.add_argument("id", metavar="ID")
    cancel.add_argument("--reason", metavar="TEXT", help="stored as the cancelled jobs' error")

    workers = command("workers", cmd_workers, "list the connected workers and the targets nobody serves")
    json_option(workers)
    workers.add_argument(
        "--drain", metavar="ID", help="tell worker ID to drain: no new work, finish what runs, then exit"
    )
    workers.add_argument("--reason", metavar="TEXT", help="why (with --drain; logged by manager and worker)")

    health = command(
        "health", cmd_health, "grpc.health.v1 check of each address; exit 0 iff SERVING (one of several: any)"
    )
    health.add_argument(
        "address",
        nargs="?",
        type=_health_addresses,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="what to check, comma-separated (default: --manager)",
    )
    health.add_argument("--service", default="", help="service name to check (default: the server as a whole)")

    demo_db = command(
        "make-demo-db",
        cmd_make_demo_db,
        "create a demo database with space to reclaim: a SQLite file, or a table in a PostgreSQL database",
    )
    demo_db.add_argument(
        "where",
        metavar="PATH|URL",
        help=f"a SQLite file (or sqlite:///PATH), or postgresql+psycopg://USER@HOST:PORT/DB: the table "
        f"{DEMO_TABLE} (autovacuum off, half its rows deleted) in that existing database; give the password "
        "in PGPASSWORD or ~/.pgpass, not in the URL (a command line shows in ps)",
    )
    demo_db.add_argument("--rows", type=_ranged(int, 2), default=DEFAULT_ROWS, help=f"default {DEFAULT_ROWS}")
    existing = demo_db.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true", help="replace the file (or table) if it exists")
    existing.add_argument(
        "--exist-ok", action="store_true", help="leave an existing file (or table) alone and exit 0"
    )

    demo = command("demo", cmd_demo, "run a manager and two workers over two demo databases, end to end")
    demo.add_argument("--workdir", metavar="DIR", help="where the databases and logs go (default: a temp dir)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    demo.add_argument(
        "--stay",
        action="store_true",
        help="after the maintenance, keep the fleet and its web console running until Ctrl-C",
    )
    demo.add_argument(
        "--rows",
        type=_ranged(int, 2),
        default=DEFAULT_ROWS,
        help=f"rows of the first database (default {DEFAULT_ROWS})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.manager = resolve([MANAGER_ADDRESS], args, os.environ)["manager"].value
    except ConfigError as error:
        return report("dbmaint", error)
    console = make_console()
    handler: Handler = args.handler
    try:
        return handler(args, console)
    except CliError as error:
        print(f"dbmaint: error: {error.message}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("dbmaint: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`dbmaint list | head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_NOT_COMPLETED


if __name__ == "__main__":
    sys.exit(main())
