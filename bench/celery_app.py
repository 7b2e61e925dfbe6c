"""The Celery application of the Celery runner: what a team would write to run the same maintenance with
Celery 5 (Redis as broker and result backend).

The workers are started as ``celery -A bench.celery_app worker`` with ``BENCH_CELERY_URL`` naming the Redis
database (``redis://127.0.0.1:6379/15`` by default). A maintenance is a chord: one chain per target (its
operations as ``maintain`` tasks, in order, each passing the list of results on), then ``collect``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from bench import ops

DEFAULT_URL = "redis://127.0.0.1:6379/15"
URL = os.environ.get("BENCH_CELERY_URL", DEFAULT_URL)

app = Celery("dbmaint_bench", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.maintain")  # type: ignore[untyped-decorator]
def maintain(previous: list[dict[str, Any]], path: str, operation: str) -> list[dict[str, Any]]:
    """One operation on one target; returns the results of the chain so far plus this one."""
    return [*previous, dict(ops.run_operation(path, operation))]


@app.task(name="bench.collect")  # type: ignore[untyped-decorator]
def collect(chains: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The chord's body: every operation's result, flattened."""
    return [record for chain in chains for record in chain]


def maintenance(paths: list[str], operations: list[str]) -> Any:
    """The chord for one maintenance: a chain per target, then ``collect``."""
    from celery import chain, chord

    chains = [
        chain(maintain.si([], path, operations[0]), *(maintain.s(path, op) for op in operations[1:]))
        for path in paths
    ]
    return chord(chains, collect.s())
