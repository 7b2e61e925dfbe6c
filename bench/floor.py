"""``python -m bench.floor``: what each piece of one child's round trip costs alone, with nothing else running.

At one slot a worker idles, per child, for one result sent, one store turn and one assignment received. This
measures those pieces apart, on the benchmark's small-fleet targets, so the one-slot tier can be compared with
its floor (README, Performance):

- ``sql``: the four operations run directly (``bench.ops``) and through the worker's SQLite engine, per op;
- ``store``: ``apply_batch`` of one result and one start on a SQLite store (``synchronous=FULL``), per turn;
- ``grpc``: a bare ``grpc.aio`` bidirectional stream between two processes, one message each way, per trip.

Each figure is min / median / max over ``--runs`` repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from sqlalchemy.engine import make_url

from bench.ops import OPERATIONS, run_operation
from bench.workload import build_target
from dbmaint.local import free_port
from dbmaint.operations import JobStatus, Operation, OperationReport
from manager_service.domain import ChildOutcome, MaintenanceSpec, StartRequest
from manager_service.store.sqlalchemy_store import open_store
from worker_service.cancel import CancelToken
from worker_service.engines.sqlite import SqliteEngine

ECHO_SERVICE = "bench.floor.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Ping"
PAYLOAD = b"x" * 200  # about the size of a serialized Result


def _identity(data: bytes) -> bytes:
    return data


def per_item_ms(work: Callable[[], None], items: int) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) / items * 1000


def sql_floor(directory: Path, targets: int, rows: int) -> tuple[float, float]:
    """(direct, engine): milliseconds per operation over every target and operation."""
    rng = random.Random(1)
    paths = [directory / f"floor-{i}.db" for i in range(targets)]
    for path in paths:
        build_target(path, rows, rng)
    engine = SqliteEngine()
    urls = [make_url(f"sqlite:///{path}") for path in paths]
    items = targets * len(OPERATIONS)

    def direct() -> None:
        for path in paths:
            for operation in OPERATIONS:
                run_operation(str(path), operation)

    def through_engine() -> None:
        for url in urls:
            for operation in OPERATIONS:
                engine.run(Operation(operation), url, CancelToken(), None)

    return per_item_ms(direct, items), per_item_ms(through_engine, items)


def store_floor(directory: Path, turns: int) -> float:
    """Milliseconds per ``apply_batch`` of one result and the next start."""
    store = open_store(f"sqlite:///{directory / 'floor-store.db'}")
    spec = MaintenanceSpec(targets=tuple(f"t{i}" for i in range(turns)), operations=(Operation.VACUUM,))
    children = store.create_maintenance(spec).children
    report = OperationReport("sqlite", 0.001, 8192, 4096, 1, 0, ("statement: VACUUM",))
    store.apply_batch([], [StartRequest(children[0].id, 1, "w")])

    def turns_one_by_one() -> None:
        for done, following in itertools.pairwise(children):
            result = ChildOutcome(done.id, 1, "w", JobStatus.COMPLETED, None, report)
            store.apply_batch([result], [StartRequest(following.id, 1, "w")])

    try:
        return per_item_ms(turns_one_by_one, len(children) - 1)
    finally:
        store.close()


async def _echo_server(port: int) -> None:
    async def echo(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message

    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        echo, request_deserializer=_identity, response_serializer=_identity
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Ping": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _round_trips(port: int, trips: int) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        ping = channel.stream_stream(ECHO_METHOD, request_serializer=_identity, response_deserializer=_identity)
        call: grpc.aio.StreamStreamCall[bytes, bytes] = ping(None)  # None: written with call.write
        await call.write(PAYLOAD)  # the first trip sets the stream up: not counted
        await call.read()
        started = time.perf_counter()
        for _ in range(trips):
            await call.write(PAYLOAD)
            await call.read()
        elapsed = time.perf_counter() - started
        await call.done_writing()
        return elapsed / trips * 1000


def grpc_floor(trips: int) -> float:
    """Milliseconds per round trip to an echo server in another process."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.floor", "--echo-server", str(port)])
    try:
        return asyncio.run(_round_trips(port, trips))
    finally:
        server.terminate()
        server.wait(10)


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--rows", type=int, default=200, help="rows per target (the small fleet's)")
    parser.add_argument("--trips", type=int, default=600)
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server:
        asyncio.run(_echo_server(args.echo_server))
        return 0
    figures: dict[str, list[float]] = {"direct": [], "engine": [], "store": [], "grpc": []}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="dbmaint-floor-") as scratch:
            direct, engine = sql_floor(Path(scratch), args.targets, args.rows)
            figures["direct"].append(direct)
            figures["engine"].append(engine)
            figures["store"].append(store_floor(Path(scratch), args.trips))
        figures["grpc"].append(grpc_floor(args.trips))
    print(f"SQL per operation, direct (bench.ops):           {spread(figures['direct'])}")
    print(f"SQL per operation, through the SQLite engine:    {spread(figures['engine'])}")
    print(f"store turn, one result + one start (SQLite):     {spread(figures['store'])}")
    print(f"bare grpc.aio round trip between two processes:  {spread(figures['grpc'])}")
    floor = [e + s + g for e, s, g in zip(figures["engine"], figures["store"], figures["grpc"], strict=True)]
    ratio = [f / d for f, d in zip(floor, figures["direct"], strict=True)]
    print(f"one-slot floor per child (engine + store + grpc): {spread(floor)}")
    print(
        f"floor / direct, before any scheduling cost:       {min(ratio):.2f} / {statistics.median(ratio):.2f} / "
        f"{max(ratio):.2f}x (issue target for the whole run: <= 2.0x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
