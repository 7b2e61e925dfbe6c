"""The Celery runner: the same maintenance as a Celery 5 chord (``bench.celery_app``), Redis as broker and
result backend (database 15 of the local Redis, flushed before every run).

The workers: as many ``celery worker`` processes as dbmaint has workers, each with ``--concurrency`` equal to
dbmaint's slots per worker (default: 2 processes x concurrency 1, the closest match to dbmaint's two
single-slot workers), default prefork pool, started and answering ``ping`` before the clock starts. The clock
runs from ``apply_async`` of the chord to the client holding its result. CPU: every worker's process tree
(the main process and its pool children), ``redis-server`` (when its /proc entry is readable) and this
process, before and after.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import ops
from bench.model import RunResult, vacuum_bytes
from bench.procs import CpuMeter, findings
from bench.workload import Fleet
from dbmaint.local import ServiceProcess, clean_env, stop_all, wait_until

DEFAULT_URL = "redis://127.0.0.1:6379/15"
REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 1800.0


def unavailable(url: str = DEFAULT_URL) -> str | None:
    """Why the Celery runner cannot run here (None: it can)."""
    missing = [name for name in ("celery", "redis") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install celery redis)"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        return f"Redis at {url} is unreachable: {error}"
    return None


def _redis_pid(url: str) -> int | None:
    import redis

    info: Any = redis.Redis.from_url(url).info("server")
    pid = int(info.get("process_id", 0))
    return pid if pid and Path(f"/proc/{pid}/stat").exists() else None


def run_once(
    fleet: Fleet,
    workdir: Path,
    size: str,
    run: int,
    workers: int = 2,
    concurrency: int = 1,
    operations: Sequence[str] = ops.OPERATIONS,
    url: str = DEFAULT_URL,
    timeout: float = DEFAULT_TIMEOUT,
) -> RunResult:
    import redis

    os.environ["BENCH_CELERY_URL"] = url  # read when bench.celery_app is imported (first time only)
    from bench import celery_app

    if url != celery_app.URL:
        raise RuntimeError(f"bench.celery_app was already configured for {celery_app.URL}, not {url}")

    redis.Redis.from_url(url).flushdb()
    workdir.mkdir(parents=True, exist_ok=True)
    env = clean_env({"BENCH_CELERY_URL": url, "PYTHONPATH": str(REPO_ROOT)})
    services = [
        ServiceProcess(
            f"celery-{index}",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.celery_app",
                "worker",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "WARNING",
                "--hostname",
                f"bench{index}@%h",
            ],
            workdir / f"celery-{index}.log",
            env=env,
        ).start()
        for index in range(1, workers + 1)
    ]
    try:

        def all_answer() -> bool:
            for service in services:
                service.check_alive()
            replies = celery_app.app.control.ping(timeout=0.5)
            names = {name.split("@")[0] for reply in replies for name in reply}
            return names >= {f"bench{i}" for i in range(1, workers + 1)}

        wait_until(all_answer, START_TIMEOUT, "the Celery workers did not all answer ping")
        roots = {service.name: service.pid for service in services}
        redis_pid = _redis_pid(url)
        if redis_pid is not None:
            roots["redis-server"] = redis_pid
        paths = [str(path) for path in fleet.targets.values()]
        signature = celery_app.maintenance(paths, list(operations))
        meter = CpuMeter(roots)
        meter.start()
        started = time.perf_counter()
        result = signature.apply_async()
        records: list[ops.OpRecord] = result.get(timeout=timeout)
        wall = time.perf_counter() - started
        cpu = meter.stop()
    finally:
        exit_codes = stop_all(services)
    before, after = vacuum_bytes(records)
    found = {service.name: lines for service in services if (lines := findings(service))}
    return RunResult(
        runner="celery",
        size=size,
        run=run,
        children=len(paths) * len(operations),
        completed=len(records),
        wall_seconds=wall,
        cpu_seconds=cpu,
        operation_seconds=sum(record["seconds"] for record in records),
        vacuum_bytes_before=before,
        vacuum_bytes_after=after,
        details={
            "setup": {"workers": workers, "concurrency": concurrency, "pool": "prefork"},
            "redis_cpu_measured": redis_pid is not None,
            "other_cpu_seconds": meter.other_seconds,
            "exit_codes": exit_codes,
            "log_findings": found,
        },
    )
