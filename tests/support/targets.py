"""Make SQLite maintenance targets with real reclaimable space."""

from __future__ import annotations

import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SqliteStats:
    page_count: int
    freelist_count: int
    page_size: int

    @property
    def size(self) -> int:
        return self.page_count * self.page_size


def make_sqlite_target(
    path: Path, rows: int = 20_000, blob_bytes: int = 200, seed: int = 7, delete_half: bool = True
) -> SqliteStats:
    """A table ``items`` of ``rows`` rows (16-char text key with index ``items_key``, a blob), then (by
    default) half of them deleted, so VACUUM has pages to give back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, key TEXT NOT NULL, payload BLOB NOT NULL)")
        conn.execute("CREATE INDEX items_key ON items (key)")
        rng = random.Random(seed)
        conn.executemany(
            "INSERT INTO items (key, payload) VALUES (?, ?)",
            ((f"{rng.getrandbits(64):016x}", os.urandom(blob_bytes)) for _ in range(rows)),
        )
        if delete_half:
            conn.execute("DELETE FROM items WHERE id % 2 = 0")
    conn.close()
    return sqlite_stats(path)


def make_sqlite_targets(folder: Path, *names: str, rows: int = 5_000) -> dict[str, Path]:
    """One SQLite target per name (``make_sqlite_target``) in ``folder``: name -> path."""
    paths = {name: folder / f"{name}.db" for name in names}
    for path in paths.values():
        make_sqlite_target(path, rows=rows)
    return paths


def sqlite_stats(path: Path) -> SqliteStats:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (page_count,) = conn.execute("PRAGMA page_count").fetchone()
        (freelist,) = conn.execute("PRAGMA freelist_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        return SqliteStats(page_count, freelist, page_size)
    finally:
        conn.close()


def integrity_ok(path: Path) -> bool:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def write_locked(path: Path) -> bool:
    """Does another connection hold the SQLite file's write lock (a VACUUM running on it, say)?"""
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    finally:
        conn.close()
