"""Acknowledged results: a worker keeps each result until the manager acknowledges it, and re-sends the
unacknowledged ones on every new stream; a manager that sends no acks gets today's behaviour."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.fake_manager_for_workers import FakeManagerServer, FakeStream, fake_manager
from tests.support.worker import eventually, make_worker, within
from worker_service.stream import ResultAcked, events_from_proto
from worker_service.worker import Worker

COMPLETED = pb.JOB_STATUS_COMPLETED


@asynccontextmanager
async def running_worker(
    small_db: Path, *, sends_acks: bool, slots: int = 1
) -> AsyncIterator[tuple[FakeManagerServer, Worker, asyncio.Task[int]]]:
    """A worker serving ``orders`` against a fake manager; at the end it is shut down (unless it already stopped)
    and must have exited 0."""
    async with fake_manager(sends_acks=sends_acks) as server:
        worker = make_worker(server.address, {"orders": small_db}, slots=slots)
        runner = asyncio.create_task(worker.run())
        yield server, worker, runner
        if not runner.done():
            await worker.shutdown()
        assert await runner == 0


async def stream_number(server: FakeManagerServer, index: int) -> FakeStream:
    manager = server.manager
    return await eventually(lambda: len(manager.streams) > index and manager.streams[index], message="a stream")


def result_keys(stream: FakeStream) -> list[tuple[str, int]]:
    return [(r.job_id, r.attempt) for r in stream.results]


async def heartbeats_after(stream: FakeStream, count: int) -> None:
    """Wait until ``count`` more heartbeats arrived on ``stream``: time enough for a (wrong) re-send to show."""
    seen = len(stream.heartbeats)
    await eventually(lambda: len(stream.heartbeats) >= seen + count, message=f"{count} more heartbeats")


def test_an_ack_or_a_batch_of_acks_becomes_one_result_acked_event() -> None:
    one = pb.ManagerMessage(result_ack=pb.ResultAck(job_id="a", attempt=2))
    batch = pb.ManagerMessage(
        result_acks=pb.ResultAckBatch(
            acks=[pb.ResultAck(job_id="b", attempt=1), pb.ResultAck(job_id="c", attempt=3)]
        )
    )
    assert events_from_proto(one) == [ResultAcked((("a", 2),))]
    assert events_from_proto(batch) == [ResultAcked((("b", 1), ("c", 3)))]


async def test_a_result_written_but_not_acknowledged_is_resent_first_on_the_next_stream(small_db: Path) -> None:
    async with running_worker(small_db, sends_acks=True) as (server, worker, _runner):
        first = await stream_number(server, 0)
        assert first.hello.accepts_acks
        await first.assign("job-1", "orders")
        await eventually(lambda: first.result_for("job-1"), message="the result on the first stream")
        assert [o.key for o in worker.undelivered()] == [("job-1", 1)]  # written, not acknowledged: kept
        await first.drop()  # the link dies before the manager acknowledged it
        second = await stream_number(server, 1)
        assert list(second.hello.running) == []  # finished: not running, but its result is re-sent
        await eventually(lambda: second.received, message="the re-sent result")
        assert second.received[0].WhichOneof("kind") == "result"  # right after Hello
        assert (second.received[0].result.job_id, second.received[0].result.status) == ("job-1", COMPLETED)
        await second.ack("job-1")
        await eventually(lambda: not worker.undelivered(), message="the acknowledged result forgotten")


async def test_an_acknowledged_result_is_not_resent_on_the_next_stream(small_db: Path) -> None:
    async with running_worker(small_db, sends_acks=True, slots=2) as (server, worker, _runner):
        first = await stream_number(server, 0)
        await first.assign("job-1", "orders")
        await first.assign("job-2", "orders", "analyze")
        await eventually(lambda: len(first.results) == 2, message="both results")
        await first.ack_batch(("job-1", 1), ("job-2", 1))
        await eventually(lambda: not worker.undelivered(), message="both results forgotten")
        await first.drop()
        second = await stream_number(server, 1)
        await heartbeats_after(second, 3)
        assert second.results == []


async def test_a_result_is_sent_once_per_stream_while_it_waits_for_its_ack(small_db: Path) -> None:
    async with running_worker(small_db, sends_acks=True) as (server, worker, _runner):
        first = await stream_number(server, 0)
        await first.assign("job-1", "orders")
        await eventually(lambda: first.results, message="the result")
        await first.assign("job-2", "orders", "analyze")  # another result wakes the sender meanwhile
        await eventually(lambda: len(first.results) == 2, message="the second result")
        await heartbeats_after(first, 3)
        assert result_keys(first) == [("job-1", 1), ("job-2", 1)]
        assert {o.key for o in worker.undelivered()} == {("job-1", 1), ("job-2", 1)}


async def test_unknown_acks_are_ignored(small_db: Path) -> None:
    async with running_worker(small_db, sends_acks=True) as (server, worker, _runner):
        first = await stream_number(server, 0)
        await first.assign("job-1", "orders")
        await eventually(lambda: first.results, message="the result")
        await first.ack("job-1", attempt=2)  # another attempt
        await first.ack_batch(("nobody", 1))
        await heartbeats_after(first, 2)
        assert [o.key for o in worker.undelivered()] == [("job-1", 1)]
        assert worker.error is None and worker.connected
        await first.ack("job-1", attempt=1)
        await eventually(lambda: not worker.undelivered())


async def test_a_manager_that_sends_no_acks_gets_results_forgotten_once_written(small_db: Path) -> None:
    async with running_worker(small_db, sends_acks=False) as (server, worker, _runner):
        first = await stream_number(server, 0)
        assert first.hello.accepts_acks  # the worker offers; this manager does not take it up
        await first.assign("job-1", "orders")
        await eventually(lambda: first.result_for("job-1"), message="the result")
        await eventually(lambda: not worker.undelivered(), message="forgotten once written")
        await first.drop()
        second = await stream_number(server, 1)
        await heartbeats_after(second, 3)
        assert second.results == []


async def test_a_result_kept_for_its_ack_is_resent_to_an_older_manager_and_forgotten_once_written(
    small_db: Path,
) -> None:
    async with running_worker(small_db, sends_acks=True) as (server, worker, _runner):
        first = await stream_number(server, 0)
        await first.assign("job-1", "orders")
        await eventually(lambda: first.result_for("job-1"), message="the result")
        server.manager.sends_acks = False  # the next manager is an older one (a rolling deploy back)
        await first.drop()
        second = await stream_number(server, 1)
        await eventually(lambda: second.result_for("job-1"), message="the re-sent result")
        await eventually(lambda: not worker.undelivered(), message="forgotten once written")


async def test_drain_waits_for_the_ack_before_half_closing(small_db: Path) -> None:
    async with running_worker(small_db, sends_acks=True) as (server, worker, runner):
        first = await stream_number(server, 0)
        await first.assign("job-1", "orders")
        await eventually(lambda: first.result_for("job-1"), message="the result")
        worker.request_drain("SIGTERM")
        await eventually(lambda: first.drainings, message="Draining")
        await asyncio.sleep(0.3)  # the deliver timeout in tests is 1 s: still inside it
        assert not first.half_closed.is_set(), "half-closed before the result was acknowledged"
        await first.ack("job-1")
        assert await within(runner, 5, "the drained worker exiting") == 0
        assert first.half_closed.is_set()
        assert worker.undelivered() == []


async def test_drain_stops_waiting_for_an_ack_after_the_deliver_timeout(small_db: Path) -> None:
    async with running_worker(small_db, sends_acks=True) as (server, worker, runner):
        first = await stream_number(server, 0)
        await first.assign("job-1", "orders")
        await eventually(lambda: first.result_for("job-1"), message="the result")
        started = time.monotonic()
        worker.request_drain("SIGTERM")
        assert await within(runner, 5, "the drained worker exiting") == 0
        assert 0.9 <= time.monotonic() - started < 3  # the deliver timeout (1 s in tests), then half-close
        assert first.half_closed.is_set()
        assert [o.key for o in worker.undelivered()] == [("job-1", 1)]
