"""The PostgreSQL observer: dead tuples, wraparound age, btree bloat, invalid indexes, and the xmin horizon.

Per table in scope (ordinary tables and materialized views outside the system schemas), from
``pg_class``/``pg_stat_user_tables`` and the server's settings:

=====================  ================================================================================
FREEZE (xid_age,       ``age(relfrozenxid)`` (the table's or its TOAST table's, whichever is older) over
mxid_age)              ``freeze_age_ratio * autovacuum_freeze_max_age`` (the table's reloption if lower),
                       likewise ``mxid_age(relminmxid)`` against autovacuum_multixact_freeze_max_age
VACUUM (dead_tuples)   ``n_dead_tup > threshold + scale_factor * reltuples``, autovacuum's formula with the
                       reloptions and settings (``Thresholds`` may override them); urgency: the dead ratio
REINDEX                a btree bloat estimate (``bloat_estimate``, approximate: average widths from
(bloat_estimate)       ``pg_stats``, no null bitmap, fillfactor 90) over bloat_min_bytes and bloat_min_ratio
DROP_INVALID_INDEX /   an index with ``indisvalid = false`` that no CREATE INDEX is building now: a
REINDEX (invalid_      ``*_ccnew``/``*_ccold`` leftover of REINDEX CONCURRENTLY is dropped, any other invalid
index)                 index (a failed CREATE INDEX CONCURRENTLY) rebuilt
ANALYZE (stale_        ``n_mod_since_analyze > threshold + scale_factor * reltuples``, or rows but never
statistics)            analyzed
SKIP (below_threshold) none of the above
=====================  ================================================================================

**The xmin horizon**: the oldest of the backends of this database holding a snapshot (``backend_xmin``, the
observer's own session and autovacuum workers excepted), the prepared transactions and the replication slots
holding ``xmin``. When it has been held for ``xmin_horizon_min_seconds`` (backends, prepared transactions) or is
``xmin_horizon_min_age_xids`` old (slots), a VACUUM or FREEZE could not remove what it should: the observation
becomes a SKIP with reason ``xmin_horizon_held`` added, ``wanted`` set, and the holder in the evidence
(``xmin_holder_pid``: 0 for a prepared transaction or a slot, ``xmin_horizon_age_xids``, ``xmin_held_seconds``).

Sizes come from ``relpages`` (as of the last VACUUM/ANALYZE), not ``pg_relation_size``, which would wait
behind an ACCESS EXCLUSIVE lock; a table never vacuumed nor analyzed (``reltuples`` -1) has no size figure.
Nothing here writes: the queries read catalogs and statistics views only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from dbmaint.operations import Reason, TableAction, TableScope
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from worker_service.engines.observe import (
    TableObservation,
    by_urgency,
    in_scope,
    ratio,
    skip,
)

Connection = psycopg.Connection[tuple[Any, ...]]

SETTINGS = (
    "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_analyze_threshold",
    "autovacuum_analyze_scale_factor",
    "autovacuum_freeze_max_age",
    "autovacuum_multixact_freeze_max_age",
    "block_size",
)
SETTINGS_SQL = "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)"
TABLES_SQL = """
SELECT n.nspname, c.relname, c.oid::int8, c.reltuples::float8, c.relpages::int8,
       coalesce(c.reloptions, '{}'::text[]),
       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0), coalesce(s.n_mod_since_analyze, 0),
       coalesce(s.n_ins_since_vacuum, 0),
       extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8,
       extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))::float8,
       greatest(pg_catalog.age(c.relfrozenxid), coalesce(pg_catalog.age(t.relfrozenxid), 0)),
       greatest(pg_catalog.mxid_age(c.relminmxid), coalesce(pg_catalog.mxid_age(t.relminmxid), 0))
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
ORDER BY n.nspname, c.relname
"""
# Invalid indexes of user tables (an index of a TOAST table counts for its owner), except those a CREATE INDEX
# or REINDEX is building right now (pg_stat_progress_create_index).
INVALID_INDEXES_SQL = """
SELECT coalesce(o.oid, x.indrelid)::int8, i.relname, i.relpages::int8
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
LEFT JOIN pg_catalog.pg_class o ON o.reltoastrelid = x.indrelid
WHERE NOT x.indisvalid
  AND x.indexrelid NOT IN (SELECT p.index_relid FROM pg_catalog.pg_stat_progress_create_index p)
