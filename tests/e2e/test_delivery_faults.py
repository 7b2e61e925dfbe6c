"""Delivery guarantees under real faults (issue 9): streams that hang up at the worst moment, manager restarts
in the middle of a run, cancels stored while a worker is away, and a run that processes die under.

Each test names the README promise it tries to break. Real manager and worker processes over TCP; every wait
polls with a deadline.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import grpc
import pytest
from psycopg import sql
from sqlalchemy.engine import URL

from dbmaint.local import ServiceProcess
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from tests.support.polling import run_async, wait_for
from tests.support.postgresql import connect, make_table, table_stats, worker_backends
from tests.support.processes import Cluster
from tests.support.targets import integrity_ok, make_sqlite_target

pytestmark = pytest.mark.e2e

ALL_OPERATIONS = [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE, pb.OPERATION_REINDEX, pb.OPERATION_OPTIMIZE]
COMPLETED = pb.JOB_STATUS_COMPLETED
CANCELLED = pb.JOB_STATUS_CANCELLED
RUNNING = pb.JOB_STATUS_RUNNING
TERMINAL = (COMPLETED, pb.JOB_STATUS_FAILED, CANCELLED)


def _targets(tmp_path: Path, names: Iterable[str], rows: int) -> dict[str, Path]:
    paths = {name: tmp_path / "targets" / f"{name}.db" for name in names}
    for path in paths.values():
        make_sqlite_target(path, rows=rows)
    return paths


def _status(value: int) -> str:
    return pb.JobStatus.Name(value)


def _terminal(fleet: Cluster, parent_id: str) -> pb.GetJobResponse | None:
    reply = fleet.get(parent_id)
    return reply if reply.job.status in TERMINAL else None


def _wait_succeeded(fleet: Cluster, parent_id: str, at_least: int, timeout: float = 90) -> pb.GetJobResponse:
    """Poll until at least ``at_least`` children of the parent have completed; returns that reading."""

    def probe() -> pb.GetJobResponse | None:
        reply = fleet.get(parent_id)
        return reply if reply.job.progress.succeeded >= at_least else None

    return wait_for(probe, timeout=timeout, interval=0.02, message=lambda: fleet.describe(parent_id)[:3000])


def _started_job_ids(workers: Iterable[ServiceProcess]) -> Counter[str]:
    """How many times the workers (``--log-format json``) started each child, over all their lives."""
    return Counter(
        str(line["job_id"])
        for worker in workers
        for line in worker.json_lines()
        if "job_id" in line and str(line["message"]).startswith("started ")
    )


# -- 1. a worker that hangs up right after its Hello --------------------------------------------------------------

HANG_UPS = 300
GHOST_TARGET = "t0"


# A client that reads slowly: its stream window of a few bytes holds the Welcome in flight until it reads.
SLOW_READER = [("grpc.http2.lookahead_bytes", 1), ("grpc.http2.bdp_probe", 0)]


async def _hello_then_hang_up(address: str, worker_ids: list[str], target: str) -> None:
    """Open one WorkerService.Connect stream per id, all at once, each sending a valid Hello and hanging up at
    once, at one of five moments: right after the write or a few milliseconds later on a slow-reading channel
    (the Welcome is still being sent), a few milliseconds after the write on an ordinary channel, right after
    reading the Welcome, or by closing its own channel right after the write (a process that dies)."""
    rng = random.Random(9)
    moments = 5
    slow = grpc.aio.insecure_channel(address, options=SLOW_READER)
    plain = grpc.aio.insecure_channel(address)

    async def one(index: int, worker_id: str) -> None:
        moment = index % moments
        own = grpc.aio.insecure_channel(address) if moment == 4 else None
        call = pb_grpc.WorkerServiceStub(own or (slow if moment < 2 else plain)).Connect()
        hello = pb.Hello(worker_id=worker_id, targets=[target], slots=2, version="ghost", accepts_batches=True)
        try:
            await call.write(pb.WorkerMessage(hello=hello))
            if moment in (1, 2):
                await asyncio.sleep(rng.uniform(0, 0.01))
            elif moment == 3:
                await call.read()  # the Welcome
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # already ended: a hang-up all the same
        if own is not None:
            await own.close(grace=None)
        else:
            call.cancel()

    try:
        # Connected first, so the slow reader's window is settled before the first stream opens.
        await asyncio.gather(slow.channel_ready(), plain.channel_ready())
        await asyncio.gather(*(one(i, w) for i, w in enumerate(worker_ids)))
    finally:
        await slow.close(grace=None)
        await plain.close(grace=None)


def _hang_up(fleet: Cluster, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(HANG_UPS)]
    run_async(_hello_then_hang_up(fleet.address, ids, GHOST_TARGET), timeout=60)
    return ids


def _still_listed(fleet: Cluster, ids: list[str], within: float = 10.0) -> list[str]:
    """The hung-up ids ListWorkers still lists once it has settled: polls until none is left or ``within``
    seconds passed (the manager may take a moment to notice a hang-up)."""
    deadline = time.monotonic() + within
    while True:
        listed = sorted(fleet.worker_ids() & set(ids))
        if not listed or time.monotonic() >= deadline:
            return listed
        time.sleep(0.1)


def test_workers_that_hang_up_right_after_hello_leave_no_session(fleet: Cluster) -> None:
    """Promise: no session outlives its stream, whatever the moment of the hang-up. Tries to break it with 300
    streams that send a valid Hello and hang up at once, at five different moments around the Welcome."""
    manager = fleet.start_manager()
    ids = _hang_up(fleet, "ghost")

    leaked = _still_listed(fleet, ids)

    assert manager.alive(), manager.log()
    assert not leaked, f"{len(leaked)} of {HANG_UPS} hung-up streams are still listed as workers: {leaked[:10]}"


def test_no_assignment_goes_to_a_worker_that_hung_up_after_hello(fleet: Cluster, tmp_path: Path) -> None:
    """Promise: work goes only to workers that are there. Tries to break it by creating work on the target that
    300 hung-up streams announced, once a real worker serves it too (the hung-up ones connected first and
    announced as many slots, so a leaked session would win the dispatcher's tie). Every child must complete at
    its first attempt on the real worker."""
    targets = _targets(tmp_path, [GHOST_TARGET], rows=2_000)
    # One attempt: a child given to a hung-up stream fails after one lease instead of three.
    fleet.start_manager("--lease-timeout", "3", "--max-attempts", "1")
    ids = _hang_up(fleet, "ghost")
    fleet.start_worker("real", targets, slots=2)
    _still_listed(fleet, ids)  # let the manager settle; the outcome is judged on the run below

    created = fleet.create([GHOST_TARGET], ALL_OPERATIONS)
    done = fleet.wait_status(created.parent.id, *TERMINAL, timeout=60)

    given_away = [
        f"{pb.Operation.Name(c.operation)} attempt={c.attempt} to {c.worker_id} ({_status(c.status)})"
        for c in done.children
        if c.attempt != 1 or c.worker_id != "real"
    ]
    assert not given_away, f"{len(given_away)} of 4 children were given to hung-up streams: {given_away}"
    assert done.job.status == COMPLETED, fleet.describe(created.parent.id)


def test_a_worker_can_reuse_the_id_of_a_stream_that_hung_up_after_hello(fleet: Cluster, tmp_path: Path) -> None:
    """Promise: a worker id is free again once its stream has ended. Tries to break it by starting a real
    worker with the id of one of 300 streams that hung up right after their Hello (one the manager still lists,
    if any: the worst case). It must connect, not be refused with ALREADY_EXISTS."""
    targets = _targets(tmp_path, [GHOST_TARGET], rows=200)
    fleet.start_manager()
    ids = _hang_up(fleet, "ghost")
    leaked = _still_listed(fleet, ids)
    reused = leaked[0] if leaked else ids[HANG_UPS // 2]

    worker = fleet.start_worker(reused, targets, wait_connected=False)

    wait_for(
        lambda: "connected to manager" in worker.log(),
        timeout=15,
        message=lambda: (
            f"worker {reused} (an id {len(leaked)} hung-up streams left listed) never connected:\n"
            f"{worker.log()[-3000:]}"
        ),
    )
    assert "ALREADY_EXISTS" not in worker.log()
    fleet.wait_worker(reused)


# -- 3. a graceful manager restart --------------------------------------------------------------------------------

RESTART_TARGETS = 300  # x 4 operations = 1,200 children, as in the issue


@pytest.mark.parametrize("store_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_sigterm_restart_of_the_manager_reruns_nothing(fleet: Cluster, tmp_path: Path) -> None:
    """Promise: a graceful restart (SIGTERM, as in a rolling deploy) re-runs nothing: results already received
    are applied, and no start is committed without its assignment reaching the worker. Tries to break it with
    1,200 children on 300 SQLite files, two workers with 8 slots each, and a SIGTERM restart on the same store
    when about 30% are done, and another at 60%: the run must finish with every child at attempt 1, and the
    workers' logs must show no child started twice."""
    names = [f"db{i:03d}" for i in range(RESTART_TARGETS)]
    targets = _targets(tmp_path, names, rows=200)
    fleet.start_manager("--lease-timeout", "15")
    workers = [fleet.start_worker(w, targets, "--log-format", "json", slots=8) for w in ("w1", "w2")]
    created = fleet.create(names, ALL_OPERATIONS)
    total = created.parent.progress.total
    assert total == 4 * RESTART_TARGETS

    for share in (3, 6):  # two restarts, at ~30% and ~60% done: a rolling deploy of two steps
        reply = _wait_succeeded(fleet, created.parent.id, total * share // 10)
        assert reply.job.progress.succeeded < total, "the run ended before the restart: make it longer"
        fleet.restart_manager(graceful=True)
    done = fleet.wait_status(created.parent.id, *TERMINAL, timeout=120)

    assert done.job.status == COMPLETED, fleet.describe(created.parent.id)[:4000]
    again = [
        f"{c.target}/{pb.Operation.Name(c.operation)} attempt={c.attempt}" for c in done.children if c.attempt > 1
    ]
    assert not again, (
        f"{len(again)} of {total} children ran a second attempt across two SIGTERM restarts: {again[:20]}"
    )
    assert [c.status for c in done.children] == [COMPLETED] * total
    started = _started_job_ids(workers)
    twice = {job_id: n for job_id, n in started.items() if n > 1}
    assert not twice, (
        f"{len(twice)} children were started more than once by the workers: {list(twice.items())[:20]}"
    )
    assert set(started) == {c.id for c in done.children}
    assert done.job.progress.succeeded == total


# -- 4. a cancel stored while the worker is away ------------------------------------------------------------------

NATURAL_VACUUM = 40.0  # seconds the injected fault makes the SQLite VACUUM take unless it is interrupted
WITHIN_RECONNECT = 10.0  # seconds after the worker reconnects by which the child must be CANCELLED


def _cancel_while_the_worker_is_away(
    fleet: Cluster, worker: ServiceProcess, parent_id: str, how: str
) -> pb.GetJobResponse:
    """Freeze the worker (SIGSTOP: its operation and its connections stay), restart the manager on the same store
    (``how``: kill -9, SIGTERM, or kill -9 and once more right after the cancel is stored), cancel the parent
    there before the worker is back, thaw the worker and wait for it to reconnect; returns the parent once it is
    terminal (at most ``WITHIN_RECONNECT`` later)."""
    worker.freeze()
    try:
        fleet.restart_manager(graceful=how == SIGTERM)
        answer = fleet.stub.CancelJob(pb.CancelJobRequest(id=parent_id, reason="stop it"), timeout=10)
        assert answer.job.cancel_requested
        assert worker.name not in fleet.worker_ids(), "the cancel must be stored before the worker is back"
        if how == KILL_AFTER_CANCEL:
            fleet.restart_manager(graceful=False)  # stored, never sent: the next manager has only the store
    finally:
        worker.thaw()
    fleet.wait_worker(worker.name)
    return wait_for(
        lambda: _terminal(fleet, parent_id),
        timeout=WITHIN_RECONNECT,
        message=lambda: (
            f"not cancelled within {WITHIN_RECONNECT:g}s of the worker reconnecting: {fleet.describe(parent_id)}"
        ),
    )


KILL, SIGTERM, KILL_AFTER_CANCEL = "manager-killed", "manager-sigterm", "manager-killed-again-after-the-cancel"


@pytest.mark.parametrize("how", [KILL, SIGTERM, KILL_AFTER_CANCEL])
def test_a_cancel_stored_while_the_worker_is_away_reaches_the_running_vacuum(
    fleet: Cluster, tmp_path: Path, how: str
) -> None:
    """Promise: a cancel reaches the running statement, even across a manager restart. Tries to break it by
    storing the cancel when the new manager has not seen the worker yet: a 40 s VACUUM runs, the worker is
    frozen (SIGSTOP), the manager is killed -9 (or stopped with SIGTERM) and restarted on the same store, the
    parent is cancelled (in a third variant the manager is then killed -9 again: the cancel is stored and was
    never sent), then the worker thaws and reconnects listing the child in its Hello. The VACUUM must be
    interrupted within seconds and the child end CANCELLED."""
    targets = _targets(tmp_path, ["slowpoke"], rows=20_000)
    fleet.start_manager("--lease-timeout", "15")
    worker = fleet.start_worker("w1", targets, faults=f"slow:vacuum={NATURAL_VACUUM:g}")
    created = fleet.create(["slowpoke"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
    vacuum_id = created.children[0].id
    wait_for(lambda: "started vacuum" in worker.log(), timeout=20, message=lambda: worker.log())
    began = time.monotonic()

    done = _cancel_while_the_worker_is_away(fleet, worker, created.parent.id, how)

    stopped_after = time.monotonic() - began
    assert done.job.status == CANCELLED, fleet.describe(created.parent.id)
    vacuum, analyze = done.children
    assert vacuum.id == vacuum_id and vacuum.status == CANCELLED and vacuum.attempt == 1
    assert analyze.status == CANCELLED and analyze.started_at.seconds == 0, "the pending child never ran"
    assert "vacuum cancelled" in worker.log() and "vacuum completed" not in worker.log(), worker.log()[-3000:]
    assert stopped_after < NATURAL_VACUUM - 10, f"the VACUUM stopped only {stopped_after:.1f}s after it began"
    assert integrity_ok(targets["slowpoke"])


@pytest.mark.parametrize("how", [KILL, SIGTERM])
def test_a_cancel_stored_while_the_worker_is_away_stops_a_real_postgresql_vacuum(
    fleet: Cluster, postgres_url: URL, how: str
) -> None:
    """Promise: as above, on a real PostgreSQL VACUUM rather than an injected delay: the database throttles it
    (``vacuum_cost_delay`` 100 ms, ``vacuum_cost_limit`` 1: about a minute on this table's dead rows), it
    runs on the server while the worker is frozen and the manager restarts, and the cancel stored meanwhile must
    stop it on the server once the worker is back: the child ends CANCELLED, no statement of the worker is
    left active, and the table was never vacuumed."""
    make_table(postgres_url, "orders", 5_000, delete="even")
    with connect(postgres_url) as conn:
        database = sql.Identifier(str(postgres_url.database))
        conn.execute(sql.SQL("ALTER DATABASE {} SET vacuum_cost_delay = 100").format(database))
        conn.execute(sql.SQL("ALTER DATABASE {} SET vacuum_cost_limit = 1").format(database))
    fleet.start_manager("--lease-timeout", "15")
    worker = fleet.start_worker("w1", {"pg": postgres_url})
    created = fleet.create(["pg"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
    wait_for(
        lambda: any(state == "active" and "VACUUM" in q.upper() for _, state, q in worker_backends(postgres_url)),
        timeout=20,
        message=lambda: f"the VACUUM never showed up in pg_stat_activity: {worker.log()[-3000:]}",
    )

    done = _cancel_while_the_worker_is_away(fleet, worker, created.parent.id, how)

    assert done.job.status == CANCELLED, fleet.describe(created.parent.id)
    vacuum, analyze = done.children
    assert vacuum.status == CANCELLED and vacuum.attempt == 1, fleet.describe(created.parent.id)
    assert analyze.status == CANCELLED and analyze.started_at.seconds == 0, "the pending child never ran"
    wait_for(
        lambda: not [b for b in worker_backends(postgres_url) if b[1] == "active"],
        timeout=5,
        message=lambda: f"the VACUUM still runs on the server: {worker_backends(postgres_url)}",
    )
    assert "vacuum cancelled" in worker.log(), worker.log()[-3000:]
    assert table_stats(postgres_url, "public.orders")["last_vacuum"] is None, "the VACUUM ran to its end"


# -- the kill loop ------------------------------------------------------------------------------------------------

LOOP_TARGETS = 40  # x 4 operations = 160 children
WORKER_KILLS = 8
MANAGER_KILLS = 4
LOOP_BUDGET = 170.0  # seconds from the parent's creation to its end, kills included


def _contents(path: Path) -> tuple[list[tuple[str, str]], int]:
    """The schema objects (type, name; not SQLite's own, such as ANALYZE's sqlite_stat1) and the row count of a
    target, read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        objects = conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        (rows,) = conn.execute("SELECT count(*) FROM items").fetchone()
        return [(str(t), str(n)) for t, n in objects], int(rows)
    finally:
        conn.close()


@dataclass(frozen=True)
class Span:
    """One attempt as a worker ran it, from its log: from "started" to its end line, or to the kill -9 that
    ended the process (the moment before the signal was sent: a conservative end)."""

    target: str
    job_id: str
    attempt: int
    worker: str
    start: datetime
    end: datetime


def _spans(worker: ServiceProcess, killed_at: list[datetime]) -> list[Span]:
    """The attempts a worker process ran over all its lives (one per start line in its log; life ``k`` ended at
    ``killed_at[k]``, the last one is still running)."""
    spans: list[Span] = []
    open_: dict[tuple[str, int], tuple[str, datetime]] = {}
    lives = 0

    waiting: set[tuple[str, int]] = set()  # started, but waiting for the target's resource lock: not running

    def end_life() -> None:
        end = killed_at[lives - 1] if lives - 1 < len(killed_at) else datetime.max.replace(tzinfo=UTC)
        for (job_id, attempt), (target, start) in open_.items():
            if (job_id, attempt) not in waiting:
                spans.append(Span(target, job_id, attempt, worker.name, start, end))
        open_.clear()
        waiting.clear()

    for line in worker.json_lines():
        message = str(line["message"])
        if message.startswith("dbmaint-worker "):
            if lives:
                end_life()
            lives += 1
            continue
        if "job_id" not in line:
            continue
        key = (str(line["job_id"]), int(str(line["attempt"])))
        at = datetime.fromisoformat(str(line["time"]))
        if message.startswith("started "):
            open_[key] = (str(line["target"]), at)
        elif key in open_ and message.startswith("waiting for the resource lock"):
            waiting.add(key)
        elif key in open_ and message.startswith("no longer waiting"):
            waiting.discard(key)
            open_[key] = (open_[key][0], at)  # the statement starts now
        elif key in open_ and OUTCOME_LINE.match(message):
            target, start = open_.pop(key)
            if key not in waiting:
                spans.append(Span(target, key[0], key[1], worker.name, start, at))
            waiting.discard(key)
    end_life()
    return spans


OUTCOME_LINE = re.compile(r"^(vacuum|analyze|reindex|optimize) (completed|cancelled|failed)\b")


def _overlaps(spans: Iterable[Span]) -> list[str]:
    """Pairs of attempts that ran on one target at the same time."""
    found: list[str] = []
    by_target: dict[str, list[Span]] = {}
    for span in spans:
        by_target.setdefault(span.target, []).append(span)
    for target, mine in by_target.items():
        mine.sort(key=lambda s: s.start)
        for i, earlier in enumerate(mine):
            for later in mine[i + 1 :]:
                if later.start >= earlier.end:
                    break
                found.append(
                    f"{target}: {earlier.job_id[:8]}#{earlier.attempt} on {earlier.worker} "
                    f"[{earlier.start:%H:%M:%S.%f}-{earlier.end:%H:%M:%S.%f}] and "
                    f"{later.job_id[:8]}#{later.attempt} on {later.worker} from {later.start:%H:%M:%S.%f}"
                )
    return found


def _outcome_lines(workers: Iterable[ServiceProcess]) -> int:
    """How many results the workers have logged (each is sent to the manager right after its line)."""
    return sum(1 for worker in workers for line in worker.json_lines() if OUTCOME_LINE.match(str(line["message"])))


def _wait_for_a_fresh_result(
    fleet: Cluster, workers: Iterable[ServiceProcess], parent_id: str, timeout: float
) -> None:
    """Poll until a worker logs a result it had not logged when called (it is sent right after its line)."""
    workers = list(workers)
    reported = _outcome_lines(workers)
    wait_for(
        lambda: _outcome_lines(workers) > reported,
        timeout=timeout,
        interval=0.01,
        message=lambda: f"no result reported: {fleet.describe(parent_id)}",
    )


def _wait_for_a_busy_worker(
    fleet: Cluster, parent_id: str, workers: dict[str, ServiceProcess], timeout: float
) -> str:
    """Poll until a worker is running an operation (its log says it started the child's attempt and nothing
    after); returns its name."""
    return wait_for(
        lambda: _busy_worker(fleet, parent_id, workers),
        timeout=timeout,
        interval=0.02,
        message=lambda: f"nothing running: {fleet.describe(parent_id)}",
    )


def _busy_worker(fleet: Cluster, parent_id: str, workers: dict[str, ServiceProcess]) -> str | None:
    reply = fleet.get(parent_id)
    for child in reply.children:
        if child.status != RUNNING or child.worker_id not in workers:
            continue
        mine = [
            str(line["message"])
            for line in workers[child.worker_id].json_lines()
            if line.get("job_id") == child.id and line.get("attempt") == child.attempt
        ]
        if mine and mine[-1].startswith("started "):
            return child.worker_id
    return None


def test_a_run_completes_exactly_while_workers_and_the_manager_are_killed(fleet: Cluster, tmp_path: Path) -> None:
    """Promise: nothing is lost when a process dies, each result counts once, one operation at a time per target
    in the order requested, and the targets stay intact. Tries to break it with 160 children (40 SQLite files x
    4 operations), three workers with 2 slots each whose operations are slowed so kills land mid-operation, lease
    3 s, 10 attempts allowed, and 12 kills -9 spaced over the run: a worker 8 times (one running a child, restarted
    at once with the same id) and the manager 4 times (restarted at once on the same port and store)."""
    names = [f"db{i:02d}" for i in range(LOOP_TARGETS)]
    targets = _targets(tmp_path, names, rows=2_000)
    before = {name: _contents(path) for name, path in targets.items()}
    fleet.start_manager("--lease-timeout", "3", "--heartbeat-interval", "0.5", "--max-attempts", "10")
    workers = {
        w: fleet.start_worker(w, targets, "--log-format", "json", faults="slow:*=1", slots=2)
        for w in ("w1", "w2", "w3")
    }
    created = fleet.create(names, ALL_OPERATIONS)
    parent_id, total = created.parent.id, created.parent.progress.total
    kills = ["worker", "worker", "manager"] * MANAGER_KILLS
    assert kills.count("worker") == WORKER_KILLS
    deadline = time.monotonic() + LOOP_BUDGET
    killed_at: dict[str, list[datetime]] = {name: [] for name in workers}

    def left() -> float:
        return max(1.0, min(30.0, deadline - time.monotonic()))

    succeeded = 0
    for number, victim in enumerate(kills, 1):
        # Space the kills: some children finish between two of them.
        wanted = succeeded + 6
        if victim == "manager":
            # The worst moment: a worker has just reported a result, which may not be committed yet.
            _wait_succeeded(fleet, parent_id, wanted, timeout=left())
            _wait_for_a_fresh_result(fleet, workers.values(), parent_id, timeout=left())
            fleet.restart_manager(graceful=False)
        else:
            # Mid-operation: a worker that has started an operation and not finished it.
            _wait_succeeded(fleet, parent_id, wanted, timeout=left())
            name = _wait_for_a_busy_worker(fleet, parent_id, workers, timeout=left())
            killed_at[name].append(datetime.now(UTC))
            workers[name].kill9()
            workers[name] = fleet.respawn(workers[name])
        succeeded = fleet.get(parent_id).job.progress.succeeded
        assert succeeded < total, f"the run ended by kill {number}: make it longer"

    done = fleet.wait_status(parent_id, *TERMINAL, timeout=max(1.0, deadline - time.monotonic()))

    summary = Counter(_status(c.status) for c in done.children)
    assert done.job.status == COMPLETED, f"{summary}\n{fleet.describe(parent_id)}"
    assert [c.status for c in done.children] == [COMPLETED] * total, summary
    progress = done.job.progress
    assert (progress.total, progress.succeeded) == (total, total), progress
    assert (progress.pending, progress.running, progress.failed, progress.cancelled) == (0, 0, 0, 0), progress
    for name in names:
        mine = sorted((c for c in done.children if c.target == name), key=lambda c: c.position)
        assert [c.operation for c in mine] == ALL_OPERATIONS
        for earlier, later in pairwise(mine):
            assert earlier.finished_at.ToDatetime() <= later.started_at.ToDatetime(), (
                f"{name}: {pb.Operation.Name(later.operation)} started before "
                f"{pb.Operation.Name(earlier.operation)} finished"
            )
    spans = [span for name, worker in workers.items() for span in _spans(worker, killed_at[name])]
    assert {s.job_id for s in spans} == {c.id for c in done.children}
    overlaps = _overlaps(spans)
    assert not overlaps, f"{len(overlaps)} times two attempts ran on one target at once: {overlaps[:10]}"
    for name, path in targets.items():
        assert integrity_ok(path), f"{name} is damaged"
        assert _contents(path) == before[name], f"{name} lost tables or rows"
