"""``dbmaint plan``: a dry run across the fleet (MODE_PLAN), shown as one table of what each table needs.

The command creates a MODE_PLAN parent, waits for it to end (WatchJob of the parent alone), then reads each child
with GetJob (only a child's GetJob carries its per-table reports) and shows every table of every target in one
table, most urgent first:

* FREEZE first (transaction-id wraparound: the oldest ``xid_age`` against ``freeze_max_age`` first);
* then VACUUM, by dead-row ratio (SQLite: free-page ratio), highest first;
* then the other actions (drop an invalid index, reindex, optimize, analyze), by target and table;
* SKIP last.

A table that several children of one target report with the same action (one child per operation) is shown once.

The "previous" column is how long the table's last maintenance took: the duration in the TableReport of that
table in the newest COMPLETED child of the same target that was not a plan (its config has no ``"mode":
"plan"``), of an operation of the plan that carries out the row's action (``CARRIED_OUT_BY``: an ANALYZE row
looks at analyze, then optimize children; the operation of the plan child that reported the row comes first; a
SKIP row looks at that operation only). The history is read once per command and bounded: one ListJobs of the
newest ``HISTORY_CHILDREN`` completed children (newest first; lists carry no table reports), then at most one
GetJob per (target, operation) of the plan, for that newest child. "-" when there is none among them, or when
that child has no report of the table, or skipped it (a MODE_ALL child of an engine that reports no tables, a
narrower scope, a table below the thresholds of an AUTO run). An older child is not searched further.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dbmaint.cli.client import (
    EXIT_INTERRUPTED,
    EXIT_NOT_COMPLETED,
    EXIT_OK,
    CliError,
    ManagerClient,
    StreamLost,
)
from dbmaint.cli.modes import (
    add_threshold_option,
    apply_mode_options,
    config_mode,
    new_request_id,
    with_retry_hint,
)
from dbmaint.cli.render_tables import action_name, age_text, figure_text, format_bytes, format_seconds, seconds_of
from dbmaint.cli.watch import is_terminal
from dbmaint.operations import ACTIONS_OF, CHILD_JOB_TYPE, Operation, TableAction
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.wire import operation_to_proto, status_label

Handler = Callable[[argparse.Namespace, Console], int]

# The rank of an action in the table (lower first); FREEZE and VACUUM are further ordered by their figures.
_ACTION_RANK = {
    pb.TABLE_ACTION_FREEZE: 0,
    pb.TABLE_ACTION_VACUUM: 1,
    pb.TABLE_ACTION_DROP_INVALID_INDEX: 2,
    pb.TABLE_ACTION_REINDEX: 3,
    pb.TABLE_ACTION_OPTIMIZE: 4,
    pb.TABLE_ACTION_ANALYZE: 5,
    pb.TABLE_ACTION_UNSPECIFIED: 6,
    pb.TABLE_ACTION_SKIP: 7,
}
# The figures that say most about each action, in the order they are shown (at most three of them).
_KEY_EVIDENCE = {
    pb.TABLE_ACTION_FREEZE: ("xid_age", "mxid_age", "freeze_max_age"),
    pb.TABLE_ACTION_VACUUM: ("dead_ratio", "dead_tuples", "vacuum_threshold_tuples", "free_ratio", "free_pages"),
    pb.TABLE_ACTION_DROP_INVALID_INDEX: ("invalid_indexes", "leftover_indexes", "invalid_index_bytes"),
    pb.TABLE_ACTION_REINDEX: ("bloat_bytes", "bloat_ratio"),
    pb.TABLE_ACTION_OPTIMIZE: ("data_free_bytes", "data_free_ratio"),
    pb.TABLE_ACTION_ANALYZE: ("modified_since_analyze", "analyze_threshold_tuples"),
    pb.TABLE_ACTION_SKIP: ("dead_ratio", "free_ratio", "data_free_ratio", "xmin_holder_pid", "xmin_held_seconds"),
}
_KEY_EVIDENCE_SHOWN = 3
# How the last maintenance is read from the evidence (PostgreSQL reports the seconds since each).
_LAST_MAINTENANCE = (("seconds_since_vacuum", "vacuum"), ("seconds_since_analyze", "analyze"))
# Pause between two attempts to reopen a broken watch.
# How many of the newest completed children the "previous" column looks through (one ListJobs page).
HISTORY_CHILDREN = 500
# (target, operation) -> (schema, table) -> seconds the table's last maintenance by that operation took.
PreviousDurations = Mapping[tuple[str, int], Mapping[tuple[str, str], float]]
# The operations whose children carry out each proposed action (``ACTIONS_OF``, turned around).
CARRIED_OUT_BY: Mapping[int, tuple[int, ...]] = {
    pb.TableAction.Value(f"TABLE_ACTION_{action.name}"): tuple(
        operation_to_proto(operation) for operation, actions in ACTIONS_OF.items() if action in actions
    )
    for action in TableAction
    if action is not TableAction.SKIP
}


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One table of one target, with what the plan proposes for it."""

    target: str
    report: pb.TableReport
    # The operation of the child that reported it (the first one, when several did).
    operation: int = pb.OPERATION_UNSPECIFIED

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.target, self.report.schema, self.report.table, self.report.action)


