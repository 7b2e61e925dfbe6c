"""The worker against an in-process fake manager over a real gRPC stream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

import dbmaint
from dbmaint.operations import LEGACY_JOB_TYPE
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.fake_manager_for_workers import FakeManagerServer, FakeStream, assignment, fake_manager
from tests.support.worker import eventually, integrity, make_worker, within
from worker_service.health import HealthServer
from worker_service.worker import Worker

COMPLETED = pb.JOB_STATUS_COMPLETED
FAILED = pb.JOB_STATUS_FAILED
CANCELLED = pb.JOB_STATUS_CANCELLED


def running_ids(message: pb.Heartbeat | pb.Hello) -> list[tuple[str, int]]:
    return [(r.job_id, r.attempt) for r in message.running]


async def first_stream(server: FakeManagerServer, index: int = 0) -> FakeStream:
    manager = server.manager
    return await eventually(lambda: len(manager.streams) > index and manager.streams[index], message="a stream")


async def test_hello_assignment_heartbeats_result_and_drain(sample_db: Path) -> None:
    async with fake_manager(heartbeat_interval=0.1) as server:
        worker = make_worker(server.address, {"orders": sample_db}, slots=2, slow={"vacuum": 1.0})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        assert stream.hello.worker_id == "w-test"
        assert list(stream.hello.targets) == ["orders"]
        assert stream.hello.slots == 2
        assert stream.hello.version == dbmaint.__version__
        assert running_ids(stream.hello) == []

        await stream.assign("job-1", "orders", "vacuum")
        # Heartbeats keep coming while the (slowed) VACUUM runs, and list it.
        await eventually(
            lambda: sum(("job-1", 1) in running_ids(h) for h in stream.heartbeats) >= 3,
            timeout=3,
            message="3 heartbeats listing job-1 while it runs",
        )
        assert stream.result_for("job-1") is None
        result = await eventually(lambda: stream.result_for("job-1"), timeout=5, message="the result")
        assert result.attempt == 1 and result.status == COMPLETED, result
        assert result.result.engine == "sqlite"
        assert 0 < result.result.bytes_after < result.result.bytes_before
        assert result.result.duration.ToNanoseconds() >= 1e9
        assert "statement: VACUUM" in result.result.notes
        # After the result, heartbeats no longer list it.
        count = len(stream.heartbeats)
        await eventually(lambda: len(stream.heartbeats) > count, message="another heartbeat")
        assert running_ids(stream.heartbeats[-1]) == []

        await within(worker.shutdown("test over"), 5, "shutdown")
        assert [d.reason for d in stream.drainings] == ["test over"]
        assert stream.half_closed.is_set()  # the worker half-closed its side
        assert await runner == 0
        assert len(server.manager.streams) == 1


async def test_refused_assignments_fail_with_a_message_naming_the_problem(small_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": small_db})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        await stream.assign("legacy", "orders", job_type=LEGACY_JOB_TYPE)
        await stream.assign("elsewhere", "billing")
        await stream.assign("mismatch", "orders", "analyze", config='{"operation": "vacuum"}')
        legacy = await eventually(lambda: stream.result_for("legacy"))
        assert legacy.status == FAILED and "'database_maintenance'" in legacy.error and "legacy" in legacy.error
        elsewhere = await eventually(lambda: stream.result_for("elsewhere"))
        assert elsewhere.status == FAILED and "target 'billing' is not served" in elsewhere.error
        mismatch = await eventually(lambda: stream.result_for("mismatch"))
        assert mismatch.status == FAILED and "config operation 'vacuum' does not match" in mismatch.error
        # Refusals take no slot: a valid assignment still runs.
        await stream.assign("ok", "orders", "analyze")
        ok = await eventually(lambda: stream.result_for("ok"))
        assert ok.status == COMPLETED
        await worker.shutdown()
        assert await runner == 0


async def test_no_free_slot_is_reported_as_a_failure(sample_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": sample_db}, slots=1, slow={"vacuum": 30})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        await stream.assign("first", "orders")
        await eventually(lambda: worker.running() == [("first", 1)])
        await stream.assign("second", "orders", "analyze")
        second = await eventually(lambda: stream.result_for("second"))
        assert second.status == FAILED and "no free slot" in second.error
        await stream.cancel("first")
        first = await eventually(lambda: stream.result_for("first"), timeout=3)
        assert first.status == CANCELLED
        await worker.shutdown()
        assert await runner == 0


async def test_cancel_interrupts_the_running_operation_promptly(sample_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": sample_db}, slow={"vacuum": 30})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        await stream.assign("job-1", "orders")
        await eventually(lambda: any(("job-1", 1) in running_ids(h) for h in stream.heartbeats))
        await stream.cancel("job-1", attempt=2, reason="wrong attempt")  # ignored: not this attempt
        await stream.cancel("job-1", reason="operator said stop")
        cancelled_at = time.monotonic()
        result = await eventually(lambda: stream.result_for("job-1"), timeout=3)
        assert time.monotonic() - cancelled_at < 2.0
        assert (result.status, result.error) == (CANCELLED, "operator said stop")
        assert integrity(sample_db) == ("ok", 10_000)
        await worker.shutdown()
        assert await runner == 0


async def test_a_dropped_stream_reconnects_and_lists_the_running_child(sample_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": sample_db}, slow={"vacuum": 1.5})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        await stream.assign("job-1", "orders")
        await eventually(lambda: any(("job-1", 1) in running_ids(h) for h in stream.heartbeats))
        await stream.drop()
        second = await first_stream(server, index=1)
        assert running_ids(second.hello) == [("job-1", 1)]  # still running across the reconnect
        result = await eventually(lambda: second.result_for("job-1"), timeout=5)
        assert result.status == COMPLETED
        assert stream.result_for("job-1") is None
        await worker.shutdown()
        assert await runner == 0


async def test_a_result_produced_while_disconnected_is_resent_after_hello(sample_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": sample_db}, slow={"vacuum": 0.8})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        await stream.assign("job-1", "orders")
        await eventually(lambda: worker.running() == [("job-1", 1)])
        await server.stop()  # the manager dies while the VACUUM runs
        await eventually(lambda: not worker.connected, message="worker noticed the drop")
        undelivered = await eventually(lambda: worker.undelivered(), timeout=5, message="kept result")
        assert [(o.job_id, o.status.value) for o in undelivered] == [("job-1", "completed")]
        await server.start()  # the manager is back on the same port
        second = await first_stream(server, index=1)
        assert running_ids(second.hello) == []
        await eventually(lambda: second.received, message="the re-sent result")
        first_message = second.received[0]
        assert first_message.WhichOneof("kind") == "result"  # right after Hello
        assert (first_message.result.job_id, first_message.result.status) == ("job-1", COMPLETED)
        await eventually(lambda: not worker.undelivered())
        await worker.shutdown()
        assert await runner == 0


async def test_drain_past_the_grace_cancels_and_reports(sample_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": sample_db}, grace=0.3, slow={"vacuum": 30})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        await stream.assign("job-1", "orders")
        await eventually(lambda: worker.running() == [("job-1", 1)])
        started = time.monotonic()
        worker.request_drain("SIGTERM")
        worker.request_drain("SIGTERM again")  # idempotent
        assert await within(runner, 5, "the drained worker exiting") == 0
        assert time.monotonic() - started < 3
        assert [d.reason for d in stream.drainings] == ["SIGTERM"]
        result = stream.result_for("job-1")
        assert result is not None and (result.status, result.error) == (CANCELLED, "worker shutting down")
        assert stream.half_closed.is_set()
        kinds = [m.WhichOneof("kind") for m in stream.received]
        assert kinds.index("draining") < kinds.index("result")
        assert integrity(sample_db) == ("ok", 10_000)


async def test_drain_finishes_running_work_within_the_grace_and_takes_no_new_work(sample_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": sample_db}, slots=2, grace=10, slow={"vacuum": 0.8})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        await stream.assign("job-1", "orders")
        await eventually(lambda: worker.running() == [("job-1", 1)])
        worker.request_drain("SIGTERM")
        await eventually(lambda: stream.drainings)
        await stream.assign("late", "orders", "analyze")  # sent before the manager saw Draining
        assert await within(runner, 5, "the drained worker exiting") == 0
        result = stream.result_for("job-1")
        assert result is not None and result.status == COMPLETED
        assert stream.result_for("late") is None  # not started, not reported: re-queued by the manager


async def test_drain_does_not_hang_when_the_manager_is_unreachable(sample_db: Path) -> None:
    server = FakeManagerServer()
    await server.start()
    worker = make_worker(server.address, {"orders": sample_db}, grace=0.5, slow={"vacuum": 30})
    runner = asyncio.create_task(worker.run())
    stream = await first_stream(server)
    await stream.assign("job-1", "orders")
    await eventually(lambda: worker.running() == [("job-1", 1)])
    await server.stop()
    await eventually(lambda: not worker.connected)
    started = time.monotonic()
    worker.request_drain("SIGTERM")
    assert await within(runner, 8, "the worker exiting") == 0
    # grace (0.5) + cancel (prompt) + result delivery attempt (1.0 in tests)
    assert time.monotonic() - started < 3.0
    assert [(o.job_id, o.status.value, o.error) for o in worker.undelivered()] == [
        ("job-1", "cancelled", "worker shutting down")
    ]


async def test_reconnects_with_backoff_until_the_manager_appears(small_db: Path) -> None:
    server = FakeManagerServer()
    await server.start()
    await server.stop()  # a port that refuses connections for now
    worker = make_worker(server.address, {"orders": small_db})
    runner = asyncio.create_task(worker.run())
    await eventually(lambda: worker._pacer.backoff.attempts >= 3, message="several failed attempts")
    await server.start()
    stream = await first_stream(server)
    await eventually(lambda: worker.connected)
    await stream.assign("job-1", "orders", "optimize")
    assert (await eventually(lambda: stream.result_for("job-1"))).status == COMPLETED
    await worker.shutdown()
    assert await runner == 0
    await server.stop()


async def test_health_follows_the_connection_and_the_drain(small_db: Path) -> None:
    async def status(channel: grpc.aio.Channel, service: str) -> int:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        return int(response.status)

    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

    health = HealthServer("127.0.0.1:0")
    port = await health.start()
    server = FakeManagerServer()
    await server.start()
    await server.stop()
    worker = make_worker(server.address, {"orders": small_db}, health=health, grace=2)
    runner = asyncio.create_task(worker.run())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for service in ("", "dbmaint.worker"):
            assert await status(channel, service) == not_serving
        await server.start()
        await eventually(lambda: worker.connected)
        for service in ("", "dbmaint.worker"):
            assert await status(channel, service) == serving
        await server.stop()
        await eventually(lambda: not worker.connected)
        assert await status(channel, "") == not_serving
        await server.start()
        await eventually(lambda: worker.connected)
        assert await status(channel, "") == serving
        worker.request_drain("test")
        await eventually(lambda: server.manager.latest and server.manager.latest.drainings)
        assert await status(channel, "") == not_serving
        assert await status(channel, "dbmaint.worker") == not_serving
    assert await runner == 0
    await health.stop()
    await server.stop()


class _DyingWorker(Worker):
    async def _heartbeat_loop(self) -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("heartbeater bug")


async def test_the_unexpected_death_of_a_side_task_stops_the_worker_with_an_error(small_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": small_db}, worker_class=_DyingWorker)
        code = await within(worker.run(), 5, "the worker stopping")
        assert code == 1
        assert "heartbeater" in str(worker.error) and "heartbeater bug" in str(worker.error)
        await worker.shutdown()  # idempotent after the end


async def test_an_assignment_batch_runs_each_and_results_ready_together_travel_together(small_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": small_db}, slots=2)
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        assert stream.hello.accepts_batches
        # Three refusals are decided while the batch is read, so their results are ready at the same time.
        await stream.assign_batch(
            assignment("ok", "orders", "analyze"),
            *(assignment(f"nowhere-{i}", "billing") for i in range(3)),
        )
        ok = await eventually(lambda: stream.result_for("ok"))
        assert ok.status == COMPLETED
        for i in range(3):
            refused = await eventually(lambda i=i: stream.result_for(f"nowhere-{i}"))
            assert refused.status == FAILED and "target 'billing' is not served" in refused.error
        batches = [m.results for m in stream.received if m.WhichOneof("kind") == "results"]
        assert [[r.job_id for r in b.results] for b in batches] == [["nowhere-0", "nowhere-1", "nowhere-2"]]
        await worker.shutdown()
        assert await runner == 0


async def test_a_drain_from_the_manager_finishes_the_running_operation_then_exits(sample_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": sample_db}, slots=2, grace=10, slow={"vacuum": 0.8})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        await stream.assign("job-1", "orders")
        await eventually(lambda: worker.running() == [("job-1", 1)])
        await stream.send(pb.ManagerMessage(drain=pb.Drain(reason="host maintenance")))
        assert await within(runner, 10, "the drained worker exiting") == 0
        assert [d.reason for d in stream.drainings] == ["asked by the manager: host maintenance"]
        result = stream.result_for("job-1")
        assert result is not None and result.status == COMPLETED
        assert stream.half_closed.is_set()


async def test_worker_metrics_count_what_its_operations_did(sample_db: Path) -> None:
    async with fake_manager() as server:
        worker = make_worker(server.address, {"orders": sample_db})
        runner = asyncio.create_task(worker.run())
        stream = await first_stream(server)
        registry = worker.metrics.registry
        await eventually(lambda: registry.get_sample_value("dbmaint_worker_connected") == 1)
        await stream.assign("job-1", "orders", "vacuum")
        result = await eventually(lambda: stream.result_for("job-1"))
        assert result.status == COMPLETED
        labels = {"engine": "sqlite", "operation": "vacuum"}
        assert registry.get_sample_value("dbmaint_worker_operations_total", {**labels, "status": "completed"}) == 1
        assert registry.get_sample_value("dbmaint_worker_operation_duration_seconds_count", labels) == 1
        reclaimed = registry.get_sample_value("dbmaint_worker_bytes_reclaimed_total", labels)
        assert reclaimed == result.result.bytes_before - result.result.bytes_after > 0
        assert registry.get_sample_value("dbmaint_worker_running") == 0
        await worker.shutdown()
        assert await runner == 0
