"""``ManagerStream``: the gRPC edge on its own, against the fake manager."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.fake_manager_for_workers import FakeManagerServer, fake_manager
from tests.support.worker import eventually, make_worker, within
from worker_service.stream import Hello, ManagerStream, StreamClosed, Welcome

HELLO = Hello(worker_id="w", targets=("a", "b"), slots=2, running=(("job-9", 3),), version="9.9")


async def test_open_sends_hello_and_returns_the_welcome() -> None:
    async with fake_manager(heartbeat_interval=0.25, lease_timeout=3) as server:
        stream, welcome = await ManagerStream.open(server.address, HELLO)
        try:
            assert welcome == Welcome(lease_timeout=3.0, heartbeat_interval=0.25, manager_id="fake-manager")
            fake = server.manager.streams[0]
            assert (fake.hello.worker_id, list(fake.hello.targets), fake.hello.slots) == ("w", ["a", "b"], 2)
            assert [(r.job_id, r.attempt) for r in fake.hello.running] == [("job-9", 3)]
            assert fake.hello.version == "9.9"
        finally:
            await stream.close()


async def test_every_end_of_a_stream_is_stream_closed() -> None:
    async with fake_manager() as server:
        # The manager ends the stream.
        stream, _ = await ManagerStream.open(server.address, HELLO)
        await server.manager.streams[-1].end()
        with pytest.raises(StreamClosed, match="closed by the manager"):
            await within(stream.receive(), 5, "end of stream")
        await stream.close()
        # The manager drops it with an error.
        stream, _ = await ManagerStream.open(server.address, HELLO)
        await server.manager.streams[-1].drop()
        with pytest.raises(StreamClosed, match="UNAVAILABLE"):
            await within(stream.receive(), 5, "end of stream")
        await stream.close()
        # This side closes it while a read is pending: StreamClosed, not a CancelledError for the reader.
        stream, _ = await ManagerStream.open(server.address, HELLO)
        reader = asyncio.create_task(stream.receive())
        await asyncio.sleep(0)
        await stream.close()
        with pytest.raises(StreamClosed):
            await within(reader, 5, "the pending read ending")
        with pytest.raises(StreamClosed):
            await stream.send(pb_heartbeat())


def pb_heartbeat():  # type: ignore[no-untyped-def]
    from worker_service.stream import heartbeat_message

    return heartbeat_message([])


async def test_a_standbys_refusal_carries_its_status_and_the_leader_it_names() -> None:
    async with fake_manager(standby_for="leader.example:50051") as server:
        with pytest.raises(StreamClosed, match="UNAVAILABLE: this manager") as refused:
            await within(ManagerStream.open(server.address, HELLO), 5, "the refusal")
    assert (refused.value.code, refused.value.leader_hint) == ("UNAVAILABLE", "leader.example:50051")


async def test_opening_against_nothing_fails_fast() -> None:
    server = FakeManagerServer()
    await server.start()
    await server.stop()
    with pytest.raises(StreamClosed, match="UNAVAILABLE"):
        await within(ManagerStream.open(server.address, HELLO), 5, "the failure")


async def test_the_worker_reconnects_after_its_own_side_closed_the_stream(small_db: Path) -> None:
    """What the result sender does after a failed write: close the stream; the reader must not die of it."""

    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": small_db})
        runner = asyncio.create_task(worker.run())
        await eventually(lambda: worker.connected)
        await worker._stream.close()
        await eventually(lambda: len(server.manager.streams) == 2, message="a second stream")
        await eventually(lambda: worker.connected)
        assert worker.error is None and not runner.done()
        await worker.shutdown()
        assert await runner == 0


async def test_a_refusal_is_never_reported_as_an_internal_error_of_the_write_that_raced_it() -> None:
    """grpc/grpc#36066: a write that loses the race with the server's refusal makes grpcio report INTERNAL and
    lose the real status. The worker waits for the call's headers before its Hello, so it reads the refusal."""
    async with fake_manager(standby_for="leader.example:50051") as server:
        seen: set[tuple[str | None, str | None]] = set()
        for _ in range(40):
            with pytest.raises(StreamClosed) as refused:
                await within(ManagerStream.open(server.address, HELLO), 5, "the refusal")
            seen.add((refused.value.code, refused.value.leader_hint))
    assert seen == {("UNAVAILABLE", "leader.example:50051")}
