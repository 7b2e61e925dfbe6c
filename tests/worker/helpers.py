"""Helpers for the worker tests: polling with a deadline, running coroutines, sample SQLite databases."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a test scenario on a fresh event loop, bounded by ``timeout``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02, message: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {message or predicate}")
        await asyncio.sleep(interval)


async def within(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {timeout}s") from None


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, message: str = ""
) -> Any:
    """The blocking version of ``eventually`` for thread-based tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {message or predicate}")
        time.sleep(interval)


def make_db(path: Path, rows: int = 20_000, delete_half: bool = True) -> Path:
    """A database with a table of ``rows`` rows and an index on it; by default half the rows deleted."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload BLOB NOT NULL)")
        conn.execute("CREATE INDEX items_name ON items (name)")
        conn.executemany(
            "INSERT INTO items (name, payload) VALUES (?, ?)",
            ((f"item-{i:08d}", bytes(i % 251 for i in range(120))) for i in range(rows)),
        )
        conn.commit()
        if delete_half:
            conn.execute("DELETE FROM items WHERE id % 2 = 0")
            conn.commit()
    finally:
        conn.close()
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
    """A Worker with fast test timings, serving sqlite targets at the given paths."""
    from sqlalchemy.engine import make_url

    from worker_service.backoff import Backoff
    from worker_service.config import TargetSpec, WorkerConfig
    from worker_service.engines import default_registry
    from worker_service.faults import FaultPlan
    from worker_service.targets import bind_targets
    from worker_service.worker import Worker, WorkerTimings

    config = WorkerConfig(
        targets=tuple(TargetSpec(name, make_url(f"sqlite:///{path}")) for name, path in targets.items()),
        manager=manager,
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
