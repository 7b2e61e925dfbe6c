"""Observers: what each table needs, read from the catalog, changing nothing.

An observer (one per engine: ``observe_sqlite``, ``observe_postgresql``, ``observe_mariadb``) takes an open
connection and a ``TableScope`` and returns one ``TableObservation`` per (table, action it needs) -- or one SKIP
per table that needs nothing -- sorted by urgency (``by_urgency``). Rules every observer keeps:

* **Read-only and cheap**: catalog and statistics views only (no table scans, no locks beyond the catalog's
  own); observing twice gives the same answer.
* **Every value from the catalog**: names are the catalog's, matched against the scope, never taken from the
  request text; figures are the server's.
* **Evidence names carry their unit** (``dead_tuples``, ``xid_age``, ``bloat_bytes``, ``free_ratio``...), and each
  observation includes the thresholds it was compared with.

Urgency (``by_urgency``): a FREEZE first (transaction-ID wraparound), then VACUUM (dead-tuple ratio), then the
space-returning actions (REINDEX for estimated bloat, OPTIMIZE for free space: bytes), then invalid indexes,
then ANALYZE, then SKIP. A SKIP because something would make the action useless (a held xmin horizon) sorts
with the action it wanted. Within one rank the larger ``urgency`` figure comes first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dbmaint.operations import Reason, TableAction, TableReport, TableScope
from worker_service.engines.base import OperationFailed

# Rank of an action in the urgency order (lower first); see the module docstring.
_RANK = {
    TableAction.FREEZE: 0,
    TableAction.VACUUM: 1,
    TableAction.REINDEX: 2,
    TableAction.OPTIMIZE: 2,
    TableAction.DROP_INVALID_INDEX: 3,
    TableAction.ANALYZE: 4,
    TableAction.SKIP: 5,
}


@dataclass(frozen=True, slots=True)
class TableObservation:
    """What one table needs: the proposed ``action``, why (``Reason`` codes) and the figures behind it.

    ``table`` is empty when the action covers the whole database file (SQLite's VACUUM). ``wanted`` is set on
    a SKIP that stands for an action made useless right now (a held xmin horizon). ``urgency`` orders the
    observations of one rank: the dead-tuple ratio for a VACUUM, the age ratio for a FREEZE, bytes otherwise.
    """

    schema: str
    table: str
    action: TableAction
    reasons: tuple[str, ...]
    evidence: Mapping[str, float] = field(default_factory=dict)
    urgency: float = 0.0
    wanted: TableAction | None = None

    def sort_key(self) -> tuple[int, float, str, str]:
        return (_RANK[self.wanted or self.action], -self.urgency, self.schema, self.table)

    def report(self) -> TableReport:
        """The observation as a per-table report (nothing done yet: no before/after, no duration)."""
        return TableReport(
            schema=self.schema,
            table=self.table,
            action=self.action,
            reasons=self.reasons,
            evidence=dict(self.evidence),
        )


def by_urgency(observations: Iterable[TableObservation]) -> list[TableObservation]:
    """The observations, most urgent first (see the module docstring)."""
    return sorted(observations, key=TableObservation.sort_key)


def skip(schema: str, table: str, evidence: Mapping[str, float]) -> TableObservation:
    """The table needs nothing: every figure is below its threshold."""
    return TableObservation(schema, table, TableAction.SKIP, (Reason.BELOW_THRESHOLD.value,), evidence)


def in_scope(
    catalog: Sequence[tuple[str, str]], scope: TableScope, default_schemas: Sequence[str]
) -> list[tuple[str, str]]:
    """The (schema, table) pairs of ``catalog`` that ``scope`` covers, in catalog order.

    Everything: the tables of ``default_schemas``. Schemas: their tables. Tables: each named one, an unqualified
    name looked up in the scope's schemas (else ``default_schemas``) in order. Names match the catalog exactly;
    OperationFailed names every schema or table that is not there.
    """
    schemas = {schema for schema, _ in catalog}
    problems = [f"schema {s!r} does not exist or has no table" for s in scope.schemas if s not in schemas]
    present = set(catalog)
    chosen: list[tuple[str, str]] = []
    for name in scope.tables:
        named_schema, table = TableScope.split_table(name)
        look_in = [named_schema] if named_schema is not None else list(scope.schemas or default_schemas)
        found = next(((s, table) for s in look_in if (s, table) in present), None)
        if found is None:
            problems.append(f"table {name!r} does not exist (looked in: {', '.join(look_in) or 'no schema'})")
        elif found not in chosen:
            chosen.append(found)
    if problems:
        raise OperationFailed("; ".join(problems))
    if scope.tables:
        return chosen
    wanted = set(scope.schemas or default_schemas)
    return [pair for pair in catalog if pair[0] in wanted]


def ratio(part: float, whole: float) -> float:
    """``part / whole``, 0 for an empty whole."""
    return part / whole if whole > 0 else 0.0
