"""The gRPC server in-process: MaintenanceService answers, WatchJob, health, shutdown and restart."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import uuid
import weakref
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.manager import Manager, eventually, running_manager

VACUUM, ANALYZE, REINDEX = pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE, pb.OPERATION_REINDEX
UNKNOWN_ID = str(uuid.uuid4())


def token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def status_is(m: Manager, job_id: str, status: int) -> bool:
    return (await m.job(job_id)).status == status


# -- CreateMaintenance


async def test_create_returns_parent_and_children(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        response = await m.create(["db1", "db2"], [], request_id="")
        assert response.created
        p = response.parent
        assert p.type == "database_maintenance_parent" and p.status == pb.JOB_STATUS_PENDING
        assert p.progress.total == 6 and p.progress.pending == 6
        assert json.loads(p.config) == {
            "targets": ["db1", "db2"],
            "operations": ["vacuum", "analyze", "reindex"],
        }
        ops = [VACUUM, ANALYZE, REINDEX]
        assert [(c.target, c.operation) for c in response.children] == [
            (t, o) for t in ("db1", "db2") for o in ops
        ]
        assert [c.position for c in response.children] == list(range(6))
        for c in response.children:
            assert c.type == "database_maintenance_operation" and c.parent_id == p.id
            assert json.loads(c.config) == {
                "operation": pb.Operation.Name(c.operation)[10:].lower(),
                "target": c.target,
            }
            assert (c.attempt, c.max_attempts) == (1, 3)
            assert "no connected worker serves target" in c.waiting_reason
        got = await m.get(p.id)
        assert got.job.id == p.id and [c.id for c in got.children] == [c.id for c in response.children]
        child = await m.get(response.children[0].id)
        assert child.job.parent_id == p.id and len(child.children) == 0


async def test_create_is_idempotent_by_request_id(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["db1", "db2"], slots=4)
        first = await m.create(["db1", "db2"], [VACUUM], request_id="nightly:2024-01-01")
        await w.wait_assignments(2)
        again = await m.create(["db1", "db2"], [VACUUM], request_id="nightly:2024-01-01")
        assert not again.created
        assert again.parent.id == first.parent.id
        assert [c.id for c in again.children] == [c.id for c in first.children]
        assert again.parent.request_id == "nightly:2024-01-01"
        listed = await m.api.ListJobs(pb.ListJobsRequest(type="database_maintenance_parent"))
        assert [j.id for j in listed.jobs] == [first.parent.id]
        await m.dispatch_barrier("idem")
        assert len(w.assignments) == 2  # nothing was queued twice

        error = await rpc_error(m.create(["db1"], [VACUUM], request_id="nightly:2024-01-01"))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "nightly:2024-01-01" in error.details()


@pytest.mark.parametrize(
    ("targets", "operations", "request_id", "field"),
    [
        pytest.param([], [], "", "targets", id="no-targets"),
        pytest.param(["db1"], [pb.OPERATION_UNSPECIFIED], "", "operations[0]", id="operation-unspecified"),
        pytest.param(["db1"], [VACUUM, 99], "", "operations[1]", id="operation-99"),
        pytest.param(["db1", "bad/name"], [], "", "targets[1]", id="invalid-target"),
        pytest.param(["db1", ".hidden"], [], "", "targets[1]", id="leading-dot"),
        pytest.param(["x" * 65], [], "", "targets[0]", id="target-too-long"),
        pytest.param(["db1", "db1"], [], "", "targets[1]", id="duplicate-target"),
        pytest.param([f"db{i}" for i in range(1001)], [VACUUM], "", "targets", id="too-many-targets"),
        pytest.param([f"db{i}" for i in range(1000)], [VACUUM] * 11, "", "operations", id="too-many-children"),
        pytest.param(["db1"], [], "has space", "request_id", id="bad-request-id"),
        pytest.param(["db1"], [], "r" * 129, "request_id", id="request-id-too-long"),
    ],
)
async def test_create_with_bad_input_is_invalid_argument(
    tmp_path: Path, targets, operations, request_id, field
) -> None:
    async with running_manager(tmp_path) as m:
        error = await rpc_error(m.create(targets, operations, request_id))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.details().startswith(f"{field}:"), error.details()
        listed = await m.api.ListJobs(pb.ListJobsRequest())
        assert list(listed.jobs) == []  # nothing stored


# -- GetJob / CancelJob / WatchJob errors


async def _watch_first(m: Manager, job_id: str) -> Any:
    call = m.api.WatchJob(pb.WatchJobRequest(id=job_id))
    return await call.read()


@pytest.mark.parametrize("method", ["GetJob", "CancelJob", "WatchJob"])
@pytest.mark.parametrize(
    ("job_id", "code"),
    [
        pytest.param(UNKNOWN_ID, grpc.StatusCode.NOT_FOUND, id="unknown"),
        pytest.param("", grpc.StatusCode.INVALID_ARGUMENT, id="empty"),
        pytest.param("x" * 65, grpc.StatusCode.INVALID_ARGUMENT, id="too-long"),
    ],
)
async def test_job_id_errors(tmp_path: Path, method: str, job_id: str, code: grpc.StatusCode) -> None:
    async with running_manager(tmp_path) as m:
        if method == "GetJob":
            call = m.api.GetJob(pb.GetJobRequest(id=job_id))
        elif method == "CancelJob":
            call = m.api.CancelJob(pb.CancelJobRequest(id=job_id))
        else:
            call = _watch_first(m, job_id)
        error = await rpc_error(call)
        assert error.code() == code, error
        if code == grpc.StatusCode.NOT_FOUND:
            assert job_id in error.details()
        else:
            assert error.details().startswith("id:")


async def test_cancel_of_finished_job_is_failed_precondition(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["db1"])
        created = await m.create(["db1"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        await w.complete(a)
        await eventually(lambda: status_is(m, created.parent.id, pb.JOB_STATUS_COMPLETED))
        for job_id in (created.parent.id, a.job_id):
            error = await rpc_error(m.api.CancelJob(pb.CancelJobRequest(id=job_id)))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "completed" in error.details()
        assert (await m.job(created.parent.id)).status == pb.JOB_STATUS_COMPLETED


async def test_cancel_of_pending_parent(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create(["nobody"], [VACUUM, ANALYZE])
        response = await m.api.CancelJob(pb.CancelJobRequest(id=created.parent.id, reason="  not now  "))
        assert response.job.status == pb.JOB_STATUS_CANCELLED and response.job.error == "not now"
        got = await m.get(created.parent.id)
        assert all(c.status == pb.JOB_STATUS_CANCELLED and not c.waiting_reason for c in got.children)
        assert got.job.progress.cancelled == 2
        workers = await m.api.ListWorkers(pb.ListWorkersRequest())
        assert list(workers.unserved_targets) == []  # nothing is waiting any more
        w = await m.connected_worker("w1", ["nobody"])
        await m.dispatch_barrier("cancelled")
        assert w.assignments == []


# -- ListJobs


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        pytest.param({"page_token": "not a token"}, "page_token", id="garbage-token"),
        pytest.param({"page_token": "abc"}, "page_token", id="bad-padding-token"),
        pytest.param({"page_token": token("v2:5")}, "page_token", id="other-version-token"),
        pytest.param({"page_token": token("v1:-1")}, "page_token", id="negative-token"),
        pytest.param({"page_token": token("v1:")}, "page_token", id="empty-seq-token"),
        pytest.param(
            {"page_token": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "page_token", id="binary-token"
        ),
        pytest.param({"page_token": token("v1:" + "9" * 30)}, "page_token", id="out-of-range-token"),
        pytest.param({"page_size": -1}, "page_size", id="negative-page-size"),
        pytest.param({"type": "database_maintenance"}, "type", id="legacy-type"),
        pytest.param({"type": "nonsense"}, "type", id="unknown-type"),
        pytest.param({"status": 99}, "status", id="unknown-status"),
        pytest.param({"parent_id": "p" * 65}, "parent_id", id="parent-id-too-long"),
    ],
)
async def test_list_jobs_bad_input_is_invalid_argument(
    tmp_path: Path, request_kwargs: dict[str, Any], field: str
) -> None:
    async with running_manager(tmp_path) as m:
        await m.create(["db1"], [VACUUM])
        error = await rpc_error(m.api.ListJobs(pb.ListJobsRequest(**request_kwargs)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.details().startswith(f"{field}:"), error.details()
        if request_kwargs.get("type") == "database_maintenance":
            assert "legacy" in error.details()


async def test_list_jobs_pages_and_filters(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = [await m.create([f"db{i}"], [VACUUM, ANALYZE]) for i in range(4)]
        expected = [j.id for c in created for j in (c.parent, *c.children)][::-1]
        seen: list[str] = []
        page_token = ""
        for _ in range(20):
            page = await m.api.ListJobs(pb.ListJobsRequest(page_size=5, page_token=page_token))
            assert len(page.jobs) <= 5
            seen.extend(j.id for j in page.jobs)
            page_token = page.next_page_token
            if not page_token:
                break
        assert seen == expected

        everything = await m.api.ListJobs(pb.ListJobsRequest())
        assert [j.id for j in everything.jobs] == expected and everything.next_page_token == ""

        parents = await m.api.ListJobs(pb.ListJobsRequest(type="database_maintenance_parent"))
        assert [j.id for j in parents.jobs] == [c.parent.id for c in reversed(created)]
        kids = await m.api.ListJobs(pb.ListJobsRequest(parent_id=created[1].parent.id))
        assert [j.id for j in kids.jobs] == [c.id for c in reversed(created[1].children)]
        pending_children = await m.api.ListJobs(
            pb.ListJobsRequest(status=pb.JOB_STATUS_PENDING, type="database_maintenance_operation")
        )
        assert len(pending_children.jobs) == 8
        done = await m.api.ListJobs(pb.ListJobsRequest(status=pb.JOB_STATUS_COMPLETED))
        assert list(done.jobs) == []


# -- WatchJob


async def read_all(call: Any) -> list[pb.WatchJobResponse]:
    events = []
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            return events
        events.append(message)


async def test_watch_yields_snapshot_then_changes_and_ends(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create(["db1"], [VACUUM, ANALYZE])
        call = m.api.WatchJob(pb.WatchJobRequest(id=created.parent.id))
        first = await call.read()
        assert first.WhichOneof("event") == "snapshot"
        assert first.snapshot.job.id == created.parent.id
        assert first.snapshot.job.status == pb.JOB_STATUS_PENDING
        assert [c.id for c in first.snapshot.children] == [c.id for c in created.children]
        assert "db1" in first.snapshot.children[0].waiting_reason

        w = await m.connected_worker("w1", ["db1"])
        for n in (1, 2):
            assignments = await w.wait_assignments(n)
            await w.complete(assignments[-1])
        events = await asyncio.wait_for(read_all(call), 5.0)
        assert await call.code() == grpc.StatusCode.OK
        assert all(e.WhichOneof("event") == "changed" for e in events)
        changed = [e.changed for e in events]
        last = changed[-1]
        assert last.id == created.parent.id and last.status == pb.JOB_STATUS_COMPLETED
        assert last.progress.succeeded == 2
        for c in created.children:
            statuses = [j.status for j in changed if j.id == c.id]
            assert statuses == [pb.JOB_STATUS_RUNNING, pb.JOB_STATUS_COMPLETED]
        parent_statuses = [j.status for j in changed if j.id == created.parent.id]
        assert parent_statuses[0] == pb.JOB_STATUS_RUNNING
        assert parent_statuses.index(pb.JOB_STATUS_COMPLETED) == len(parent_statuses) - 1


async def test_watch_job_only_sends_the_parent_and_never_its_children(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create(["db1", "db2"], [VACUUM, ANALYZE])
        call = m.api.WatchJob(pb.WatchJobRequest(id=created.parent.id, job_only=True))
        first = await call.read()
        assert first.snapshot.job.id == created.parent.id and len(first.snapshot.children) == 0
        w = await m.connected_worker("w1", ["db1", "db2"], slots=2)
        done = 0
        while done < 4:
            assignments = await w.wait_assignments(done + 1)
            for a in assignments[done:]:
                await w.complete(a)
            done = len(assignments)
        events = await asyncio.wait_for(read_all(call), 5.0)
        assert await call.code() == grpc.StatusCode.OK
        assert events and {e.changed.id for e in events} == {created.parent.id}
        succeeded = [e.changed.progress.succeeded for e in events]
        assert succeeded == sorted(succeeded)  # in order
        last = events[-1].changed
        assert last.status == pb.JOB_STATUS_COMPLETED and last.progress.succeeded == 4


async def test_watch_of_terminal_job_is_snapshot_only(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create(["db1"], [VACUUM])
        await m.api.CancelJob(pb.CancelJobRequest(id=created.parent.id))
        events = await asyncio.wait_for(read_all(m.api.WatchJob(pb.WatchJobRequest(id=created.parent.id))), 5)
        assert len(events) == 1 and events[0].WhichOneof("event") == "snapshot"
        assert events[0].snapshot.job.status == pb.JOB_STATUS_CANCELLED


async def test_watch_of_child_ends_with_the_child(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create(["db1", "db2"], [VACUUM])
        call = m.api.WatchJob(pb.WatchJobRequest(id=created.children[0].id))
        first = await call.read()
        assert first.snapshot.job.id == created.children[0].id and len(first.snapshot.children) == 0
        await m.api.CancelJob(pb.CancelJobRequest(id=created.children[0].id, reason="skip"))
        events = await asyncio.wait_for(read_all(call), 5)
        assert [(e.changed.id, e.changed.status) for e in events] == [
            (created.children[0].id, pb.JOB_STATUS_CANCELLED)
        ]
        assert events[0].changed.error == "skip"
        assert (await m.job(created.parent.id)).status == pb.JOB_STATUS_PENDING


# -- health, shutdown, restart


async def test_health_serving_then_not_serving_on_shutdown(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        for service in ("", "dbmaint.v1.MaintenanceService", "dbmaint.v1.WorkerService"):
            response = await m.health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        watch = m.health.Watch(health_pb2.HealthCheckRequest(service="dbmaint.v1.MaintenanceService"))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        stopping = asyncio.create_task(m.server.shutdown())
        update = await asyncio.wait_for(watch.read(), 5)
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        await asyncio.wait_for(stopping, 10)
        await asyncio.wait_for(m.server.shutdown(), 5)  # twice is fine
    # and a third time, after the harness shut it down as well
    await asyncio.wait_for(m.server.shutdown(), 5)


async def test_concurrent_shutdowns(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        await asyncio.wait_for(asyncio.gather(m.server.shutdown(), m.server.shutdown()), 10)


async def test_shutdown_frees_the_grpc_server_itself_rather_than_leaving_it_to_the_cycle_collector(
    tmp_path: Path,
) -> None:
    # The collector runs on whichever thread allocates (a store thread too), and gRPC's asyncio teardown, which
    # freeing the process's last server or channel starts, hangs there: the next manager of the process froze.
    gc.disable()
    try:
        async with running_manager(tmp_path) as m:
            w = await m.connected_worker("w1", ["db1"])
            await m.create(["db1"], [VACUUM])
            await w.wait_assignments(1)
            servers = weakref.WeakSet(o for o in gc.get_objects() if isinstance(o, grpc.aio.Server))
            assert servers
        assert not servers
    finally:
        gc.enable()


async def test_shutdown_ends_streams_cleanly_and_restart_keeps_running_child(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("w1", ["db1", "db2"], slots=1)
        created = await m.create(["db1", "db2"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        watch = m.api.WatchJob(pb.WatchJobRequest(id=created.parent.id))
        assert (await watch.read()).WhichOneof("event") == "snapshot"
        await asyncio.wait_for(m.server.shutdown(), 10)
        assert await w.status() == grpc.StatusCode.OK  # the worker stream ended cleanly
        await eventually(lambda: w.ended)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while (await watch.read()) is not grpc.aio.EOF:
                pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    async with running_manager(tmp_path) as m:
        # the running child survived the restart: still RUNNING on w1, not re-queued
        job = await m.job(a.job_id)
        assert job.status == pb.JOB_STATUS_RUNNING and job.attempt == 1 and job.worker_id == "w1"
        back = m.worker("w1", ["db1", "db2"], slots=1)
        await back.open(back.hello(running=[(a.job_id, a.attempt)]))
        await eventually(lambda: back.messages, message="Welcome")
        back.outstanding[a.job_id] = a.attempt
        back.start_heartbeats(0.2)
        await back.complete(a)
        (b,) = await back.wait_assignments(1)
        assert b.job_id == created.children[1].id
        await back.complete(b)
        await eventually(lambda: status_is(m, created.parent.id, pb.JOB_STATUS_COMPLETED))
        assert (await m.job(a.job_id)).attempt == 1  # never re-queued
        assert back.cancels == []


async def test_restart_requeues_running_child_nobody_reclaims(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        w = await m.connected_worker("gone", ["db1"])
        created = await m.create(["db1"], [VACUUM])
        (a,) = await w.wait_assignments(1)
        await asyncio.wait_for(m.server.shutdown(), 10)
    async with running_manager(tmp_path) as m:
        # adopted as RUNNING on its old worker, with a fresh lease...
        job = await m.job(a.job_id)
        assert (job.status, job.attempt, job.worker_id) == (pb.JOB_STATUS_RUNNING, 1, "gone")
        # ...that lapses because nobody reclaims it: the next worker gets attempt 2
        other = await m.connected_worker("other", ["db1"])
        (b,) = await other.wait_assignments(1, timeout=6.0)
        assert (b.job_id, b.attempt) == (a.job_id, 2)
        await other.complete(b)
        await eventually(lambda: status_is(m, created.parent.id, pb.JOB_STATUS_COMPLETED))


async def test_caps_on_open_watches_and_connected_workers(tmp_path: Path) -> None:
    async with running_manager(tmp_path, max_watchers=1, max_workers=1) as m:
        created = await m.create(["db1"], [VACUUM])
        first = m.api.WatchJob(pb.WatchJobRequest(id=created.parent.id))
        assert (await first.read()).WhichOneof("event") == "snapshot"
        second = m.api.WatchJob(pb.WatchJobRequest(id=created.parent.id))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()

        async def reopened() -> Any:
            call = m.api.WatchJob(pb.WatchJobRequest(id=created.parent.id))
            return call if await _first_event(call) == "snapshot" else None

        third = await eventually(reopened, message="a watch once the first one closed")
        third.cancel()

        await m.connected_worker("w1", ["db1"])
        extra = m.worker("w2", ["db1"])
        await extra.open()
        assert await extra.status() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def _first_event(call: Any) -> str | None:
    try:
        message = await call.read()
    except grpc.aio.AioRpcError:
        return None
    return str(message.WhichOneof("event"))


# -- pages of children


async def _all_children(m: Manager, parent_id: str, **request: Any) -> tuple[list[pb.Job], list[int]]:
    """Every child, read page by page with GetJob; and the size of each page."""
    children: list[pb.Job] = []
    sizes: list[int] = []
    page_token = ""
    for _ in range(100):
        got = await m.api.GetJob(pb.GetJobRequest(id=parent_id, children_page_token=page_token, **request))
        children.extend(got.children)
        sizes.append(len(got.children))
        page_token = got.next_children_page_token
        if not page_token:
            return children, sizes
    raise AssertionError("GetJob never reached the last page")


async def test_get_job_pages_the_children_in_position_order_by_the_default_page_of_500(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create([f"db{i}" for i in range(300)], [VACUUM, ANALYZE])  # 600 children
        children, sizes = await _all_children(m, created.parent.id)
        assert sizes == [500, 100]
        assert [c.position for c in children] == list(range(600))
        assert len({c.id for c in children}) == 600
        assert all(c.parent_id == created.parent.id for c in children)
        first = await m.get(created.parent.id)
        assert first.job.progress.total == 600, "the parent's counters count every child, not the page"
        _, sizes = await _all_children(m, created.parent.id, children_page_size=250)
        assert sizes == [250, 250, 100]
        _, sizes = await _all_children(m, created.parent.id, children_page_size=5000)
        assert sizes == [600]
        child = await m.get(children[0].id)
        assert list(child.children) == [] and child.next_children_page_token == ""


async def test_get_job_children_status_keeps_only_those_children_and_pages_within_them(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create([f"db{i}" for i in range(5)], [VACUUM, ANALYZE])  # 10 children
        for child in created.children[1::3]:  # positions 1, 4, 7
            await m.api.CancelJob(pb.CancelJobRequest(id=child.id))
        cancelled, sizes = await _all_children(
            m, created.parent.id, children_page_size=2, children_status=[pb.JOB_STATUS_CANCELLED]
        )
        assert [c.position for c in cancelled] == [1, 4, 7] and sizes == [2, 1]
        not_cancelled, _ = await _all_children(
            m, created.parent.id, children_status=[pb.JOB_STATUS_PENDING, pb.JOB_STATUS_RUNNING]
        )
        assert [c.position for c in not_cancelled] == [0, 2, 3, 5, 6, 8, 9]


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        pytest.param({"children_page_size": -1}, "children_page_size", id="negative-page-size"),
        pytest.param({"children_page_size": 5001}, "children_page_size", id="page-size-over-5000"),
        pytest.param({"children_page_token": "not a token"}, "children_page_token", id="garbage-token"),
        pytest.param({"children_page_token": token("v1:5")}, "children_page_token", id="list-jobs-token"),
        pytest.param({"children_page_token": token("c1:five")}, "children_page_token", id="tampered-token"),
        pytest.param({"children_page_token": token("c1:-3")}, "children_page_token", id="negative-position"),
        pytest.param({"children_page_token": token("c1:" + "9" * 30)}, "children_page_token", id="huge-position"),
        pytest.param({"children_status": [99]}, "children_status[0]", id="unknown-status"),
        pytest.param(
            {"children_status": [pb.JOB_STATUS_FAILED, pb.JOB_STATUS_UNSPECIFIED]},
            "children_status[1]",
            id="unspecified-status",
        ),
    ],
)
async def test_get_job_with_bad_children_paging_is_invalid_argument_naming_the_field(
    tmp_path: Path, request_kwargs: dict[str, Any], field: str
) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create(["db1"], [VACUUM])
        error = await rpc_error(m.api.GetJob(pb.GetJobRequest(id=created.parent.id, **request_kwargs)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.details().startswith(f"{field}:"), error.details()


async def test_create_answers_with_the_first_page_of_children_and_a_token_for_get_job(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create([f"db{i}" for i in range(300)], [VACUUM, ANALYZE], request_id="big")
        assert created.parent.progress.total == 600
        assert [c.position for c in created.children] == list(range(500))
        assert created.next_children_page_token
        rest = await m.api.GetJob(
            pb.GetJobRequest(id=created.parent.id, children_page_token=created.next_children_page_token)
        )
        assert [c.position for c in rest.children] == list(range(500, 600))
        assert rest.next_children_page_token == ""
        again = await m.create([f"db{i}" for i in range(300)], [VACUUM, ANALYZE], request_id="big")
        assert not again.created and [c.id for c in again.children] == [c.id for c in created.children]
        assert again.next_children_page_token == created.next_children_page_token
        small = await m.create(["db1"], [VACUUM])
        assert len(small.children) == 1 and small.next_children_page_token == ""


async def test_watch_snapshot_holds_the_first_page_and_changes_come_for_every_child(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as m:
        created = await m.create([f"db{i}" for i in range(300)], [VACUUM, ANALYZE])  # 600 children
        call = m.api.WatchJob(pb.WatchJobRequest(id=created.parent.id))
        first = await call.read()
        assert [c.position for c in first.snapshot.children] == list(range(500))
        assert first.snapshot.next_children_page_token == created.next_children_page_token
        last = created.next_children_page_token and (await _all_children(m, created.parent.id))[0][-1]
        assert last and last.position == 599
        await m.api.CancelJob(pb.CancelJobRequest(id=last.id))
        changed = await asyncio.wait_for(call.read(), 5)
        while changed.changed.id != last.id:
            changed = await asyncio.wait_for(call.read(), 5)
        assert changed.changed.status == pb.JOB_STATUS_CANCELLED
        call.cancel()
