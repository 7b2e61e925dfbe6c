"""MODE_AUTO: observe, act only where a threshold is crossed (most urgent first), observe again, report.

``run_auto`` is the same for every engine:

1. **Observe** the child's scope (``Engine.observe``, read-only, no resource lock) with the child's thresholds.
2. **Decide** (``decide``, pure): a child carries out only the proposals of its own operation (``ACTIONS_OF``:
   vacuum -> FREEZE, VACUUM, OPTIMIZE; analyze -> ANALYZE; reindex -> REINDEX, DROP_INVALID_INDEX; optimize ->
   FREEZE, VACUUM, OPTIMIZE, ANALYZE). The tables to act on keep the observers' urgency order: wraparound age
   first (a FREEZE), then the dead-tuple ratio, then estimated bloat bytes. Every other table is skipped with
   a reason: ``below_threshold``, or the observer's own (``xmin_horizon_held`` with the holder's pid when a
   held xmin horizon would make a VACUUM useless now; ``no_space_returned`` for a MariaDB table in the system
   tablespace).
3. **Act**: a table engine (``ParallelEngine``: PostgreSQL, MariaDB) runs exactly those tables in that order,
   each with the statement its actions call for, under the engine's resource lock, parallel lanes and failure
   policy. Another engine (SQLite: its statements cover the whole file) runs its operation on the tables that
   need it, or on its whole file when the file needs it. Nothing to act on: no statement, no resource lock.
4. **Observe again** the tables touched, and report each with ``before`` (the first observation's figures),
   ``after`` (the second's) and the statement's ``duration``.

The report: ``tables`` has one ``TableReport`` per table observed (the acted ones first, in the order they
ran, then the skipped ones by urgency); a table the engine skipped at run time (a lock) reads SKIP with
``locked``. ``notes`` start with ``auto: N table(s) observed, M acted on, K skipped`` and one line per table
acted on, then the engine's own notes. ``bytes_before``/``bytes_after`` are the sizes observed before and after.
A failed table fails the child as in MODE_ALL, with this report attached; a cancel or the deadline wins.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import URL

from dbmaint.operations import ACTIONS_OF, Operation, OperationReport, Reason, TableAction, TableReport, TableScope
from dbmaint.thresholds import Thresholds
from worker_service.cancel import CancelToken
from worker_service.engines.base import Engine, OperationFailed, ParallelEngine, RunStatus, TableActions
from worker_service.engines.observe import TableObservation
from worker_service.engines.tables import MAX_TABLE_NOTES

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Decision:
    """What an AUTO child does: ``acts`` the tables to act on with the observations that call for it (their
    actions and reasons), most urgent first; ``observed`` every table's relevant observations (all of them for
    a skipped table), in urgency order."""

    acts: dict[Key, tuple[TableObservation, ...]]
    observed: dict[Key, tuple[TableObservation, ...]]

    @property
    def skipped(self) -> list[Key]:
        return [key for key in self.observed if key not in self.acts]


def decide(operation: Operation, observations: Sequence[TableObservation]) -> Decision:
    """The tables ``operation`` acts on in MODE_AUTO (module docstring); ``observations`` most urgent first."""
    mine = ACTIONS_OF[operation]
    acts: dict[Key, list[TableObservation]] = {}
    relevant: dict[Key, list[TableObservation]] = {}
    others: dict[Key, list[TableObservation]] = {}
    for observation in observations:
        key = (observation.schema, observation.table)
        if observation.action in mine:
            acts.setdefault(key, []).append(observation)
            relevant.setdefault(key, []).append(observation)
        elif observation.wanted in mine:
            relevant.setdefault(key, []).append(observation)
        else:
            others.setdefault(key, []).append(observation)
    observed = {key: tuple(found) for key, found in relevant.items()}
    for key, found in others.items():
        observed.setdefault(key, tuple(found))
    ordered = {key: observed[key] for key in [*acts, *(k for k in observed if k not in acts)]}
    return Decision({key: tuple(found) for key, found in acts.items()}, ordered)


def _merged(observations: Iterable[TableObservation]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for observation in observations:
        figures.update(observation.evidence)
    return figures


def _reasons(observations: Iterable[TableObservation]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(reason for o in observations for reason in o.reasons))


def _skip_reasons(operation: Operation, observations: Sequence[TableObservation]) -> tuple[str, ...]:
    """Why a table is skipped: the observer's reasons for an action made useless now (the held xmin horizon),
    else below the thresholds (for this operation)."""
    held = [o for o in observations if o.wanted is not None and o.wanted in ACTIONS_OF[operation]]
    return _reasons(held) if held else (Reason.BELOW_THRESHOLD.value,)


def _name(key: Key) -> str:
    return f"{key[0]}.{key[1]}" if key[1] else f"the database file ({key[0]})"


def acted_report(
    key: Key,
    action: TableAction,
    before: Sequence[TableObservation],
    after: Sequence[TableObservation],
    ran: TableReport | None,
) -> TableReport:
    """One table acted on: its most urgent action and every reason, the figures before and after, the duration
    of its statement(s); SKIP with ``locked`` when the engine could not have it."""
    evidence = _merged(before)
    locked = ran is not None and ran.action is TableAction.SKIP
    return TableReport(
        schema=key[0],
        table=key[1],
        action=TableAction.SKIP if locked else action,
        reasons=(*_reasons(before), *((Reason.LOCKED.value,) if locked else ())),
        evidence=evidence,
        before=evidence,
        after=_merged(after),
        duration_seconds=ran.duration_seconds if ran is not None else 0.0,
    )


def skipped_report(operation: Operation, key: Key, observations: Sequence[TableObservation]) -> TableReport:
    evidence = _merged(observations)
    return TableReport(
        schema=key[0],
        table=key[1],
        action=TableAction.SKIP,
        reasons=_skip_reasons(operation, observations),
        evidence=evidence,
        before=evidence,
    )


def auto_report(
    engine: str,
    operation: Operation,
    decision: Decision,
    before_size: int,
    ran: OperationReport | None,
    after: Sequence[TableObservation],
    after_size: int | None,
    started: float,
) -> OperationReport:
    """The report of an AUTO child (module docstring). ``ran`` is the engine's report of the act step (None:
    nothing to act on), ``after`` the second observation of the tables touched."""
    ran_tables = {(t.schema, t.table): t for t in ran.tables} if ran is not None else {}
    after_by: dict[Key, list[TableObservation]] = {}
    for observation in after:
        after_by.setdefault((observation.schema, observation.table), []).append(observation)
    whole = ran if ran is not None and len(decision.acts) == 1 and not ran.tables else None
    tables: list[TableReport] = []
    for key, acting in decision.acts.items():
        action = acting[0].action
        ran_table = ran_tables.get(key)
        if ran_table is None and whole is not None:  # one statement for the whole file: its duration
            ran_table = TableReport(key[0], key[1], action, duration_seconds=whole.duration_seconds)
        tables.append(acted_report(key, action, decision.observed[key], after_by.get(key, []), ran_table))
    tables.extend(skipped_report(operation, key, decision.observed[key]) for key in decision.skipped)
    counted = {key for key in decision.observed if key[1]}
    acted_notes = [
        f"auto: {report.action.value if report.action else '?'} {_name((report.schema, report.table))} "
        f"({', '.join(report.reasons)})"
        for report in tables[: len(decision.acts)]
    ]
    held = [
        f"auto: skipped {_name((r.schema, r.table))} ({', '.join(r.reasons)})"
        for r in tables[len(decision.acts) :]
        if Reason.BELOW_THRESHOLD.value not in r.reasons
    ]
    listed = [*acted_notes, *held]
    notes = [
        f"auto: {len(counted)} table(s) observed, {len(decision.acts)} acted on, {len(decision.skipped)} skipped",
        *listed[:MAX_TABLE_NOTES],
        *([f"{len(listed) - MAX_TABLE_NOTES} more auto notes left out"] if len(listed) > MAX_TABLE_NOTES else []),
        *(ran.notes if ran is not None else ("auto: nothing over the thresholds: no statement run",)),
    ]
    processed = ran.objects_processed if ran is not None else 0
    return OperationReport(
        engine=engine,
        duration_seconds=time.monotonic() - started,
        bytes_before=before_size,
        bytes_after=before_size if after_size is None else after_size,
        objects_processed=processed,
        objects_skipped=max(len(counted) - processed, 0),
        notes=tuple(notes),
        tables=tuple(tables),
    )


def _act(
    engine: Engine,
    operation: Operation,
    url: URL,
    cancel: CancelToken,
    deadline: datetime | None,
    scope: TableScope,
    status: RunStatus | None,
    parallel: int,
    actions: TableActions,
) -> OperationReport:
    """The act step: the chosen tables with their actions (table engines), else the operation on the tables
    named (the whole file when it is among them)."""
    if isinstance(engine, ParallelEngine):
        return engine.run_parallel(operation, url, cancel, deadline, scope, status, parallel, actions)
    if any(not table for _, table in actions):
        return engine.run(operation, url, cancel, deadline, scope, status=status)
    named = TableScope(tables=tuple(f"{schema}.{table}" for schema, table in actions))
    return engine.run(operation, url, cancel, deadline, named, status=status)


def _touched_scope(scope: TableScope, acts: TableActions) -> TableScope:
    """What to observe again: the tables acted on (the whole scope when the whole file was)."""
    if any(not table for _, table in acts):
        return scope
    return TableScope(tables=tuple(f"{schema}.{table}" for schema, table in acts))


def run_auto(
    engine: Engine,
    operation: Operation,
    url: URL,
    cancel: CancelToken,
    deadline: datetime | None,
    scope: TableScope,
    status: RunStatus | None,
    parallel: int,
    thresholds: Thresholds,
) -> OperationReport:
    """MODE_AUTO (module docstring). Raises like ``Engine.run``: OperationFailed carries the AUTO report."""
    started = time.monotonic()
    before = engine.observe(url, cancel, deadline, scope, thresholds)
    decision = decide(operation, before.observations)
    if not decision.acts:
        return auto_report(engine.name, operation, decision, before.size_bytes, None, (), None, started)
    try:
        ran = _act(engine, operation, url, cancel, deadline, scope, status, parallel, decision.acts)
    except OperationFailed as failure:
        after = _observe_after(engine, url, cancel, deadline, _touched_scope(scope, decision.acts), thresholds)
        report = auto_report(
            engine.name, operation, decision, before.size_bytes, failure.report, after, None, started
        )
        raise OperationFailed(str(failure), report) from None
    again = engine.observe(url, cancel, deadline, _touched_scope(scope, decision.acts), thresholds)
    return auto_report(
        engine.name, operation, decision, before.size_bytes, ran, again.observations, again.size_bytes, started
    )


def _observe_after(
    engine: Engine,
    url: URL,
    cancel: CancelToken,
    deadline: datetime | None,
    scope: TableScope,
    thresholds: Thresholds,
) -> Sequence[TableObservation]:
    """The second observation after a failed table: best effort (a table gone, a lost server: none)."""
    try:
        return engine.observe(url, cancel, deadline, scope, thresholds).observations
    except OperationFailed:
        return ()
