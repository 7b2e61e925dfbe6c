"""How jobs and workers look on a terminal: rich tables, the live watch view, and its plain-line fallback.

Every value that comes from the server is wrapped in ``Text`` so that rich never reads it as markup.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from typing import IO

from google.protobuf.message import Message
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dbmaint.cli.render_schedules import window_text
from dbmaint.cli.render_tables import format_bytes, format_seconds, table_reports_table
from dbmaint.cli.watch import WatchState, is_parent, is_terminal
from dbmaint.operations import CHILD_JOB_TYPE, PARENT_JOB_TYPE, JobStatus
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.wire import from_timestamp, operation_label, report_from_proto, status_from_proto, status_label

_STATUS_STYLE = {
    JobStatus.PENDING: "dim",
    JobStatus.RUNNING: "cyan",
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "yellow",
}
_SHORT_TYPES = {PARENT_JOB_TYPE: "parent", CHILD_JOB_TYPE: "child"}
# Wide enough that ids are never folded when the output goes to a file or a pipe.
_PIPE_WIDTH = 200
_BAR_WIDTH = 24
# The live view shows at least this many child rows, however short the terminal.
_MIN_LIVE_ROWS = 5


def make_console() -> Console:
    """A console on stdout; when stdout is not a terminal: no colours, no live view, no narrow folding."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else _PIPE_WIDTH
    return Console(file=sys.stdout, width=width, highlight=False, soft_wrap=False)


