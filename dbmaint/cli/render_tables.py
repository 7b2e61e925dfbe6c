"""How per-table reports (TableReport) look on a terminal: action names, figures as an operator reads them, and
the table of what a child did to each table (``dbmaint get CHILD``, ``dbmaint watch CHILD``).

The child's table shows at most ``MAX_REPORT_ROWS`` rows, in the order the worker reported them (most urgent
first), then how many more there are (``--json`` has them all). Per row: the table, the action, the reasons, the
key figure of the action before → after (after only when the table was observed again, MODE_AUTO), and the time
spent on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from dbmaint.v1 import maintenance_pb2 as pb

MAX_REPORT_ROWS = 20
# The figure that says most about each action, first found wins (SQLite reports free pages, not dead tuples).
KEY_FIGURE = {
    pb.TABLE_ACTION_FREEZE: ("xid_age", "mxid_age"),
    pb.TABLE_ACTION_VACUUM: ("dead_tuples", "free_pages"),
    pb.TABLE_ACTION_DROP_INVALID_INDEX: ("invalid_indexes", "leftover_indexes"),
    pb.TABLE_ACTION_REINDEX: ("bloat_bytes",),
    pb.TABLE_ACTION_OPTIMIZE: ("data_free_bytes",),
    pb.TABLE_ACTION_ANALYZE: ("modified_since_analyze",),
    pb.TABLE_ACTION_SKIP: ("dead_tuples", "free_pages", "data_free_bytes"),
}


def action_name(action: int) -> str:
    """ "vacuum", "drop_invalid_index", ... for a TableAction value ("?" for one this CLI does not know)."""
    return (
        pb.TableAction.Name(action).removeprefix("TABLE_ACTION_").lower()
        if action in pb.TableAction.values()
        else "?"
    )


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:04.1f}s"


def age_text(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def value_text(name: str, value: float) -> str:
    """A figure's value alone: bytes in KiB/MiB/GiB, ratios in percent, seconds as an age, counts as integers."""
    if name.endswith("_bytes"):
        return format_bytes(int(value))
    if name.endswith("_ratio"):
        return f"{100 * value:.1f}%"
    if name.endswith("_seconds"):
        return age_text(value)
    return f"{value:,.0f}" if value == int(value) else f"{value:,.3g}"


def figure_text(name: str, value: float) -> str:
    """A figure with its name, as an operator reads it ("bloat 3.0 MiB", "dead_ratio 20.0%")."""
    shown = name.removesuffix("_bytes").removesuffix("_seconds")
    return f"{shown} {value_text(name, value)}"


def table_name(report: pb.TableReport) -> str:
    return f"{report.schema}.{report.table}" if report.table else f"{report.schema} (whole file)"


def change_text(report: pb.TableReport) -> str:
    """The action's key figure before → after ("dead_tuples 50,000 → 0"); before only when the table was not
    observed again; "" when the report has none of the figures."""
    before = report.before or report.evidence
    for name in KEY_FIGURE.get(report.action, ()):
        if name not in before:
            continue
        text = figure_text(name, before[name])
        if name in report.after:
            text += f" → {value_text(name, report.after[name])}"
        return text
    return ""


def seconds_of(report: pb.TableReport) -> float:
    return report.duration.ToNanoseconds() / 1e9


def report_seconds_text(report: pb.TableReport) -> str:
    seconds = seconds_of(report)
    return format_seconds(seconds) if seconds else "-"


def table_reports_table(reports: Sequence[pb.TableReport], limit: int = MAX_REPORT_ROWS) -> Table:
    """What the child did (or would do) to each table, the first ``limit`` reports."""
    table = Table(title="tables", title_justify="left", header_style="bold")
    for name in ("table", "action", "reasons", "before → after", "duration"):
        table.add_column(name, overflow="fold", no_wrap=name in ("action", "duration"))
    for report in reports[:limit]:
        skipped = report.action == pb.TABLE_ACTION_SKIP
        table.add_row(
            Text(table_name(report)),
            Text(action_name(report.action), style="dim" if skipped else "bold"),
            Text(", ".join(report.reasons)),
            Text(change_text(report)),
            report_seconds_text(report),
        )
    if len(reports) > limit:
        table.caption = f"{len(reports) - limit} more table(s) not shown: --json lists them all"
        table.caption_justify = "left"
    return table
