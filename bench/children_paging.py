"""Measure reads of a 10,000-child parent (issue 10's scale targets on reads); prints figures, asserts nothing.

    python -m bench.children_paging [--runs 3] [--targets 2500] [--operations 4]

Starts a manager on a SQLite store (no workers: the children stay PENDING), then, RUNS times each:
CreateMaintenance of TARGETS x OPERATIONS children, GetJob of the parent (the default page of 500; the largest
page of 5,000; the last page by token; a filter that matches no child, which walks the parent's index), and
``dbmaint get PARENT`` as a new process (process start included). Prints min/median/max of each.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc

from dbmaint.local import LocalFleet
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc

T = TypeVar("T")
OPERATIONS = (pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE, pb.OPERATION_REINDEX, pb.OPERATION_OPTIMIZE)
BIN = Path(sys.executable).parent


def _timed(call: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = call()
    return 1000 * (time.perf_counter() - started), result


def _line(name: str, values: list[float], unit: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{name:<58} min {low:>10,.1f}  median {mid:>10,.1f}  max {high:>10,.1f} {unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--targets", type=int, default=2500)
    parser.add_argument("--operations", type=int, default=4, choices=range(1, 5))
    args = parser.parse_args()
    children = args.targets * args.operations
    with tempfile.TemporaryDirectory(prefix="dbmaint-paging-") as workdir:
        fleet = LocalFleet(Path(workdir))
        try:
            fleet.start_manager(
                *("--max-targets", str(args.targets), "--max-children", str(children), "--log-level", "WARNING")
            )
            return _measure(fleet.address, args.runs, args.targets, args.operations)
        finally:
            fleet.stop(timeout=30)


def _measure(address: str, runs: int, targets: int, operations: int) -> int:
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(address, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        api = pb_grpc.MaintenanceServiceStub(channel)  # type: ignore[no-untyped-call]
        names = [f"t{i:05d}" for i in range(targets)]
        request = pb.CreateMaintenanceRequest(targets=names, operations=OPERATIONS[:operations])
        figures: dict[str, list[float]] = {}

        def record(name: str, value: float) -> None:
            figures.setdefault(name, []).append(value)

        parents = []
        for _ in range(runs):
            ms, created = _timed(lambda: api.CreateMaintenance(request, timeout=60))
            record("CreateMaintenance ms", ms)
            record("CreateMaintenance bytes", created.ByteSize())
            parents.append(created)
        parent = parents[0]
        parent_id = parent.parent.id
        print(f"parent {parent_id}: {parent.parent.progress.total:,} children", flush=True)
        for _ in range(runs):
            ms, got = _timed(lambda: api.GetJob(pb.GetJobRequest(id=parent_id), timeout=60))
            record("GetJob default page (500) ms", ms)
            record("GetJob default page (500) bytes", got.ByteSize())
            ms, big = _timed(
                lambda: api.GetJob(pb.GetJobRequest(id=parent_id, children_page_size=5000), timeout=60)
            )
            record("GetJob page of 5,000 ms", ms)
            record("GetJob page of 5,000 bytes", big.ByteSize())
            rest = pb.GetJobRequest(
                id=parent_id, children_page_size=5000, children_page_token=big.next_children_page_token
            )
            ms, last = _timed(functools.partial(api.GetJob, rest, timeout=60))
            assert not last.next_children_page_token and last.children[-1].position == len(names) * operations - 1
            record("GetJob last page of 5,000 (by token) ms", ms)
            ms, none = _timed(
                lambda: api.GetJob(
                    pb.GetJobRequest(id=parent_id, children_status=[pb.JOB_STATUS_RUNNING]), timeout=60
                )
            )
            assert not none.children
            record("GetJob filter matching no child (walks the index) ms", ms)
            started = time.perf_counter()
            done = subprocess.run(
                [str(BIN / "dbmaint"), "--manager", address, "get", parent_id],
                capture_output=True,
                text=True,
                env={**os.environ, "COLUMNS": "200"},
            )
            record("dbmaint get PARENT wall ms (process start included)", 1000 * (time.perf_counter() - started))
            assert done.returncode == 0, done.stderr
        started = time.perf_counter()
        listing = subprocess.run(
            [str(BIN / "dbmaint"), "--manager", address, "get", parent_id, "--children"],
            capture_output=True,
            text=True,
        )
        record("dbmaint get PARENT --children wall ms (once)", 1000 * (time.perf_counter() - started))
        assert listing.returncode == 0, listing.stderr
        print(f"dbmaint get PARENT printed {len(done.stdout.splitlines())} lines; the last:")
        print("  " + done.stdout.splitlines()[-1])
        for name, values in figures.items():
            unit = "bytes" if name.endswith("bytes") else "ms"
            print(_line(name.removesuffix(" ms").removesuffix(" bytes"), values, unit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
