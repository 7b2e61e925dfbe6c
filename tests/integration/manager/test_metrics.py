"""The manager's /metrics endpoint: the counters, the histogram and the scrape-time gauges move when a job runs;
the leadership metrics follow who holds the job store lease."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.manager import Manager, eventually, running_manager
from tests.support.servers import fresh_postgres_database

CHILD, PARENT = "database_maintenance_operation", "database_maintenance_parent"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def scrape(m: Manager) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{m.server.metrics_port}/metrics"
    text = await asyncio.to_thread(_get, url)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_move_when_a_job_runs(tmp_path: Path) -> None:
    async with running_manager(tmp_path, metrics_listen="127.0.0.1:0") as m:
        created = await m.create(["db1", "db2"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
        before = await scrape(m)
        assert before[("dbmaint_jobs_created_total", (("operation", ""), ("type", PARENT)))] == 1
        assert before[("dbmaint_jobs_created_total", (("operation", "vacuum"), ("type", CHILD)))] == 2
        assert before[("dbmaint_queue_depth", (("target", "db1"),))] == 2
        assert before[("dbmaint_workers_connected", ())] == 0

        w = await m.connected_worker("w1", ["db1", "db2"], slots=2)
        first = await w.wait_assignments(2)
        during = await scrape(m)
        assert during[("dbmaint_workers_connected", ())] == 1
        assert during[("dbmaint_worker_slots", ())] == 2 and during[("dbmaint_worker_slots_busy", ())] == 2
        assert during[("dbmaint_assignment_wait_seconds_count", ())] == 2
        await w.complete(first[0])
        await w.complete(first[1], status="failed", error="boom")
        for a in (await w.wait_assignments(4))[2:]:
            await w.complete(a)
        await eventually(lambda: _parent_done(m, created.parent.id))

        after = await scrape(m)
        finished = {k: v for k, v in after.items() if k[0] == "dbmaint_jobs_finished_total"}
        assert sum(finished.values()) == 5  # four children and the parent, each once
        assert (
            finished[("dbmaint_jobs_finished_total", (("operation", ""), ("status", "failed"), ("type", PARENT)))]
            == 1
        )
        assert sum(v for k, v in finished.items() if ("status", "failed") in k[1] and ("type", CHILD) in k[1]) == 1
        assert after[("dbmaint_assignment_wait_seconds_count", ())] == 4
        assert after[("dbmaint_worker_slots_busy", ())] == 0
        assert not any(k[0] == "dbmaint_queue_depth" for k in after)  # nothing pending


async def _parent_done(m: Manager, parent_id: str) -> bool:
    job = await m.job(parent_id)
    return job.status in (pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED)


async def test_dispatch_gap_is_observed_only_when_work_was_queued(tmp_path: Path) -> None:
    """One slot, one target, three operations: the second and third children were queued when the results
    before them arrived (two gaps). The last result finds nothing queued; the child of a parent created later
    fills the free slot but is no gap."""

    async with running_manager(tmp_path, metrics_listen="127.0.0.1:0") as m:
        w = await m.connected_worker("w1", ["db1"], slots=1)
        first = await m.create(["db1"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE, pb.OPERATION_REINDEX])
        for count in (1, 2, 3):
            await w.complete((await w.wait_assignments(count))[count - 1])
        await eventually(lambda: _parent_done(m, first.parent.id))
        assert (await scrape(m))[("dbmaint_dispatch_gap_seconds_count", ())] == 2

        second = await m.create(["db1"], [pb.OPERATION_ANALYZE])
        await w.complete((await w.wait_assignments(4))[3])
        await eventually(lambda: _parent_done(m, second.parent.id))
        after = await scrape(m)
        assert after[("dbmaint_dispatch_gap_seconds_count", ())] == 2
        assert 0 < after[("dbmaint_dispatch_gap_seconds_sum", ())] < 5
        assert after[("dbmaint_dispatch_gap_seconds_bucket", (("le", "0.001"),))] <= 2


async def test_no_dispatch_gap_when_the_queued_child_could_not_run_yet(tmp_path: Path) -> None:
    """Two slots: db1's second child is queued but waits for its target while db2's child ends (a result, a free
    slot, nothing runnable). When db1's first child ends, its second one goes out: paired with db2's result, but
    it could not run when that arrived (its target was freed later), so it is no gap."""

    async with running_manager(tmp_path, metrics_listen="127.0.0.1:0") as m:
        w = await m.connected_worker("w1", ["db1", "db2"], slots=2)
        first = await m.create(["db1"], [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE])
        db1_first = (await w.wait_assignments(1))[0]
        second = await m.create(["db2"], [pb.OPERATION_VACUUM])
        await w.complete((await w.wait_assignments(2))[1])
        await eventually(lambda: _parent_done(m, second.parent.id))
        await w.complete(db1_first)
        await w.complete((await w.wait_assignments(3))[2])
        await eventually(lambda: _parent_done(m, first.parent.id))
        assert (await scrape(m))[("dbmaint_dispatch_gap_seconds_count", ())] == 0


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_metrics") as url:
        yield url.render_as_string(hide_password=False)


async def _leadership(m: Manager) -> tuple[float, float, float]:
    """(leader, term, takeovers) as scraped."""
    samples = await scrape(m)
    return (
        samples[("dbmaint_manager_leader", ())],
        samples[("dbmaint_manager_term", ())],
        samples[("dbmaint_manager_takeovers_total", ())],
    )


@pytest.mark.timeout(60)
async def test_the_leadership_metrics_follow_the_store_lease_from_leader_to_standby(
    tmp_path: Path, pg_url: str
) -> None:
    settings = {"database_url": pg_url, "store_lease": 3.0, "metrics_listen": "127.0.0.1:0"}
    async with (
        running_manager(tmp_path / "a", **settings) as first,
        running_manager(tmp_path / "b", **settings) as second,
    ):
        assert await _leadership(first) == (1, 1, 1)
        assert await _leadership(second) == (0, 1, 0), "a standby shows the holder's term"

        await first.server.shutdown()  # gives the lease up: the standby takes the next term
        await eventually(lambda: second.server.leading, timeout=10, message="no takeover")
        assert await _leadership(second) == (1, 2, 1)
