"""The workload: a fleet of SQLite files generated once from a seed into a cache folder, and restored as a
fresh copy before every run, so every run (of every runner) does exactly the same work.

Each target is one file with one table ``items`` of R rows (an integer primary key, a 16-character text key
with an index, a 100-byte blob), after which every other row is deleted: every page is left half empty, so
VACUUM rewrites the file to about half its size and REINDEX/ANALYZE still have R/2 keys to go through.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

# Bump when the generated files change for the same seed: the cache folder name includes it.
GENERATOR_VERSION = 1
KEY_CHARS = 16
BLOB_BYTES = 100
MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class Workload:
    """T targets of R rows each, from ``seed``."""

    name: str
    targets: int
    rows: int
    seed: int

    def children(self, operations_per_target: int) -> int:
        return self.targets * operations_per_target

    @property
    def cache_key(self) -> str:
        return f"{self.name}-t{self.targets}-r{self.rows}-s{self.seed}-g{GENERATOR_VERSION}"

    def target_names(self) -> list[str]:
        width = max(3, len(str(self.targets - 1)))
        return [f"t{index:0{width}d}" for index in range(self.targets)]


# name -> (targets, rows); "scale" is the 100 small targets of the scale run.
SIZES: dict[str, tuple[int, int]] = {
    "small": (300, 200),
    "large": (8, 150_000),
    "scale": (100, 200),
}


def workload(name: str, seed: int, targets: int | None = None, rows: int | None = None) -> Workload:
    default_targets, default_rows = SIZES[name]
    return Workload(name, targets or default_targets, rows or default_rows, seed)


@dataclass(frozen=True)
class Fleet:
    """A restored copy of the fleet: target name -> SQLite file."""

    root: Path
    targets: dict[str, Path]

    def write_targets_file(self, path: Path) -> Path:
        """The worker's ``--targets-file``: one ``NAME=sqlite:////absolute/path`` a line."""
        path.write_text("".join(f"{name}=sqlite:///{file}\n" for name, file in self.targets.items()))
        return path

    def total_bytes(self) -> int:
        return sum(file.stat().st_size for file in self.targets.values())


def build_target(path: Path, rows: int, rng: random.Random) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, key TEXT NOT NULL, payload BLOB NOT NULL)")
        conn.execute("CREATE INDEX items_key ON items (key)")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO items (id, key, payload) VALUES (?, ?, ?)",
            (
                (row_id, f"{rng.getrandbits(4 * KEY_CHARS):0{KEY_CHARS}x}", rng.randbytes(BLOB_BYTES))
                for row_id in range(1, rows + 1)
            ),
        )
        conn.execute("DELETE FROM items WHERE id % 2 = 0")
        conn.execute("COMMIT")
    finally:
        conn.close()


def ensure_fleet(spec: Workload, cache_dir: Path) -> Path:
    """The cached fleet of ``spec``, generated on first use (into a scratch folder, renamed when complete)."""
    final = cache_dir / spec.cache_key
    if (final / MANIFEST).is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    building = cache_dir / f".{spec.cache_key}.{os.getpid()}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    files: dict[str, str] = {}
    for index, name in enumerate(spec.target_names()):
        path = building / f"{name}.db"
        build_target(path, spec.rows, random.Random(f"{spec.seed}:{index}"))
        files[name] = path.name
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update((building / files[name]).read_bytes())
    manifest = {"workload": asdict(spec), "generator_version": GENERATOR_VERSION, "files": files}
    manifest["sha256"] = digest.hexdigest()
    (building / MANIFEST).write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    building.rename(final)
    return final


def manifest(cached: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((cached / MANIFEST).read_text())
    return data


def restore_fleet(cached: Path, destination: Path) -> Fleet:
    """A fresh copy of the cached fleet in ``destination`` (which must not exist yet)."""
    files: dict[str, str] = json.loads((cached / MANIFEST).read_text())["files"]
    destination.mkdir(parents=True)
    targets: dict[str, Path] = {}
    for name, file_name in files.items():
        target = destination / file_name
        shutil.copyfile(cached / file_name, target)
        targets[name] = target.resolve()
    return Fleet(destination.resolve(), targets)
