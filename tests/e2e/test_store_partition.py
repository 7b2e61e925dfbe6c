"""A network partition between the leader and its PostgreSQL job store (issue 14): the leader steps down, a
standby takes over, and nothing is lost.

Real processes on a fresh PostgreSQL job store. The first manager (the leader) reaches PostgreSQL through a
``TcpProxy`` the test breaks; the second (the standby) connects directly. The workers are given both managers and
fail over on their own. Two kinds of partition:

* cut: new connections go nowhere and the open ones are reset (the leader's driver sees errors);
* silent black hole: every byte is swallowed and ACKed by the proxy's kernel; nobody sees an error, so the
  leader must notice by its own watchdog (its lease's validity minus a margin), not by TCP.

Who wrote what is checked in the store itself: triggers the test installs record, for every write transaction
that changes the jobs, their changes or the workers (and every change of the lease row), the writer (its
``application_name``) and the lease's holder and term in force when it wrote. The old leader must have written
only under its own term, and nothing once the new term began; after the link heals it comes back as a standby.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dbmaint.local import ServiceProcess
from dbmaint.v1 import maintenance_pb2 as pb
from manager_service.server import WORKER_SERVICE
from tests.e2e.test_standby import (
    COMPLETED,
    NOT_SERVING,
    OPERATIONS,
    RUNNING,
    SERVING,
    STORE_LEASE,
    _health,
    _show,
)
from tests.support.polling import wait_for
from tests.support.processes import Cluster, cluster
from tests.support.proxy import TcpProxy
from tests.support.servers import fresh_postgres_database
from tests.support.targets import make_sqlite_targets
from tests.support.worker_logs import overlaps, spans, starts

pytestmark = pytest.mark.e2e

LEADER_APP, STANDBY_APP = "dbmaint_part_leader", "dbmaint_part_standby"
# Partition to step-down: what is left of the lease minus the watchdog's margin (at most the whole lease), plus
# the time for the health check to see it.
STEP_DOWN_BOUND = STORE_LEASE + 2
# Partition to the standby serving: the old lease lapses (at most a lease), the standby's next look (a third of
# it) and a session of the old leader idle in a transaction being ended by PostgreSQL; plus slack.
TAKEOVER_BOUND = STORE_LEASE + STORE_LEASE / 3 + 4

# Each VACUUM is slowed to this many seconds (ANALYZE is quick): a child runs through the partition.
VACUUM = 3.0

AUDIT = """
CREATE TABLE part_write_audit (
    seq bigserial PRIMARY KEY,
    app text NOT NULL,
    tbl text NOT NULL,
    op text NOT NULL,
    holder text,
    term integer,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION part_audit_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The writer holds the lease row FOR SHARE (its fence): the row read here is the one in force.
    INSERT INTO part_write_audit (app, tbl, op, holder, term)
    SELECT current_setting('application_name'), TG_TABLE_NAME, TG_OP, l.holder, l.term
    FROM (SELECT 1) AS one LEFT JOIN store_lease AS l ON true;
    RETURN NULL;
END $$;
CREATE FUNCTION part_audit_lease() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO part_write_audit (app, tbl, op, holder, term)
    VALUES (current_setting('application_name'), TG_TABLE_NAME, TG_OP, NEW.holder, NEW.term);
    RETURN NULL;
END $$;
CREATE TRIGGER part_audit AFTER INSERT OR UPDATE OR DELETE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION part_audit_statement();
CREATE TRIGGER part_audit AFTER INSERT OR UPDATE OR DELETE ON job_changes
    FOR EACH STATEMENT EXECUTE FUNCTION part_audit_statement();
CREATE TRIGGER part_audit AFTER INSERT OR UPDATE OR DELETE ON workers
    FOR EACH STATEMENT EXECUTE FUNCTION part_audit_statement();
CREATE TRIGGER part_audit AFTER UPDATE ON store_lease
    FOR EACH ROW EXECUTE FUNCTION part_audit_lease();
"""


@dataclass(frozen=True)
class Write:
    seq: int
    app: str
    tbl: str
    op: str
    holder: str | None
    term: int | None


@pytest.fixture
def pg_store() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_part") as url:
        yield url.render_as_string(hide_password=False)


def _as(url: str, app: str, via: TcpProxy | None = None) -> str:
    """``url`` with ``application_name`` set to ``app`` (and through ``via``, if given)."""
    parsed = make_url(url).update_query_dict({"application_name": app})
    if via is not None:
        parsed = parsed.set(host=via.host, port=via.port)
    return parsed.render_as_string(hide_password=False)


def _run_sql(url: str, sql: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _writes(url: str) -> list[Write]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT seq, app, tbl, op, holder, term FROM part_write_audit ORDER BY seq"))
            return [Write(*row) for row in rows]
    finally:
        engine.dispose()


def _manager_id(manager: ServiceProcess) -> str:
    found = re.search(r"dbmaint-manager (\w+) listening", manager.log())
    assert found, manager.log()
    return found.group(1)


def _first_vacuum(*workers: ServiceProcess) -> float | None:
    """The wall-clock time the first VACUUM started, from the workers' JSON logs (None: none yet)."""
    times = [
        datetime.fromisoformat(str(entry["time"])).timestamp()
        for worker in workers
        for entry in worker.json_lines()
        if str(entry.get("message", "")).startswith("started vacuum")
    ]
    return min(times) if times else None


@contextmanager
def _two_managers(tmp_path: Path, pg_store: str) -> Iterator[tuple[TcpProxy, Cluster, Cluster]]:
    """The leader-to-be ("a") reaches PostgreSQL through a proxy the test breaks; the standby ("b") directly."""
    with (
        TcpProxy(_host_port(pg_store)) as link,
        cluster(tmp_path / "a", store=_as(pg_store, LEADER_APP, via=link)) as old,
        cluster(tmp_path / "b", store=_as(pg_store, STANDBY_APP)) as new,
    ):
        yield link, old, new


@pytest.mark.parametrize("partition", ["cut", "blackhole"])
def test_a_leader_cut_off_from_its_store_steps_down_the_standby_finishes_the_work_and_it_comes_back_standing_by(
    tmp_path: Path, pg_store: str, partition: str
) -> None:
    targets = make_sqlite_targets(tmp_path / "targets", "t1", "t2", "t3")
    lease = ("--store-lease", str(STORE_LEASE), "--lease-timeout", "20")
    with _two_managers(tmp_path, pg_store) as (link, old, new):
        try:
            old.start_manager(*lease)
            _run_sql(pg_store, AUDIT)  # the schema is there once the first manager serves
            new.start_manager(*lease)
            old_id = _manager_id(old.manager) if old.manager else ""
            new_id = _manager_id(new.manager) if new.manager else ""
            both = f"{old.address},{new.address}"
            workers = [
                old.start_worker(
                    name, targets, "--manager", both, "--log-format", "json", faults=f"slow:vacuum={VACUUM:g}"
                )
                for name in ("w1", "w2")
            ]
            created = old.create(list(targets), OPERATIONS)
            old.wait_child(created.parent.id, lambda c: c.status == RUNNING)
            started = wait_for(lambda: _first_vacuum(*workers), timeout=20, message="no VACUUM started")
            # The partition comes while that VACUUM ends: its result reaches the leader after the partition and
            # before its step-down, so a write of the leader is in flight on the broken link when it steps down.
            time.sleep(max(0.0, started + VACUUM - 0.5 - time.time()))
            old_term = max(w.term or 0 for w in _writes(pg_store) if w.app == LEADER_APP)

            link.blackhole()
            if partition == "cut":
                link.cut()
            partitioned = time.monotonic()
            wait_for(lambda: old.health(WORKER_SERVICE) == NOT_SERVING, timeout=30, interval=0.02)
            stepped_down = time.monotonic() - partitioned
            wait_for(lambda: new.health(WORKER_SERVICE) == SERVING, timeout=30, interval=0.02)
            took_over = time.monotonic() - partitioned
            print(f"partition={partition}: step-down after {stepped_down:.2f}s, new leader after {took_over:.2f}s")
            assert old.manager is not None and new.manager is not None
            assert "stepped down" in old.manager.log()
            if partition == "blackhole":
                # No error reached it: its own watchdog fenced it.
                assert "stepped down: could not renew the job store lease" in old.manager.log()
            assert stepped_down < STEP_DOWN_BOUND, f"stepped down {stepped_down:.1f}s after the partition"
            assert took_over < TAKEOVER_BOUND, f"the standby took over {took_over:.1f}s after the partition"
            became = re.findall(r"became leader \(term (\d+)\)", new.manager.log())
            assert became and int(became[-1]) > old_term, new.manager.log()
            new_term = int(became[-1])

            done = new.wait_status(created.parent.id, COMPLETED, pb.JOB_STATUS_FAILED, timeout=40)
            assert done.job.status == COMPLETED, new.describe(created.parent.id)
            expected = len(targets) * len(OPERATIONS)
            progress = done.job.progress
            assert (progress.total, progress.succeeded, progress.failed, progress.cancelled) == (
                expected,
                expected,
                0,
                0,
            )
            assert (progress.pending, progress.running) == (0, 0)
            assert all(c.status == COMPLETED for c in done.children), new.describe(created.parent.id)
            runs_of = starts(*workers)
            assert {c.id for c in done.children} == set(runs_of), runs_of
            assert set(runs_of.values()) == {1}, f"a child ran twice: {runs_of}"
            runs = spans(*workers)
            assert {run.target for run in runs} == set(targets), [str(run) for run in runs]
            assert not overlaps(runs), [f"{a} / {b}" for a, b in overlaps(runs)]

            # The link heals, and the black-holed connections are cut: the old leader comes back as a standby.
            link.heal()
            link.cut()
            wait_for(
                lambda: old.get(created.parent.id).job.status == COMPLETED,
                timeout=20,
                message=lambda: (
                    f"the old leader does not read the store again:\n{old.manager.log() if old.manager else ''}"
                ),
            )
            assert _health(old) == (SERVING, NOT_SERVING, NOT_SERVING)
            assert _health(new) == (SERVING, SERVING, SERVING)
            assert old.manager.alive() and new.manager.alive()
            assert len(re.findall(r"became leader", old.manager.log())) == 1, old.manager.log()
            assert "Traceback" not in old.manager.log()

            writes = _writes(pg_store)
            by_old = [w for w in writes if w.app == LEADER_APP]
            by_new = [w for w in writes if w.app == STANDBY_APP]
            assert by_old and by_new, writes
            assert {(w.holder, w.term) for w in by_old} == {(old_id, old_term)}, by_old
            assert {(w.holder, w.term) for w in by_new} == {(new_id, new_term)}, by_new
            first_new = min(w.seq for w in by_new)
            assert max(w.seq for w in by_old) < first_new, "the old leader wrote after the new term began"
            assert {w.app for w in writes} == {LEADER_APP, STANDBY_APP}, writes
        except BaseException:
            print(_show(old, new))
            raise


def _host_port(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host or '127.0.0.1'}:{parsed.port or 5432}"


def test_a_manager_stopped_while_its_store_link_is_a_black_hole_exits_instead_of_waiting_for_it_forever(
    tmp_path: Path, pg_store: str
) -> None:
    """A store call on a black-holed link never returns (the proxy's kernel ACKs every byte: no keepalive or
    TCP timeout ends it). SIGTERM must still end the process, and cleanly: the stepped-down manager has nothing
    left to write."""
    lease = ("--store-lease", str(STORE_LEASE))
    with _two_managers(tmp_path, pg_store) as (link, old, new):
        try:
            old.start_manager(*lease)
            new.start_manager(*lease)
            link.blackhole()
            wait_for(lambda: new.health(WORKER_SERVICE) == SERVING, timeout=30, message="no takeover")
            assert old.manager is not None
            assert "stepped down" in old.manager.log()
            # Its renewal in flight when the link died is still waiting for an answer that never comes.
            assert "has not been answered" in old.manager.log()

            stopping = time.monotonic()
            code = old.manager.stop(timeout=20)
            took = time.monotonic() - stopping
            assert code == 0, f"the manager did not exit within 20s of SIGTERM:\n{old.manager.log()}"
            print(f"stopped {took:.1f}s after SIGTERM")
            assert _health(new) == (SERVING, SERVING, SERVING)
        except BaseException:
            print(_show(old, new))
            raise