def urgency_key(row: PlanRow) -> tuple[int, float, str, str, str]:
    """Sorts rows most urgent first: FREEZE by its share of ``freeze_max_age``, VACUUM by its dead (or free) ratio,
    the others by action; ties by target, schema and table."""
    evidence = row.report.evidence
    action = row.report.action
    weight = 0.0
    if action == pb.TABLE_ACTION_FREEZE:
        weight = evidence.get("xid_age", 0.0) / max(evidence.get("freeze_max_age", 1.0), 1.0)
    elif action == pb.TABLE_ACTION_VACUUM:
        weight = evidence.get("dead_ratio", evidence.get("free_ratio", 0.0))
    return (_ACTION_RANK.get(action, 6), -weight, row.target, row.report.schema, row.report.table)


def plan_rows(children: Iterable[pb.Job]) -> list[PlanRow]:
    """Every table report of ``children`` (read with GetJob), once per (target, table, action), most urgent
    first."""
    rows: dict[tuple[str, str, str, int], PlanRow] = {}
    for child in children:
        for report in child.result.tables:
            row = PlanRow(child.target, report, child.operation)
            rows.setdefault(row.key, row)
    return sorted(rows.values(), key=urgency_key)


def key_evidence(report: pb.TableReport) -> str:
    """The two or three figures that say most about the proposed action."""
    names = [name for name in _KEY_EVIDENCE.get(report.action, ()) if name in report.evidence]
    return ", ".join(figure_text(name, report.evidence[name]) for name in names[:_KEY_EVIDENCE_SHOWN])


def size_text(evidence: Mapping[str, float]) -> str:
    """The table's size from its evidence (PostgreSQL relation size, MariaDB data + index, SQLite file)."""
    if "size_bytes" in evidence:
        return format_bytes(int(evidence["size_bytes"]))
    if "data_bytes" in evidence:
        return format_bytes(int(evidence["data_bytes"] + evidence.get("index_bytes", 0.0)))
    if "page_count" in evidence and "page_size_bytes" in evidence:
        return format_bytes(int(evidence["page_count"] * evidence["page_size_bytes"]))
    return ""


def last_maintenance(evidence: Mapping[str, float]) -> str:
    """How long ago the table was last vacuumed and analyzed, when the evidence says ("" otherwise)."""
    parts = [f"{what} {age_text(evidence[name])} ago" for name, what in _LAST_MAINTENANCE if name in evidence]
    return ", ".join(parts)


def is_plan_child(job: pb.Job) -> bool:
    """A MODE_PLAN child: its config says ``"mode": "plan"``."""
    return config_mode(job) == "plan"


