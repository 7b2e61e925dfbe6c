"""Thresholds: when an observer proposes an action (MODE_PLAN) or a child acts (MODE_AUTO).

Both services use them: the manager checks a request's ``thresholds`` (names and values) and stores them in
each child's config (``"thresholds"``); the worker's observers compare the catalog's figures with them. A
request sets any of them by name; the others keep the documented defaults below.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


def _doc(default: float | None, engine: str, meaning: str) -> Any:
    """A threshold's default with what it means, for the README's table (``markdown_table``)."""
    return dataclasses.field(default=default, metadata={"engine": engine, "meaning": meaning})


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When an observer proposes an action. The defaults follow autovacuum's and flexible-freeze's rules;
    ``from_mapping`` overrides any of them by name (e.g. from a request).

    PostgreSQL's dead-tuple and analyze thresholds are autovacuum's own formula, ``threshold + scale_factor *
    reltuples``; a value left None here means the table's reloption, else the server's setting (as autovacuum
    resolves them); a value set here wins over both. Each field's metadata says what it means (the README's
    table is rendered from it).
    """

    vacuum_threshold: float | None = _doc(
        None, "PostgreSQL", "VACUUM once dead tuples > `vacuum_threshold + vacuum_scale_factor * reltuples`"
    )
    vacuum_scale_factor: float | None = _doc(None, "PostgreSQL", "see `vacuum_threshold`")
    analyze_threshold: float | None = _doc(
        None,
        "PostgreSQL",
        "ANALYZE once changes since the last analyze > `analyze_threshold + analyze_scale_factor * reltuples`",
    )
    analyze_scale_factor: float | None = _doc(None, "PostgreSQL", "see `analyze_threshold`")
    # Like flexible-freeze: freeze in a window of our choosing, well before autovacuum starts its forced
    # anti-wraparound vacuum at 100 %.
    freeze_age_ratio: float = _doc(
        0.5,
        "PostgreSQL",
        "FREEZE once `age(relfrozenxid)` (or the multixact age), TOAST table included, passes this share of "
        "`autovacuum_freeze_max_age` (`autovacuum_multixact_freeze_max_age`)",
    )
    bloat_min_bytes: float = _doc(
        16 * MIB, "PostgreSQL", "REINDEX once a table's btree bloat estimate reaches this many bytes ..."
    )
    bloat_min_ratio: float = _doc(0.3, "PostgreSQL", "... and this share of its btree indexes' size")
    xmin_horizon_min_seconds: float = _doc(
        300.0,
        "PostgreSQL",
        "a transaction (or prepared transaction) holding the xmin horizon this long makes a VACUUM useless "
        "now: skipped as `xmin_horizon_held`, with its pid",
    )
    xmin_horizon_min_age_xids: float = _doc(
        1_000_000.0, "PostgreSQL", "the same for a replication slot whose `xmin` is this old"
    )
    freelist_min_ratio: float = _doc(
        0.2, "SQLite", "VACUUM once this share of the file's pages is on the free list ..."
    )
    freelist_min_pages: float = _doc(64.0, "SQLite", "... and at least this many pages")
    data_free_min_ratio: float = _doc(
        0.2, "MariaDB", "OPTIMIZE once `DATA_FREE` reaches this share of data + index + free ..."
    )
    data_free_min_bytes: float = _doc(16 * MIB, "MariaDB", "... and at least this many bytes")

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any]) -> Thresholds:
        """The defaults with ``overrides`` applied; ValueError names an unknown or negative threshold."""
        known = threshold_names()
        for name, value in overrides.items():
            if name not in known:
                raise ValueError(f"unknown threshold {name!r} (known: {', '.join(known)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"threshold {name!r} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"threshold {name!r} must not be negative")
        return cls(**{name: float(value) for name, value in overrides.items()})


DEFAULT_THRESHOLDS = Thresholds()


def threshold_names() -> tuple[str, ...]:
    """Every threshold a request may set, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(Thresholds))


# The config key of a child's thresholds (only those the request set; absent: all defaults).
THRESHOLDS_KEY = "thresholds"


def thresholds_from_config(config: Mapping[str, Any]) -> Thresholds:
    """The thresholds in a child's config (absent: the defaults); ValueError names a bad one."""
    value = config.get(THRESHOLDS_KEY, {})
    if not isinstance(value, dict):
        raise ValueError(f"config {THRESHOLDS_KEY!r} must be an object of numbers")
    return Thresholds.from_mapping(value)


def _default(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "the table's reloption, else the server's setting"
    if value >= MIB and value % MIB == 0:
        return f"{value / MIB:g} MiB"
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


def markdown_table() -> str:
    """The README's thresholds table: name, engine, default, meaning."""
    rows = ["| threshold | engine | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Thresholds):
        rows.append(f"| `{f.name}` | {f.metadata['engine']} | {_default(f.default)} | {f.metadata['meaning']} |")
    return "\n".join(rows) + "\n"
