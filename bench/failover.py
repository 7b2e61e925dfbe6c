"""Manager failover time: kill -9 of the leader to the new leader serving, and to the first child it starts.

    python -m bench.failover [--kills 10] [--store-lease 6]

Two managers on one fresh PostgreSQL job store (the default ``--store-lease`` unless given), one worker given
both addresses (``--manager a,b``: it follows the leader on its own, no proxy) serving four SQLite targets, each
child slowed to 1 s by the worker's ``slow:vacuum`` fault so that work is always pending. Each round: a parent of
vacuum children, wait until one runs, kill -9 the leader, time until the other manager's WorkerService is
SERVING (takeover) and until the worker logs the first child start after the kill (first assignment by the new
leader); the killed manager is started again as the standby for the next round. Every parent must complete.
Prints min/median/max of both and the verdict against the issue's bound (first assignment under 10 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbmaint.cli.demo import make_demo_db
from dbmaint.local import LocalFleet, ServiceProcess, free_port, wait_until
from dbmaint.v1 import maintenance_pb2 as pb

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BOUND_SECONDS = 10.0
WORKER_SERVICE = "dbmaint.v1.WorkerService"
STORE = "dbmaint_bench_failover"


def admin(statement: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(statement.encode())


def serving(fleet: LocalFleet) -> bool:
    try:
        request = health_pb2.HealthCheckRequest(service=WORKER_SERVICE)
        status = health_pb2_grpc.HealthStub(fleet.channel).Check(request, timeout=1).status
    except Exception:
        return False
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def first_start_after(wall_time: float, worker: ServiceProcess) -> float | None:
    """The wall-clock time of the worker's first child start logged after ``wall_time``."""
    for line in worker.log_lines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("message", "").startswith("started ") and "job_id" in entry:
            at = datetime.fromisoformat(entry["time"]).timestamp()
            if at > wall_time:
                return at
    return None


def parent_status(fleet: LocalFleet, parent_id: str) -> int:
    return int(fleet.stub.GetJob(pb.GetJobRequest(id=parent_id), timeout=5).job.status)


def one_round(
    leader: LocalFleet, standby: LocalFleet, worker: ServiceProcess, targets: list[str]
) -> tuple[float, float]:
    """One kill -9 of ``leader``: (seconds to the takeover, seconds to the first child start); the parent must
    complete on the new leader, and the killed manager comes back as the standby."""
    request = pb.CreateMaintenanceRequest(targets=targets, operations=[pb.OPERATION_VACUUM])
    parent_id = leader.stub.CreateMaintenance(request, timeout=10).parent.id

    def running() -> bool | None:
        children = leader.stub.GetJob(pb.GetJobRequest(id=parent_id), timeout=5).children
        return any(child.status == pb.JOB_STATUS_RUNNING for child in children) or None

    wait_until(running, 30, "no child running")
    assert leader.manager is not None
    killed_process = leader.manager
    killed_process.kill9()
    killed, killed_wall = time.monotonic(), time.time()
    wait_until(lambda: serving(standby) or None, 30, "no takeover", interval=0.02)
    takeover = time.monotonic() - killed
    started = wait_until(lambda: first_start_after(killed_wall, worker), 60, "no child started")
    ended = (pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED)
    status = wait_until(
        lambda: ((found := parent_status(standby, parent_id)) in ended and found) or None, 120, "no end"
    )
    assert status == pb.JOB_STATUS_COMPLETED, f"the parent ended {pb.JobStatus.Name(status)}"
    leader.respawn(killed_process)  # back as the standby
    wait_until(lambda: leader.health() >= 0 or None, 30, "the killed manager did not come back")
    return takeover, started - killed_wall


def summary(name: str, values: list[float]) -> str:
    return f"{name}: min {min(values):.1f} s, median {statistics.median(values):.1f} s, max {max(values):.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--store-lease", type=float, default=None, help="default: the manager's own")
    args = parser.parse_args()
    admin(f"DROP DATABASE IF EXISTS {STORE} WITH (FORCE)")
    admin(f"CREATE DATABASE {STORE}")
    store = f"postgresql+psycopg://postgres@127.0.0.1:5432/{STORE}"
    lease = ("--store-lease", str(args.store_lease)) if args.store_lease else ()
    takeovers: list[float] = []
    first_starts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dbmaint-failover-") as tmp:
        root = Path(tmp)
        targets = {}
        for name in ("t1", "t2", "t3", "t4"):
            make_demo_db(root / f"{name}.db", rows=2_000)
            targets[name] = f"sqlite:///{root / name}.db"
        fleets = [LocalFleet(root / name, store_url=store, manager_port=free_port()) for name in ("a", "b")]
        for fleet in fleets:
            fleet.workdir.mkdir()
        try:
            fleets[0].start_manager(*lease)
            fleets[1].start_manager("--lease-timeout", "20", *lease)
            both = ",".join(fleet.address for fleet in fleets)
            worker = fleets[0].start_worker(
                "w1",
                "--manager",
                both,
                "--log-format",
                "json",
                "--allow-fault-injection",
                targets=targets,
                slots=1,
                env={"DBMAINT_FAULTS": "slow:vacuum=1"},
            )
            leader, standby = fleets
            for round_number in range(1, args.kills + 1):
                takeover, first_start = one_round(leader, standby, worker, list(targets))
                takeovers.append(takeover)
                first_starts.append(first_start)
                print(
                    f"kill {round_number}: took over after {takeover:.1f} s, first child started "
                    f"{first_start:.1f} s after the kill; parent completed",
                    flush=True,
                )
                leader, standby = standby, leader
        finally:
            for fleet in fleets:
                fleet.stop()
    admin(f"DROP DATABASE IF EXISTS {STORE} WITH (FORCE)")
    print(summary(f"takeover ({len(takeovers)} kills)", takeovers))
    print(summary("first child start after the kill", first_starts))
    met = max(first_starts) < BOUND_SECONDS
    verdict = "MET" if met else "MISSED"
    print(f"verdict: first assignment by the new leader under {BOUND_SECONDS:g} s in every kill: {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
