"""The job store going away (a PostgreSQL restart, a network cut) must not crash the manager: requests get
UNAVAILABLE and nothing changes; when the store is back, work resumes where it stood."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.manager import eventually, running_manager
from tests.support.servers import fresh_postgres_database, postgres_admin_url


def _rename(old: str, new: str) -> None:
    """Cut every connection to database ``old`` and rename it: to the manager, the store is gone."""
    engine = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": old}
        )
        conn.execute(text(f'ALTER DATABASE "{old}" RENAME TO "{new}"'))
    engine.dispose()


@pytest.mark.timeout(60)
async def test_a_lost_store_answers_unavailable_and_work_resumes_when_it_is_back(tmp_path: Path) -> None:
    with fresh_postgres_database("dbmaint_outage") as url:
        name = url.database
        assert name is not None
        store_url = url.render_as_string(hide_password=False)

        async with running_manager(tmp_path, database_url=store_url) as manager:
            created = await manager.api.CreateMaintenance(
                pb.CreateMaintenanceRequest(targets=["db"], operations=[pb.OPERATION_ANALYZE]), timeout=10
            )
            _rename(name, f"{name}_away")
            try:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await manager.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["db"]), timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "job store is unavailable" in (refused.value.details() or "")
                worker = await manager.connected_worker("w1", ["db"])  # dispatch fails and retries
            finally:
                _rename(f"{name}_away", name)
            (assignment,) = await worker.wait_assignments(1, timeout=15)
            assert assignment.job_id == created.children[0].id
            await worker.send_result(assignment.job_id, assignment.attempt)

            async def completed() -> bool:
                reply = await manager.api.GetJob(pb.GetJobRequest(id=created.parent.id), timeout=5)
                return reply.job.status == pb.JOB_STATUS_COMPLETED

            await eventually(completed, timeout=15)
            listed = await manager.api.ListJobs(pb.ListJobsRequest(type="database_maintenance_parent"), timeout=5)
            assert [j.id for j in listed.jobs] == [created.parent.id], "the refused create stored nothing"
