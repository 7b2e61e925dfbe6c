"""The console of a standby (two in-process managers on one PostgreSQL store): it answers reads from the store
like the standby's RPCs, says it is a standby and who leads, and refuses writes with 503, naming the leader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dbmaint.v1 import maintenance_pb2 as pb
from tests.integration.console.support import console, of, stream
from tests.support.servers import fresh_postgres_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_console_standby") as url:
        yield url.render_as_string(hide_password=False)


async def test_a_standby_console_reads_and_refuses_writes_naming_the_leader(tmp_path: Path, pg_url: str) -> None:
    async with (
        console(tmp_path / "a", database_url=pg_url, store_lease=3.0) as leader,
        console(tmp_path / "b", database_url=pg_url, store_lease=3.0) as standby,
        standby.client() as http,
    ):
        assert leader.manager.server.leading and not standby.manager.server.leading
        created = await leader.manager.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["db1"]))
        parent_id = created.parent.id
        async with http.get(f"/api/v1/jobs/{parent_id}") as response:
            assert response.status == 200
            assert (await response.json())["job"]["id"] == parent_id
        async with http.get("/api/v1/jobs") as response:
            assert response.status == 200
            assert parent_id in {job["id"] for job in (await response.json())["jobs"]}
        async with http.get("/api/v1/manager") as response:
            body = await response.json()
            assert body["role"] == "standby"
            assert body["leader"] == leader.manager.server.advertised_address
        headers = {"Authorization": "Bearer -"}  # auth is off: a script's header stands for the CSRF token
        leader_address = leader.manager.server.advertised_address
        for path in (f"/api/v1/jobs/{parent_id}/cancel", "/api/v1/workers/w1/drain", "/api/v1/schedules/s/run"):
            async with http.post(path, headers=headers) as response:
                assert response.status == 503, path
                body = await response.json()
                assert body["code"] == "UNAVAILABLE" and body["leader"] == leader_address
                assert "standby" in body["message"]
        job = await leader.manager.api.GetJob(pb.GetJobRequest(id=parent_id))
        assert not job.job.cancel_requested and job.job.status == pb.JOB_STATUS_PENDING


async def test_a_standby_console_streams_the_leader_s_changes(tmp_path: Path, pg_url: str) -> None:
    async with (
        console(tmp_path / "a", database_url=pg_url, store_lease=3.0) as leader,
        console(tmp_path / "b", database_url=pg_url, store_lease=3.0) as standby,
        stream(standby) as events,
    ):
        created = await leader.manager.create(["db1"])
        await events.until(of(created.parent.id, "JOB_STATUS_PENDING"))
        await leader.manager.api.CancelJob(pb.CancelJobRequest(id=created.parent.id))
        await events.until(of(created.parent.id, "JOB_STATUS_CANCELLED"))
