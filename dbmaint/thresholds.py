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


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When an observer proposes an action. The defaults follow autovacuum's and flexible-freeze's rules;
    ``from_mapping`` overrides any of them by name (e.g. from a request).

    PostgreSQL's dead-tuple and analyze thresholds are autovacuum's own formula, ``threshold + scale_factor *
    reltuples``; a value left None here means the table's reloption, else the server's setting (as autovacuum
    resolves them); a value set here wins over both.
    """

    # PostgreSQL: autovacuum_vacuum_threshold/_scale_factor and autovacuum_analyze_threshold/_scale_factor.
    vacuum_threshold: float | None = None
    vacuum_scale_factor: float | None = None
    analyze_threshold: float | None = None
    analyze_scale_factor: float | None = None
    # PostgreSQL: FREEZE once a table's xid (or multixact) age passes this share of autovacuum_freeze_max_age
    # (autovacuum_multixact_freeze_max_age): like flexible-freeze, freeze in a window of our choosing before
    # autovacuum starts its forced anti-wraparound vacuum at 100 %.
    freeze_age_ratio: float = 0.5
    # PostgreSQL: a btree bloat estimate proposes REINDEX from this many bytes and this share of the indexes.
    bloat_min_bytes: float = 16 * MIB
    bloat_min_ratio: float = 0.3
    # PostgreSQL: a transaction (or prepared transaction) that has held the xmin horizon this long, or a
    # replication slot whose xmin is this old, makes a VACUUM useless now: its dead tuples cannot go.
    xmin_horizon_min_seconds: float = 300.0
    xmin_horizon_min_age_xids: float = 1_000_000.0
    # SQLite: VACUUM once this share of the file's pages, and at least this many, are on the free list.
    freelist_min_ratio: float = 0.2
    freelist_min_pages: float = 64.0
    # MariaDB: OPTIMIZE once DATA_FREE reaches this share of data + index + free and at least this many bytes.
    data_free_min_ratio: float = 0.2
    data_free_min_bytes: float = 16 * MIB

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