def print_json(console: Console, message: Message) -> None:
    from google.protobuf.json_format import MessageToJson  # here: a tenth of the CLI's imports, for --json only

    text = MessageToJson(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    print(text, file=console.file, flush=True)


# -- plain values -----------------------------------------------------------------------------------------------


def format_time(message: Message, field: str) -> str:
    """A Timestamp field of ``message`` in UTC ("2025-01-31T12:00:00Z"); "" when unset."""
    if not message.HasField(field):
        return ""
    moment: datetime = from_timestamp(getattr(message, field))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def job_seconds(job: pb.Job, now: datetime | None = None) -> float | None:
    """How long the job ran: the worker's measure if it reported one, else start → finish (or → ``now``)."""
    if job.HasField("result") and job.result.HasField("duration"):
        return job.result.duration.ToNanoseconds() / 1e9
    if not job.HasField("started_at"):
        return None
    end = from_timestamp(job.finished_at) if job.HasField("finished_at") else now
    if end is None:
        return None
    return max(0.0, (end - from_timestamp(job.started_at)).total_seconds())


def reclaimed_text(job: pb.Job) -> str:
    if not job.HasField("result"):
        return ""
    reclaimed = report_from_proto(job.result).bytes_reclaimed
    before = job.result.bytes_before
    share = f" ({100 * reclaimed / before:.0f}%)" if before > 0 and reclaimed > 0 else ""
    return f"{format_bytes(reclaimed)}{share}"


def sizes_text(job: pb.Job) -> str:
    if not job.HasField("result"):
        return ""
    return f"{format_bytes(job.result.bytes_before)} → {format_bytes(job.result.bytes_after)}"


def short_type(job_type: str) -> str:
    return _SHORT_TYPES.get(job_type, job_type)


def status_text(value: int) -> Text:
    status = status_from_proto(value)
    return Text(status_label(value), style=_STATUS_STYLE.get(status, "") if status else "")


def finished(progress: pb.Progress) -> int:
    """How many of a parent's children are terminal."""
    return progress.succeeded + progress.failed + progress.cancelled


def progress_text(progress: pb.Progress) -> str:
    done = finished(progress)
    return (
        f"{done}/{progress.total} done: {progress.succeeded} succeeded, {progress.failed} failed, "
        f"{progress.cancelled} cancelled, {progress.running} running, {progress.pending} pending"
    )


def child_label(job: pb.Job) -> str:
    return f"{job.target} {operation_label(job.operation)}"


def outcome(job: pb.Job) -> str:
    """The error of a failed/cancelled job, or why a pending child waits."""
    return job.error or job.waiting_reason


# -- tables -----------------------------------------------------------------------------------------------------


def _table(title: str | None = None) -> Table:
    return Table(title=title, title_justify="left", header_style="bold")


def job_details(job: pb.Job) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows: list[tuple[str, Text | str]] = [
        ("id", job.id),
        ("type", job.type),
        ("status", status_text(job.status)),
    ]
    if is_parent(job):
        rows.append(("progress", progress_text(job.progress)))
        if job.request_id:
            rows.append(("request id", job.request_id))
    else:
        rows += [
            ("parent", job.parent_id),
            ("target", job.target),
            ("operation", operation_label(job.operation)),
            ("attempt", f"{job.attempt} of {job.max_attempts}" if job.max_attempts else str(job.attempt)),
            ("worker", job.worker_id),
        ]
    if job.schedule_id:
        rows += [("schedule", job.schedule_id), ("scheduled", format_time(job, "scheduled_time"))]
    if job.HasField("window"):
        rows.append(("window", window_text(job.window)))
    rows += [("created", format_time(job, "created_at")), ("started", format_time(job, "started_at"))]
    rows.append(("finished", format_time(job, "finished_at")))
    if job.cancel_requested:
        rows.append(("cancel", "requested"))
    if job.error:
        rows.append(("error", Text(job.error, style="red")))
    if job.waiting_reason:
        rows.append(("waiting", job.waiting_reason))
    for name, value in rows:
        if value != "":
            grid.add_row(name, value if isinstance(value, Text) else Text(value))
    return grid


def result_details(result: pb.OperationResult) -> RenderableType:
    """The figures of a child's result, its notes, and its per-table reports when the answer carries them."""
    report = report_from_proto(result)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    before = report.bytes_before
    share = f" ({100 * report.bytes_reclaimed / before:.1f}%)" if before > 0 else ""
    for name, value in (
        ("engine", report.engine),
        ("duration", format_seconds(report.duration_seconds)),
        ("size", f"{format_bytes(report.bytes_before)} → {format_bytes(report.bytes_after)}"),
        ("reclaimed", f"{format_bytes(report.bytes_reclaimed)} ({report.bytes_reclaimed} bytes){share}"),
        ("objects", f"{report.objects_processed} processed, {report.objects_skipped} skipped"),
    ):
        grid.add_row(name, Text(value))
    parts: list[RenderableType] = [grid]
    if report.notes:
        parts += [Text("notes", style="bold"), Text("\n".join(f"  {note}" for note in report.notes))]
    if result.tables:  # only GetJob of a child carries them
        parts.append(table_reports_table(result.tables))
    return Group(*parts) if len(parts) > 1 else grid


def children_table(children: list[pb.Job], title: str | None = "children") -> Table:
    table = _table(title)
    for name in ("#", "id", "target", "operation", "status", "worker", "attempt", "duration", "reclaimed"):
        table.add_column(name, no_wrap=name != "id", overflow="fold")
    table.add_column("error / waiting", overflow="fold")
    for child in children:
        seconds = job_seconds(child)
        table.add_row(
            str(child.position),
            Text(child.id),
            Text(child.target),
            operation_label(child.operation),
            status_text(child.status),
            Text(child.worker_id),
            str(child.attempt) if child.attempt else "",
            format_seconds(seconds) if seconds is not None else "",
            reclaimed_text(child),
            Text(outcome(child), style="red" if child.error else "dim"),
        )
    return table


# `dbmaint get --children`: one plain line per child (a rich table row costs 1-2 ms: 10,000 children took 18 s).
_CHILD_COLUMNS = (
    ("#", 6),
    ("id", 36),
    ("target", 20),
    ("operation", 9),
    ("status", 9),
    ("worker", 16),
    ("attempt", 7),
    ("duration", 9),
    ("reclaimed", 16),
    ("error / waiting", 0),
)


def _columns(values: tuple[str, ...]) -> str:
    return "  ".join(value.ljust(width) for value, (_, width) in zip(values, _CHILD_COLUMNS, strict=True)).rstrip()


def children_header() -> str:
    return _columns(tuple(name for name, _ in _CHILD_COLUMNS))


def child_line(child: pb.Job) -> str:
    """One child as a line under :func:`children_header` (a long value widens its column on that line only)."""
    seconds = job_seconds(child)
    return _columns(
        (
            str(child.position),
            child.id,
            child.target,
            operation_label(child.operation),
            status_label(child.status),
            child.worker_id,
            str(child.attempt) if child.attempt else "",
            format_seconds(seconds) if seconds is not None else "",
            reclaimed_text(child),
            " ".join(outcome(child).split()),
        )
    )


def results_table(rows: list[pb.Job], title: str | None = "results") -> Table:
    table = _table(title)
    for name in ("target", "operation", "status", "worker", "attempt", "duration"):
        table.add_column(name, no_wrap=True)
    table.add_column("bytes before → after", no_wrap=True, justify="right")
    table.add_column("reclaimed", no_wrap=True, justify="right")
    table.add_column("error", overflow="fold")
    for job in rows:
        seconds = job_seconds(job)
        table.add_row(
            Text(job.target),
            operation_label(job.operation),
            status_text(job.status),
            Text(job.worker_id),
            str(job.attempt) if job.attempt else "",
            format_seconds(seconds) if seconds is not None else "",
            sizes_text(job),
            reclaimed_text(job),
            Text(job.error, style="red"),
        )
    return table


def jobs_table(jobs: list[pb.Job]) -> Table:
    table = _table()
    table.add_column("id", overflow="fold")
    for name in ("type", "status", "target", "operation", "progress"):
        table.add_column(name, no_wrap=True)
    table.add_column("parent", overflow="fold")
    table.add_column("created", no_wrap=True)
    for job in jobs:
        parent = is_parent(job)
        progress = job.progress
        table.add_row(
            Text(job.id),
            short_type(job.type),
            status_text(job.status),
            Text(job.target),
            "" if parent else operation_label(job.operation),
            f"{finished(progress)}/{progress.total}" if parent else "",
            Text(job.parent_id),
            format_time(job, "created_at"),
        )
    return table


def worker_state(worker: pb.WorkerInfo) -> Text:
    """ "active" or "draining", then "FAULTS" when the worker injects faults: a test setup must stand out."""
    state = Text("draining", style="yellow") if worker.draining else Text("active", style="green")
    if worker.faults_active:
        state.append(" FAULTS", style="bold red")
    return state


def workers_table(workers: list[pb.WorkerInfo]) -> Table:
    table = _table()
    table.add_column("worker", overflow="fold")
    table.add_column("targets", overflow="fold")
    table.add_column("slots", justify="right")
    table.add_column("running", overflow="fold")
    for name in ("state", "connected", "last heartbeat", "peer"):
        table.add_column(name, no_wrap=True)
    for worker in workers:
        running = ", ".join(worker.running_job_ids)
        table.add_row(
            Text(worker.worker_id),
            Text(", ".join(worker.targets)),
            str(worker.slots),
            Text(f"{len(worker.running_job_ids)}: {running}" if running else "0"),
            worker_state(worker),
            format_time(worker, "connected_at"),
            format_time(worker, "last_heartbeat"),
            Text(worker.peer),
        )
    return table


def summary(state: WatchState) -> Text:
    job = state.job
    seconds = job_seconds(job)
    took = f" in {format_seconds(seconds)}" if seconds is not None else ""
    kind = "parent" if is_parent(job) else "child"
    line = Text(f"{kind} {job.id} ")
    line.append_text(status_text(job.status))
    if is_parent(job):
        progress = job.progress
        line.append(
            f"{took}: {progress.succeeded} succeeded, {progress.failed} failed, {progress.cancelled} cancelled"
        )
    else:
        line.append(took)
    if job.error:
        line.append(f" ({job.error})", style="red")
    return line


# -- watching ---------------------------------------------------------------------------------------------------


class LiveView:
    """A live table on a terminal: one row per child with a bar, status, worker, attempt and elapsed time."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._state: WatchState | None = None
        self._live = Live(
            console=console,
            refresh_per_second=8,
            transient=True,
            get_renderable=self._render,
            redirect_stderr=False,
        )

    def start(self, state: WatchState) -> None:
        self._state = state
        self._live.start()

    def changed(self, state: WatchState, job: pb.Job, previous: pb.Job | None) -> None:
        self._state = state

    def note(self, text: str) -> None:
        self._console.print(Text(text, style="dim"))

    def stop(self) -> None:
        self._live.stop()

    def _render(self) -> RenderableType:
        state = self._state
        if state is None:
            return Text("")
        now = datetime.now(UTC)
        tick = time.monotonic()
        # A parent of thousands of children shows its counters and the rows that fit the terminal: the running
        # children first, then the failed, cancelled and pending ones (the completed ones are counted).
        rows = state.rows_within(max(_MIN_LIVE_ROWS, self._console.height - 4))
        table = Table.grid(padding=(0, 2))
        table.add_column(min_width=max((len(child_label(row)) for row in rows), default=0) + 2, no_wrap=True)
        table.add_column(min_width=9, no_wrap=True)  # status
        table.add_column(width=_BAR_WIDTH, no_wrap=True)
        table.add_column(min_width=max((len(row.worker_id) for row in rows), default=1), no_wrap=True)
        table.add_column(min_width=9, no_wrap=True)  # attempt
        table.add_column(min_width=7, no_wrap=True, justify="right")  # elapsed
        table.add_column(overflow="ellipsis", no_wrap=True)  # error / waiting reason
        for row in rows:
            status = status_from_proto(row.status)
            if status is JobStatus.RUNNING:
                bar = ProgressBar(total=None, pulse=True, width=_BAR_WIDTH, animation_time=tick)
            else:
                bar = ProgressBar(total=1, completed=1 if is_terminal(row) else 0, width=_BAR_WIDTH)
                if status in (JobStatus.FAILED, JobStatus.CANCELLED):
                    bar.finished_style = _STATUS_STYLE[status]
            seconds = job_seconds(row, now)
            table.add_row(
                Text(f"  {child_label(row)}"),
                status_text(row.status),
                bar,
                Text(row.worker_id or "-", style="" if row.worker_id else "dim"),
                f"attempt {row.attempt}" if row.attempt else "",
                format_seconds(seconds) if seconds is not None else "",
                Text(outcome(row), style="red" if row.error else "dim"),
            )
        job = state.job
        if not is_parent(job):
            return table
        progress = job.progress
        hidden = progress.total - len(rows)
        if hidden > 0:
            table.add_row(Text(f"  … {hidden} more ({progress.succeeded} completed)", style="dim"))
        done = finished(progress)
        seconds = job_seconds(job, now)
        header = Table.grid(padding=(0, 2))
        header.add_row(
            Text(f"parent {job.id}", style="bold"),
            status_text(job.status),
            ProgressBar(total=max(progress.total, 1), completed=done, width=_BAR_WIDTH),
            f"{done}/{progress.total} done",
            format_seconds(seconds) if seconds is not None else "",
        )
        return Group(header, table)


class LineView:
    """The watch view when stdout is not a terminal: one plain line per change of status, worker or attempt."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def _print(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=self._out, flush=True)

    def start(self, state: WatchState) -> None:
        self._print(self._line(state.job))
        if is_parent(state.job):
            for child in state.children:
                self._print(self._line(child))

    def changed(self, state: WatchState, job: pb.Job, previous: pb.Job | None) -> None:
        key = (job.status, job.worker_id, job.attempt)
        if is_parent(job):  # a parent line when its status or its count of finished children changes
            if previous is not None and _done_key(previous) == _done_key(job):
                return
        elif previous is not None and (previous.status, previous.worker_id, previous.attempt) == key:
            return
        self._print(self._line(job))

    def note(self, text: str) -> None:
        self._print(text)

    def stop(self) -> None:
        pass

    @staticmethod
    def _line(job: pb.Job) -> str:
        status = status_label(job.status)
        if is_parent(job):
            line = f"parent {job.id} {status}: {progress_text(job.progress)}"
        else:
            line = f"{child_label(job)} {status}"
            if job.worker_id:
                line += f" worker={job.worker_id}"
            if job.attempt:
                line += f" attempt={job.attempt}"
            if is_terminal(job):
                seconds = job_seconds(job)
                if seconds is not None:
                    line += f" took={format_seconds(seconds)}"
                if job.HasField("result"):
                    line += f" reclaimed={reclaimed_text(job)}"
        if outcome(job):
            line += f" ({outcome(job)})"
        return line


def _done_key(job: pb.Job) -> tuple[int, int, int, int]:
    return job.status, job.progress.succeeded, job.progress.failed, job.progress.cancelled


def watch_view(console: Console) -> LiveView | LineView:
    """The live view on a terminal, plain lines otherwise."""
    return LiveView(console) if console.is_terminal else LineView(console.file)


def print_outcome(console: Console, state: WatchState) -> None:
    """The results table of a watched job and its one-line summary. A parent with more children than one page
    shows those that did not complete (``follow`` read them) and says how to list the rest."""
    console.print(results_table(state.rows))
    job = state.job
    if is_parent(job) and len(state.rows) < job.progress.total:
        console.print(
            Text(
                f"{job.progress.total - len(state.rows)} more children not shown "
                f"({job.progress.succeeded} completed): `dbmaint get {job.id} --children` lists every child"
            )
        )
    console.print(summary(state))
