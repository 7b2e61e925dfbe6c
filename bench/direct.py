"""The direct runner: the same SQL from a ``multiprocessing`` pool, the floor dbmaint is compared with.

One task per target (its four operations in order, each on its own autocommit connection: ``bench.ops``),
handed out one at a time (``imap_unordered``, chunksize 1) to a pool of P processes. The pool is started
(``spawn``) and warmed up before the clock starts; the clock stops when the last result is back.
CPU: the pool's processes (``/proc/<pid>/stat``) and this process (``getrusage``), before and after.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from functools import partial

from bench import ops
from bench.model import RunResult, vacuum_bytes
from bench.procs import CpuMeter
from bench.workload import Fleet


def _warm(_: int) -> int:
    time.sleep(0.05)
    return 0


def run_once(
    fleet: Fleet, processes: int, size: str, run: int, operations: Sequence[str] = ops.OPERATIONS
) -> RunResult:
    runner = f"direct-p{processes}"
    paths = [str(path) for path in fleet.targets.values()]
    children = len(paths) * len(operations)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.map(_warm, range(processes * 2), chunksize=1)
        pids = [child.pid for child in multiprocessing.active_children() if child.pid is not None]
        meter = CpuMeter({f"pool-{i + 1}": pid for i, pid in enumerate(pids)})
        task = partial(ops.run_target, operations=tuple(operations))
        meter.start()
        started = time.perf_counter()
        records = [record for batch in pool.imap_unordered(task, paths, chunksize=1) for record in batch]
        wall = time.perf_counter() - started
        cpu = meter.stop()
    before, after = vacuum_bytes(records)
    return RunResult(
        runner=runner,
        size=size,
        run=run,
        children=children,
        completed=len(records),
        wall_seconds=wall,
        cpu_seconds=cpu,
        operation_seconds=sum(record["seconds"] for record in records),
        vacuum_bytes_before=before,
        vacuum_bytes_after=after,
        details={"setup": {"processes": processes}, "other_cpu_seconds": meter.other_seconds},
    )