"""
# Per btree index on plain columns: its pages, its tuples, and the summed average width of its columns from
# pg_stats (NULL when a column has no statistics: no estimate then).
BTREE_SQL = """
SELECT x.indrelid::int8, i.relpages::int8, greatest(i.reltuples, t.reltuples, 0)::float8,
       (SELECT CASE WHEN count(s.avg_width) = count(*) THEN sum(s.avg_width) END
        FROM pg_catalog.pg_attribute a
        LEFT JOIN pg_catalog.pg_stats s
          ON s.schemaname = n.nspname AND s.tablename = t.relname AND s.attname = a.attname
        WHERE a.attrelid = t.oid AND a.attnum = ANY(x.indkey))::float8
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
JOIN pg_catalog.pg_am am ON am.oid = i.relam
WHERE am.amname = 'btree' AND x.indisvalid AND x.indexprs IS NULL AND NOT (0 = ANY(x.indkey))
  AND t.oid = ANY(%s::oid[])
"""
# What holds the xmin horizon back, oldest first: backends of this database (and walsenders), prepared
# transactions of this database, replication slots. held_seconds is NULL for a slot.
XMIN_HOLDERS_SQL = """
SELECT a.pid, pg_catalog.age(a.backend_xmin)::float8,
       extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::float8
FROM pg_catalog.pg_stat_activity a
WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_catalog.pg_backend_pid()
  AND a.backend_type <> 'autovacuum worker'
  AND (a.datname = pg_catalog.current_database() OR a.backend_type = 'walsender')
