"""The CLI and a worker given a real standby first and the real leader second (two in-process managers on one
PostgreSQL store): whatever the standby's refusal carries (the ``dbmaint-leader`` hint, or only its message),
the clients recognise it and go on to the leader."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbmaint.cli.main import main
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.manager import eventually, running_manager
from tests.support.servers import fresh_postgres_database
from tests.support.worker import make_db, make_worker, within


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_clients") as url:
        yield url.render_as_string(hide_password=False)


@pytest.mark.timeout(60)
async def test_the_cli_and_a_worker_listing_a_standby_first_end_up_on_the_leader(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        running_manager(tmp_path / "a", database_url=pg_url, store_lease=3.0) as leader,
        running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as standby,
    ):
        assert leader.server.leading and not standby.server.leading
        managers = f"127.0.0.1:{standby.server.port},127.0.0.1:{leader.server.port}"

        # A write without a key (cancel) goes on only after a refusal: the standby's must read as one.
        parent = (await leader.create(["orders"], [pb.OPERATION_ANALYZE])).parent
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["--manager", managers, "cancel", parent.id])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert f"cancelled parent {parent.id}" in out

        code = await asyncio.to_thread(main, ["--manager", managers, "create", "orders", "-o", "analyze"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "created parent" in out

        worker = make_worker(managers, {"orders": make_db(tmp_path / "orders.db", rows=200)})
        runner = asyncio.create_task(worker.run())
        try:
            await eventually(lambda: worker.connected, timeout=15, message="the worker connected to the leader")
            listed = await leader.api.ListWorkers(pb.ListWorkersRequest())
            assert [w.worker_id for w in listed.workers] == ["w-test"]
        finally:
            await within(worker.shutdown(), 10, "shutdown")
        assert await runner == 0
