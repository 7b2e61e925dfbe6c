"""dbmaint's table parallelism against ``vacuumdb --jobs``: the same plain VACUUM of the same tables, timed.

    python -m bench.vacuumdb [--tables 16] [--rows 1300000] [--jobs 4] [--runs 3]

Builds a template database once: TABLES tables of ROWS rows (autovacuum off per table; a primary key and an
index on a text column), half of each deleted, so every table has dead tuples. Before each run the run database
is re-created from that template (the same data and the same dead tuples every time). Then, alternating, RUNS
times each: ``vacuumdb -h 127.0.0.1 -U postgres -j JOBS -d <db>`` and a dbmaint manager + 1 worker
(``dbmaint.local.LocalFleet``, started once) running one VACUUM child with ``parallel JOBS`` (wall time from
CreateMaintenance to the child's end, polled every 20 ms).
Prints min/median/max of each, the ratio of the medians and the verdict against the target (dbmaint <= 1.15x).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
from psycopg import sql

from dbmaint.local import LocalFleet
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
TARGET_RATIO = 1.15
# Calibrated so that vacuumdb -j 4 takes at least 5 s on the 2-core development machine.
ROWS = 1_300_000
TERMINAL = (pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED)


def admin(statement: sql.Composed) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(statement)


def template_of(database: str) -> str:
    return f"{database}_template"


def build_template(database: str, tables: int, rows: int) -> None:
    """The template database: ``tables`` tables of ``rows`` rows with half of them deleted (dead tuples)."""
    template = template_of(database)
    admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template)))
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={template}", autocommit=True) as conn:
        for index in range(tables):
            table = sql.Identifier(f"t{index:02d}")
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id int PRIMARY KEY, payload text NOT NULL) WITH (autovacuum_enabled = off)"
                ).format(table)
            )
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT i, md5(i::text) FROM generate_series(1, %s) AS i").format(table),
                (rows,),
            )
            # A second index, on random text: VACUUM's index pass is most of its work, as on real tables.
            conn.execute(sql.SQL("CREATE INDEX ON {} (payload)").format(table))
            conn.execute(sql.SQL("DELETE FROM {} WHERE id % 2 = 0").format(table))


def fresh_database(name: str) -> None:
    """``name`` re-created as a file copy of the template: the same data and dead tuples for every run."""
    admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin(
        sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template_of(name))
        )
    )


def time_vacuumdb(database: str, jobs: int) -> float:
    started = time.perf_counter()
    argv = ["vacuumdb", "-h", "127.0.0.1", "-U", "postgres", "-j", str(jobs), "-d", database, "-q"]
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def time_dbmaint(api: pb_grpc.MaintenanceServiceStub, target: str, jobs: int) -> float:
    request = pb.CreateMaintenanceRequest(targets=[target], operations=[pb.OPERATION_VACUUM], parallel=jobs)
    started = time.perf_counter()
    created = api.CreateMaintenance(request, timeout=30)
    child_id = created.children[0].id
    while True:
        job = api.GetJob(pb.GetJobRequest(id=child_id), timeout=30).job
        if job.status in TERMINAL:
            elapsed = time.perf_counter() - started
            break
        time.sleep(0.02)
    if job.status != pb.JOB_STATUS_COMPLETED:
        raise RuntimeError(f"the dbmaint child ended {pb.JobStatus.Name(job.status)}: {job.error}")
    return elapsed


def line(name: str, values: list[float]) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{name:<34} min {low:8.2f}s  median {mid:8.2f}s  max {high:8.2f}s"


def compare(runs: int, database: str, jobs: int, api: pb_grpc.MaintenanceServiceStub) -> int:
    """The alternating runs, their figures and the verdict (printed, not the exit code)."""
    timings: dict[str, list[float]] = {"vacuumdb": [], "dbmaint": []}
    runners: dict[str, Callable[[], float]] = {
        "vacuumdb": lambda: time_vacuumdb(database, jobs),
        "dbmaint": lambda: time_dbmaint(api, "bench", jobs),
    }
    for run in range(runs):
        for name, runner in runners.items():
            fresh_database(database)
            seconds = runner()
            timings[name].append(seconds)
            print(f"run {run + 1} {name}: {seconds:.2f}s", flush=True)
    print(line(f"vacuumdb -j {jobs}", timings["vacuumdb"]))
    print(line(f"dbmaint parallel {jobs} (1 worker)", timings["dbmaint"]))
    ratio = statistics.median(timings["dbmaint"]) / statistics.median(timings["vacuumdb"])
    met = ratio <= TARGET_RATIO
    verdict = "MET" if met else "NOT MET"
    print(f"ratio dbmaint / vacuumdb (medians): {ratio:.2f}x -- verdict: {verdict} (target <= {TARGET_RATIO}x)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tables", type=int, default=16)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", default="dbmaint_bench_vacuumdb")
    args = parser.parse_args()
    print(f"building {args.tables} tables of {args.rows:,} rows (half deleted)", flush=True)
    build_template(args.database, args.tables, args.rows)
    target = f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.database}"
    with tempfile.TemporaryDirectory(prefix="dbmaint-vacuumdb-") as workdir:
        fleet = LocalFleet(Path(workdir))
        try:
            fleet.start_manager("--log-level", "WARNING")
            fleet.start_worker("w1", "--log-level", "WARNING", targets={"bench": target})
            with grpc.insecure_channel(fleet.address) as channel:
                api = pb_grpc.MaintenanceServiceStub(channel)  # type: ignore[no-untyped-call]
                return compare(args.runs, args.database, args.jobs, api)
        finally:
            fleet.stop(timeout=30)
            admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(args.database)))
            admin(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(template_of(args.database))
                )
            )


if __name__ == "__main__":
    raise SystemExit(main())
