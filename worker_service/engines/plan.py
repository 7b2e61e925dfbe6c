"""A PLAN run's report (MODE_PLAN, a dry run): what the observers saw, as an ``OperationReport``.

``run_plan`` asks the engine to observe (``Engine.observe``, which opens its connection and runs its observer
``observe_*``) and makes the report here. Rules of the report, the same for every engine:

* ``tables``: one ``TableReport`` per observation, most urgent first: the proposed action, its reasons, the
  evidence; ``before`` holds the figures observed; no ``after`` and no duration (nothing was done).
* ``notes``: first ``plan: N table(s) observed, nothing changed``, then one short line per proposed action
  (``plan: vacuum public.orders (dead_tuples)``), including a SKIP that stands for an action made useless now
  (a held xmin horizon), at most ``MAX_TABLE_NOTES`` of them. Scripts read these lines.
* ``bytes_before`` = ``bytes_after`` = the current size; ``objects_processed`` = 0; ``objects_skipped`` = the
  number of tables observed. N counts distinct tables: SQLite's whole-file observation (table "") is not one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import URL

from dbmaint.operations import OperationReport, TableAction, TableReport, TableScope
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from worker_service.cancel import CancelToken
from worker_service.engines.base import Engine
from worker_service.engines.observe import TableObservation
from worker_service.engines.tables import MAX_TABLE_NOTES


def _name(observation: TableObservation) -> str:
    if not observation.table:
        return f"the database file ({observation.schema})"
    return f"{observation.schema}.{observation.table}"


def action_note(observation: TableObservation) -> str:
    """One proposed action, in one line: ``plan: vacuum public.orders (dead_tuples)``."""
    wanted = f" (wanted {observation.wanted.value})" if observation.wanted is not None else ""
    reasons = ", ".join(observation.reasons)
    return f"plan: {observation.action.value}{wanted} {_name(observation)} ({reasons})"


def proposes_something(observation: TableObservation) -> bool:
    """An action to note: anything but a plain SKIP below the thresholds."""
    return observation.action is not TableAction.SKIP or observation.wanted is not None


def table_report(observation: TableObservation) -> TableReport:
    """The observation as its report, the figures observed as ``before`` (nothing after: nothing ran)."""
    report = observation.report()
    return TableReport(
        schema=report.schema,
        table=report.table,
        action=report.action,
        reasons=report.reasons,
        evidence=report.evidence,
        before=dict(report.evidence),
    )


def plan_report(
    engine: str, observations: Sequence[TableObservation], size_bytes: int, started: float
) -> OperationReport:
    """The report of a PLAN run (module docstring); ``started`` is its ``time.monotonic()`` start."""
    tables = {(o.schema, o.table) for o in observations if o.table}
    proposed = [action_note(o) for o in observations if proposes_something(o)]
    left_out = proposed[MAX_TABLE_NOTES:]
    notes = [f"plan: {len(tables)} table(s) observed, nothing changed", *proposed[:MAX_TABLE_NOTES]]
    if left_out:
        notes.append(f"{len(left_out)} more proposed actions left out (limit {MAX_TABLE_NOTES})")
    return OperationReport(
        engine=engine,
        duration_seconds=time.monotonic() - started,
        bytes_before=size_bytes,
        bytes_after=size_bytes,
        objects_processed=0,
        objects_skipped=len(tables),
        notes=tuple(notes),
        tables=tuple(table_report(o) for o in observations),
    )


def run_plan(
    engine: Engine,
    url: URL,
    cancel: CancelToken,
    deadline: datetime | None,
    scope: TableScope,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> OperationReport:
    """MODE_PLAN: observe ``scope`` and report what would be done and why, changing nothing."""
    started = time.monotonic()
    observed = engine.observe(url, cancel, deadline, scope, thresholds)
    return plan_report(engine.name, observed.observations, observed.size_bytes, started)