def newest_maintenance(jobs: Iterable[pb.Job], wanted: Collection[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """For each wanted (target, operation), the id of the child of ``jobs`` (completed children) that finished
    last and was not a plan."""
    newest: dict[tuple[str, int], pb.Job] = {}
    for job in jobs:
        key = (job.target, job.operation)
        if key not in wanted or is_plan_child(job):
            continue
        known = newest.get(key)
        if known is None or job.finished_at.ToNanoseconds() > known.finished_at.ToNanoseconds():
            newest[key] = job
    return {key: job.id for key, job in newest.items()}


def table_durations(child: pb.Job) -> dict[tuple[str, str], float]:
    """How long the child spent on each table it maintained (its reports; a skipped or untimed table is left
    out)."""
    return {
        (report.schema, report.table): seconds_of(report)
        for report in child.result.tables
        if report.action != pb.TABLE_ACTION_SKIP and seconds_of(report) > 0
    }


def previous_durations(client: ManagerClient, wanted: Collection[tuple[str, int]]) -> PreviousDurations:
    """The durations of the last maintenance of each wanted (target, operation): one ListJobs of the newest
    ``HISTORY_CHILDREN`` completed children, then one GetJob per pair found among them (module docstring)."""
    listing = client.list(
        pb.ListJobsRequest(type=CHILD_JOB_TYPE, status=pb.JOB_STATUS_COMPLETED, page_size=HISTORY_CHILDREN)
    )
    newest = newest_maintenance(listing.jobs, wanted)
    return {key: table_durations(client.get(job_id).job) for key, job_id in newest.items()}


def previous_operations(row: PlanRow) -> tuple[int, ...]:
    """Whose history tells the row's previous duration, in order: the operations that carry out its action,
    the one of the child that reported it first; for a SKIP (or an unknown action), that operation alone."""
    carriers = CARRIED_OUT_BY.get(row.report.action)
    if carriers is None:
        return (row.operation,)
    return tuple(dict.fromkeys(op for op in (row.operation, *carriers) if op in carriers))


def previous_text(row: PlanRow, previous: PreviousDurations) -> str:
    table = (row.report.schema, row.report.table)
    for operation in previous_operations(row):
        seconds = previous.get((row.target, operation), {}).get(table)
        if seconds is not None:
            return format_seconds(seconds)
    return "-"


def plan_table(rows: list[PlanRow], previous: PreviousDurations | None = None) -> Table:
    """The plan, one row per table and action; ``previous`` fills the "previous" column ("-" where unknown)."""
    previous = previous or {}
    table = Table(title="plan", title_justify="left", header_style="bold")
    columns = ("target", "table", "action", "reasons", "key evidence", "size", "last maintenance", "previous")
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=name in ("action", "size", "previous"))
    for row in rows:
        report = row.report
        name = f"{report.schema}.{report.table}" if report.table else f"{report.schema} (whole file)"
        action = action_name(report.action)
        table.add_row(
            Text(row.target),
            Text(name),
            Text(action, style="dim" if report.action == pb.TABLE_ACTION_SKIP else "bold"),
            Text(", ".join(report.reasons)),
            Text(key_evidence(report)),
            size_text(report.evidence),
            last_maintenance(report.evidence),
            previous_text(row, previous),
        )
    return table


def totals_text(rows: list[PlanRow], targets: int) -> str:
    """ "5 table(s) observed on 2 target(s): 1 freeze, 2 vacuum, 2 skip" (actions in the table's order)."""
    counts = Counter(row.report.action for row in rows)
    per_action = ", ".join(
        f"{counts[action]} {action_name(action)}"
        for action in sorted(counts, key=lambda a: _ACTION_RANK.get(a, 6))
    )
    tables = len({(row.target, row.report.schema, row.report.table) for row in rows})
    return f"{tables} table(s) observed on {targets} target(s)" + (f": {per_action}" if per_action else "")


def wait_for_parent(client: ManagerClient, parent_id: str) -> pb.Job:
    """Follows the parent alone (WatchJob job_only) until it is terminal, across broken streams and failovers
    (``ManagerClient.watch_reopening``)."""
    for message in client.watch_reopening(parent_id, job_only=True):
        if isinstance(message, StreamLost):
            continue
        job = message.snapshot.job if message.HasField("snapshot") else message.changed
        if job.id == parent_id and is_terminal(job):
            return job
    raise AssertionError("watch_reopening ends only by raising")  # pragma: no cover


def read_children(client: ManagerClient, parent_id: str) -> list[pb.Job]:
    """Every child of the parent with its table reports: the pages of the parent name them, GetJob of each
    child carries its reports."""
    children = [child for page in client.pages(parent_id) for child in page.children]
    return [client.get(child.id).job for child in children]


def plan_json(parent: pb.Job, children: list[pb.Job]) -> str:
    """The parent and, per child, its target, operation, status and reports (protobuf JSON mapping)."""
    from google.protobuf.json_format import MessageToDict  # here: only --json needs it

    def mapped(report: pb.TableReport) -> dict[str, object]:
        return MessageToDict(report, preserving_proto_field_name=True)

    document = {
        "parent_id": parent.id,
        "status": pb.JobStatus.Name(parent.status),
        "children": [
            {
                "job_id": child.id,
                "target": child.target,
                "operation": pb.Operation.Name(child.operation),
                "status": pb.JobStatus.Name(child.status),
                "error": child.error,
                "tables": [mapped(report) for report in child.result.tables],
            }
            for child in children
        ],
    }
    return json.dumps(document, indent=2)


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    request = pb.CreateMaintenanceRequest(
        targets=args.targets,
        operations=[operation_to_proto(Operation(name)) for name in args.operation or ()],
        request_id=args.request_id or new_request_id(),  # sent again after a lost answer, it finds the same plan
        schemas=args.schemas,
        tables=args.tables,
        mode=pb.MODE_PLAN,
    )
    apply_mode_options(request, args)
    with ManagerClient(args.manager, args.timeout) as client:
        try:
            parent = client.create(request).parent
        except CliError as error:
            raise with_retry_hint(error, request.request_id) from None
        try:
            parent = wait_for_parent(client, parent.id)
        except KeyboardInterrupt:
            raise CliError(
                f"stopped waiting; the plan goes on (`dbmaint get {parent.id} --children` to read it)",
                EXIT_INTERRUPTED,
            ) from None
        children = read_children(client, parent.id)
        if args.json:
            print(plan_json(parent, children), file=console.file, flush=True)
        else:
            _print_plan(console, parent, children, _history(client, children, console))
    return EXIT_OK if parent.status == pb.JOB_STATUS_COMPLETED else EXIT_NOT_COMPLETED


def _history(client: ManagerClient, children: list[pb.Job], console: Console) -> PreviousDurations:
    """The previous durations for the plan's (target, operation) pairs; a failed read costs the column only."""
    try:
        return previous_durations(client, {(child.target, child.operation) for child in children})
    except CliError as error:
        console.print(Text(f"previous durations not shown: {error.message}", style="yellow"))
        return {}


def _print_plan(console: Console, parent: pb.Job, children: list[pb.Job], previous: PreviousDurations) -> None:
    rows = plan_rows(children)
    if rows:
        console.print(plan_table(rows, previous))
    console.print(Text(totals_text(rows, len({child.target for child in children}))))
    for child in children:
        if child.status != pb.JOB_STATUS_COMPLETED:
            line = f"{child.target}: {status_label(child.status)}" + (f": {child.error}" if child.error else "")
            console.print(Text(line, style="red"))
    console.print(Text(f"plan {parent.id}: nothing was changed", style="dim"))


def add_plan_command(command: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """``dbmaint plan`` (``command`` makes a subcommand with the connection options)."""
    plan = command(
        "plan", cmd_plan, "dry run: observe each table of the targets and show what it needs, changing nothing"
    )
    plan.add_argument("targets", nargs="+", metavar="TARGET", help="database names, as the workers know them")
    plan.add_argument(
        "--operation",
        "-o",
        action="append",
        choices=[op.value for op in Operation],
        help="plan for this operation (repeat; default: vacuum, analyze, reindex)",
    )
    plan.add_argument(
        "--schema", dest="schemas", action="append", default=[], metavar="NAME", help="only tables of this schema"
    )
    plan.add_argument(
        "--table", dest="tables", action="append", default=[], metavar="[SCHEMA.]TABLE", help="only this table"
    )
    add_threshold_option(plan)
    plan.add_argument(
        "--request-id",
        default="",
        metavar="ID",
        help="idempotency key (default: a fresh cli-<uuid4>); an existing plan's key shows that plan again",
    )
    plan.add_argument(
        "--json",
        action="store_true",
        help="print the reports as JSON (protobuf JSON mapping; without the previous durations)",
    )
