"""A worker configured with several managers: it follows a standby's leader hint, rotates without one, and
re-announces its running children to the manager it moves to (fake managers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fake_manager_for_workers import FakeManager, FakeManagerServer
from tests.support.worker import eventually, make_worker, within


@contextlib.asynccontextmanager
async def servers(*managers: FakeManager) -> AsyncIterator[list[FakeManagerServer]]:
    started = [FakeManagerServer(manager) for manager in managers]
    try:
        for server in started:
            await server.start()
        yield started
    finally:
        for server in started:
            await server.stop()


async def test_the_worker_skips_a_refusing_standby_and_follows_its_hint_to_the_leader(
    small_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker_service")
    standby, bystander, leader = FakeManager(standby_for=""), FakeManager(standby_for=""), FakeManager()
    async with servers(standby, bystander, leader) as (standby_server, bystander_server, leader_server):
        standby.standby_for = leader_server.address  # known once the leader listens
        addresses = ",".join(server.address for server in (standby_server, bystander_server, leader_server))
        worker = make_worker(addresses, {"orders": small_db})
        runner = asyncio.create_task(worker.run())
        await eventually(lambda: leader.streams, message="a stream to the leader")
        # The hint skipped the rotation: the address between the standby and the leader was never tried.
        assert standby.refusals == 1 and bystander.refusals == 0
        assert f"moving to manager {leader_server.address}: {standby_server.address} named" in caplog.text
        await eventually(lambda: f"connected to manager {leader_server.address}" in caplog.text)
        await within(worker.shutdown(), 5, "shutdown")
        assert await runner == 0


async def test_without_a_hint_the_worker_rotates_until_a_manager_takes_its_stream(small_db: Path) -> None:
    first, second = FakeManager(standby_for=""), FakeManager()
    async with servers(first, second) as (first_server, second_server):
        worker = make_worker(f"{first_server.address},{second_server.address}", {"orders": small_db})
        runner = asyncio.create_task(worker.run())
        await eventually(lambda: second.streams, message="a stream to the second manager")
        assert first.refusals >= 1
        await within(worker.shutdown(), 5, "shutdown")
        assert await runner == 0


async def test_a_hint_to_an_address_not_configured_is_not_followed(small_db: Path) -> None:
    decoy, leader = FakeManager(), FakeManager()
    async with servers(decoy, leader) as (decoy_server, leader_server):
        standby = FakeManager(standby_for=decoy_server.address)  # names a manager the worker was not given
        async with servers(standby) as (standby_server,):
            worker = make_worker(f"{standby_server.address},{leader_server.address}", {"orders": small_db})
            runner = asyncio.create_task(worker.run())
            await eventually(lambda: leader.streams, message="a stream to the configured leader")
            assert decoy.streams == []
            await within(worker.shutdown(), 5, "shutdown")
            assert await runner == 0


async def test_a_leader_stepping_down_sends_the_worker_to_the_new_leader_with_its_running_child(
    small_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker_service")
    old, new = FakeManager(), FakeManager()
    async with servers(old, new) as (old_server, new_server):
        worker = make_worker(
            f"{old_server.address},{new_server.address}", {"orders": small_db}, slow={"vacuum": 3}
        )
        runner = asyncio.create_task(worker.run())
        stream = await eventually(lambda: old.latest, message="a stream to the first leader")
        await stream.assign("job-1", "orders", "vacuum")
        await eventually(lambda: worker.running() == [("job-1", 1)], message="job-1 running")
        await stream.drop(leader=new_server.address)
        moved = await eventually(lambda: new.latest, message="a stream to the new leader")
        # Adopted, not re-run: the new leader hears of the running child in the Hello.
        assert [(r.job_id, r.attempt) for r in moved.hello.running] == [("job-1", 1)]
        assert f"moving to manager {new_server.address}" in caplog.text
        result = await eventually(lambda: moved.result_for("job-1"), timeout=10, message="the result")
        assert result.attempt == 1
        await within(worker.shutdown(), 5, "shutdown")
        assert await runner == 0