UNION ALL
SELECT 0, pg_catalog.age(p.transaction)::float8, extract(epoch FROM now() - p.prepared)::float8
FROM pg_catalog.pg_prepared_xacts p WHERE p.database = pg_catalog.current_database()
UNION ALL
SELECT 0, pg_catalog.age(r.xmin)::float8, NULL
FROM pg_catalog.pg_replication_slots r WHERE r.xmin IS NOT NULL
ORDER BY 2 DESC
"""
LEFTOVER = re.compile(r"_cc(new|old)[0-9]*$")
# The btree estimate's constants: index tuple header (8) plus its line pointer (4), the page header (24) and
# the btree special space (16), and the default fillfactor of a btree leaf (90 %).
BTREE_TUPLE_OVERHEAD = 12
BTREE_PAGE_OVERHEAD = 40
BTREE_FILLFACTOR = 0.9


@dataclass(frozen=True, slots=True)
class _Table:
    schema: str
    name: str
    oid: int
    reltuples: float
    relpages: int
    reloptions: Sequence[str]
    live: float
    dead: float
    modified: float
    inserted: float
    since_vacuum: float | None
    since_analyze: float | None
    xid_age: float
    mxid_age: float


@dataclass(frozen=True, slots=True)
class _Holder:
    pid: int
    age_xids: float
    held_seconds: float | None

    def holds(self, thresholds: Thresholds) -> bool:
        if self.held_seconds is None:
            return self.age_xids >= thresholds.xmin_horizon_min_age_xids
        return self.held_seconds >= thresholds.xmin_horizon_min_seconds

    def evidence(self, thresholds: Thresholds) -> dict[str, float]:
        figures = {
            "xmin_holder_pid": float(self.pid),
            "xmin_horizon_age_xids": self.age_xids,
            "xmin_horizon_min_seconds": thresholds.xmin_horizon_min_seconds,
        }
        if self.held_seconds is not None:
            figures["xmin_held_seconds"] = self.held_seconds
        return figures


def _reloption(options: Sequence[str], name: str) -> float | None:
    for option in options:
        key, _, value = option.partition("=")
        if key == name:
            try:
                return float(value)
            except ValueError:
                return None
    return None


class _Rules:
    """The thresholds of one table: a request's override, else the table's reloption, else the setting."""

    def __init__(self, settings: Mapping[str, float], thresholds: Thresholds) -> None:
        self.settings = settings
        self.thresholds = thresholds

    def _pick(self, table: _Table, name: str, override: float | None) -> float:
        if override is not None:
            return override
        value = _reloption(table.reloptions, name)
        return value if value is not None and value >= 0 else self.settings[name]

    def vacuum_threshold(self, table: _Table) -> float:
        t = self.thresholds
        base = self._pick(table, "autovacuum_vacuum_threshold", t.vacuum_threshold)
        scale = self._pick(table, "autovacuum_vacuum_scale_factor", t.vacuum_scale_factor)
        return base + scale * max(table.reltuples, 0.0)

    def analyze_threshold(self, table: _Table) -> float:
        t = self.thresholds
        base = self._pick(table, "autovacuum_analyze_threshold", t.analyze_threshold)
        scale = self._pick(table, "autovacuum_analyze_scale_factor", t.analyze_scale_factor)
        return base + scale * max(table.reltuples, 0.0)

    def freeze_max_age(self, table: _Table, name: str) -> float:
        """The table's own freeze max age may only lower the server's (as autovacuum reads it)."""
        own = _reloption(table.reloptions, name)
        server = self.settings[name]
        return min(own, server) if own is not None and own >= 0 else server


def _settings(conn: Connection) -> dict[str, float]:
    return {str(name): float(value) for name, value in conn.execute(SETTINGS_SQL, (list(SETTINGS),))}


def _tables(conn: Connection) -> list[_Table]:
    return [_Table(*row) for row in conn.execute(TABLES_SQL)]


def _invalid_indexes(conn: Connection) -> dict[int, list[tuple[str, int]]]:
    found: dict[int, list[tuple[str, int]]] = {}
    for oid, name, pages in conn.execute(INVALID_INDEXES_SQL):
        found.setdefault(int(oid), []).append((str(name), int(pages)))
    return found


def _btree_bloat(conn: Connection, oids: list[int], block_size: float) -> dict[int, tuple[float, float]]:
    """Per table: (estimated bloat bytes, bytes of its estimated btree indexes). Approximate (see the module
    docstring): an index without column statistics is left out."""
    per_page = (block_size - BTREE_PAGE_OVERHEAD) * BTREE_FILLFACTOR
    found: dict[int, tuple[float, float]] = {}
    for oid, pages, tuples, width in conn.execute(BTREE_SQL, (oids,)):
        if width is None or pages <= 0:
            continue
        ideal_pages = 1 + tuples * (BTREE_TUPLE_OVERHEAD + 8 * ((int(width) + 7) // 8)) / per_page
        bloat, total = found.get(int(oid), (0.0, 0.0))
        found[int(oid)] = (bloat + max(0.0, pages - ideal_pages) * block_size, total + pages * block_size)
    return found


def _oldest_holder(conn: Connection, thresholds: Thresholds) -> _Holder | None:
    holders = [_Holder(int(pid), float(age), held) for pid, age, held in conn.execute(XMIN_HOLDERS_SQL)]
    return next((holder for holder in holders if holder.holds(thresholds)), None)


def _evidence(table: _Table, rules: _Rules, block_size: float) -> dict[str, float]:
    freeze_max_age = rules.freeze_max_age(table, "autovacuum_freeze_max_age")
    multixact_max_age = rules.freeze_max_age(table, "autovacuum_multixact_freeze_max_age")
    figures = {
        "dead_tuples": table.dead,
        "live_tuples": table.live,
        "dead_ratio": ratio(table.dead, table.dead + table.live),
        "reltuples": max(table.reltuples, 0.0),
        "modified_since_analyze": table.modified,
        "inserted_since_vacuum": table.inserted,
        "xid_age": table.xid_age,
        "mxid_age": table.mxid_age,
        "freeze_max_age": freeze_max_age,
        "multixact_freeze_max_age": multixact_max_age,
        "freeze_threshold_xids": rules.thresholds.freeze_age_ratio * freeze_max_age,
        "multixact_freeze_threshold": rules.thresholds.freeze_age_ratio * multixact_max_age,
        "vacuum_threshold_tuples": rules.vacuum_threshold(table),
        "analyze_threshold_tuples": rules.analyze_threshold(table),
    }
    if table.reltuples >= 0:  # relpages is 0 until the first VACUUM or ANALYZE: an unknown size, not 0 bytes
        figures["size_bytes"] = table.relpages * block_size
    if table.since_vacuum is not None:
        figures["seconds_since_vacuum"] = table.since_vacuum
    if table.since_analyze is not None:
        figures["seconds_since_analyze"] = table.since_analyze
    return figures


def _vacuum_or_freeze(table: _Table, evidence: dict[str, float]) -> TableObservation | None:
    """FREEZE (which removes dead tuples too) when an age is over its threshold, else VACUUM over the
    dead-tuple threshold, else None."""
    reasons: list[str] = []
    if table.xid_age > evidence["freeze_threshold_xids"]:
        reasons.append(Reason.XID_AGE.value)
    if table.mxid_age > evidence["multixact_freeze_threshold"]:
        reasons.append(Reason.MXID_AGE.value)
    over_dead = table.dead > evidence["vacuum_threshold_tuples"]
    if over_dead:
        reasons.append(Reason.DEAD_TUPLES.value)
    if not reasons:
        return None
    if reasons[0] != Reason.DEAD_TUPLES.value:
        urgency = max(
            ratio(table.xid_age, evidence["freeze_max_age"]),
            ratio(table.mxid_age, evidence["multixact_freeze_max_age"]),
        )
        return TableObservation(table.schema, table.name, TableAction.FREEZE, tuple(reasons), evidence, urgency)
    urgency = evidence["dead_ratio"]
    return TableObservation(table.schema, table.name, TableAction.VACUUM, tuple(reasons), evidence, urgency)


def _held(observation: TableObservation, holder: _Holder, thresholds: Thresholds) -> TableObservation:
    """A VACUUM/FREEZE the held horizon makes useless: a SKIP that says so and names the holder."""
    return replace(
        observation,
        action=TableAction.SKIP,
        reasons=(*observation.reasons, Reason.XMIN_HORIZON_HELD.value),
        evidence={**observation.evidence, **holder.evidence(thresholds)},
        wanted=observation.action,
    )


def _index_actions(
    table: _Table,
    evidence: dict[str, float],
    invalid: list[tuple[str, int]],
    bloat: tuple[float, float] | None,
    thresholds: Thresholds,
    block_size: float,
) -> list[TableObservation]:
    found: list[TableObservation] = []
    if invalid:
        leftovers = [pages for name, pages in invalid if LEFTOVER.search(name)]
        figures = {
            **evidence,
            "invalid_indexes": float(len(invalid)),
            "leftover_indexes": float(len(leftovers)),
            "invalid_index_bytes": sum(pages for _, pages in invalid) * block_size,
        }
        # A leftover of REINDEX CONCURRENTLY is a copy: drop it. Any other invalid index is one somebody
        # asked for (a failed CREATE INDEX CONCURRENTLY): rebuild it.
        action = TableAction.DROP_INVALID_INDEX if len(leftovers) == len(invalid) else TableAction.REINDEX
        reasons = (Reason.INVALID_INDEX.value,)
        found.append(
            TableObservation(table.schema, table.name, action, reasons, figures, figures["invalid_indexes"])
        )
    if bloat is not None:
        bloat_bytes, index_bytes = bloat
        figures = {
            **evidence,
            "bloat_bytes": bloat_bytes,
            "bloat_ratio": ratio(bloat_bytes, index_bytes),
            "btree_index_bytes": index_bytes,
            "bloat_min_bytes": thresholds.bloat_min_bytes,
            "bloat_min_ratio": thresholds.bloat_min_ratio,
        }
        if bloat_bytes >= thresholds.bloat_min_bytes and figures["bloat_ratio"] >= thresholds.bloat_min_ratio:
            reasons = (Reason.BLOAT_ESTIMATE.value,)
            found.append(
                TableObservation(table.schema, table.name, TableAction.REINDEX, reasons, figures, bloat_bytes)
            )
        else:
            evidence.update({"bloat_bytes": bloat_bytes, "bloat_ratio": figures["bloat_ratio"]})
    return found


def _analyze(table: _Table, evidence: dict[str, float]) -> TableObservation | None:
    never = table.since_analyze is None and table.live > 0
    if table.modified > evidence["analyze_threshold_tuples"] or never:
        reasons = (Reason.STALE_STATISTICS.value,)
        urgency = ratio(table.modified, max(table.live, 1.0))
        return TableObservation(table.schema, table.name, TableAction.ANALYZE, reasons, evidence, urgency)
    return None


def observe_postgresql(
    conn: Connection, scope: TableScope, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[TableObservation]:
    """What each table of ``scope`` needs (see the module docstring), most urgent first. ``conn`` is an open
    autocommit connection to the target's database (in a transaction the statistics would be a snapshot that
    stays open); unqualified table names are looked up in its search_path.
    OperationFailed names an unknown schema or table."""
    settings = _settings(conn)
    block_size = settings["block_size"]
    rules = _Rules(settings, thresholds)
    tables = {(t.schema, t.name): t for t in _tables(conn)}
    search_path = [str(row[0]) for row in conn.execute("SELECT unnest(current_schemas(false))")]
    default_schemas = sorted({schema for schema, _ in tables}) if scope.everything else search_path
    chosen = [tables[pair] for pair in in_scope(list(tables), scope, default_schemas)]
    invalid = _invalid_indexes(conn)
    bloat = _btree_bloat(conn, [t.oid for t in chosen], block_size)
    holder = _oldest_holder(conn, thresholds)
    observations: list[TableObservation] = []
    for table in chosen:
        evidence = _evidence(table, rules, block_size)
        found = _index_actions(
            table, evidence, invalid.get(table.oid, []), bloat.get(table.oid), thresholds, block_size
        )
        vacuum = _vacuum_or_freeze(table, evidence)
        if vacuum is not None:
            found.append(vacuum if holder is None else _held(vacuum, holder, thresholds))
        analyze = _analyze(table, evidence)
        if analyze is not None:
            found.append(analyze)
        observations.extend(found or [skip(table.schema, table.name, evidence)])
    return by_urgency(observations)
