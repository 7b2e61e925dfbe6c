"""Helpers for the worker tests: sample SQLite databases and a worker factory; polling comes from
tests.support.polling."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from tests.support.polling import eventually as eventually  # re-exported for the tests
from tests.support.polling import wait_for
from tests.support.polling import within as within
from tests.support.targets import make_sqlite_target

# The names these tests use for the shared polling helpers.
wait_until = wait_for

T = TypeVar("T")


def make_db(path: Path, rows: int = 20_000, delete_half: bool = True) -> Path:
    """A database with a table of ``rows`` rows and an index on it; by default half the rows deleted."""
    make_sqlite_target(path, rows=rows, blob_bytes=120, delete_half=delete_half)
    return path


def integrity(path: Path) -> tuple[str, int]:
    """(integrity_check result, row count) of a sample database."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    finally:
        conn.close()
    return str(check), int(count)


def make_worker(
    manager: str,
    targets: dict[str, Path],
    *,
    slots: int = 1,
    grace: float = 5.0,
    slow: dict[str, float] | None = None,
    health: Any = None,
    worker_id: str = "w-test",
    worker_class: Any = None,
) -> Any:
    """A Worker with fast test timings, serving sqlite targets at the given paths; ``manager``: one address or
    several, comma-separated."""
    from sqlalchemy.engine import make_url

    from worker_service.backoff import Backoff
    from worker_service.config import TargetSpec, WorkerConfig
    from worker_service.engines import default_registry
    from worker_service.faults import FaultPlan
    from worker_service.targets import bind_targets
    from worker_service.worker import Worker, WorkerTimings

    config = WorkerConfig(
        targets=tuple(TargetSpec(name, make_url(f"sqlite:///{path}")) for name, path in targets.items()),
        managers=tuple(manager.split(",")),
        slots=slots,
        worker_id=worker_id,
        grace=grace,
    )
    bound = bind_targets(config.targets, default_registry(FaultPlan(slow=slow or {})))
    timings = WorkerTimings(
        welcome_timeout=2.0, cancel_timeout=2.0, deliver_timeout=1.0, close_timeout=1.0, stable_after=5.0
    )
    cls = worker_class or Worker
    return cls(config, bound, health=health, timings=timings, backoff=Backoff(initial=0.05, cap=0.3))
