"""Random and malformed requests at every RPC of a running manager (hypothesis), and random workers: Hellos,
results with any text. Strings often carry NUL and other control characters. Whatever comes in:

- only the documented status codes come back, never INTERNAL or UNKNOWN;
- the manager stays healthy;
- the store holds exactly what the accepted CreateMaintenance calls created, nothing else, and no control
  character but newline and tab in what a worker reported.

The manager runs on its own thread and event loop for each store (SQLite, PostgreSQL) in turn; the examples
use a blocking client.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from manager_service.config import ManagerConfig
from manager_service.server import ManagerServer
from manager_service.store import open_store
from tests.support.polling import wait_for
from tests.support.servers import fresh_postgres_database

# What each RPC may answer (README "grpcurl" and docs/protocol.md); anything else is a bug.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Running:
    address: str
    store_url: str
    channel: grpc.Channel
    created: set[str] = field(default_factory=set)  # ids of every job an accepted create made

    @property
    def api(self) -> pb_grpc.MaintenanceServiceStub:
        return pb_grpc.MaintenanceServiceStub(self.channel)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The job store of the module's manager: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        where: Path = tmp_path_factory.mktemp("fuzz")
        yield f"sqlite:///{where}/jobs.db"
        return
    with fresh_postgres_database("dbmaint_fuzz") as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def manager(store_url: str) -> Iterator[Running]:
    config = ManagerConfig(listen="127.0.0.1:0", database_url=store_url, max_targets=20)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(_make_server(config), loop).result(30)
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Running(f"127.0.0.1:{port}", config.database_url, channel)
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        assert not thread.is_alive(), "the manager's event loop did not stop"
        loop.close()


async def _make_server(config: ManagerConfig) -> ManagerServer:
    return ManagerServer(config)  # built on the loop that will run it


def _code(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


# NUL, other C0 controls, DEL and C1 controls: st.text() alone rarely draws them.
CONTROLS = "\x00\x01\x08\x0b\x0d\x1b\x7f\x85\x9b\x9f"
controls = st.sampled_from(list(CONTROLS))
texts = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.one_of(st.characters(codec="utf-8"), controls), max_size=60),
    st.lists(st.one_of(controls, st.sampled_from(["a", "\n", "\t", " "])), max_size=10).map("".join),
)
# A valid-looking id with a control character somewhere in it.
spoiled_ids = st.builds(lambda u, c, at: (s := str(u))[:at] + c + s[at:], st.uuids(), controls, st.integers(0, 36))
ids = st.one_of(texts, st.uuids().map(str), spoiled_ids)
enums = st.integers(min_value=-(2**31), max_value=2**31 - 1)
small_ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
target_names = st.one_of(st.sampled_from(["db1", "db2", "orders"]), texts)

create_requests = st.builds(
    pb.CreateMaintenanceRequest,
    targets=st.lists(target_names, max_size=25),
    operations=st.lists(st.one_of(st.integers(0, 5), enums), max_size=6),
    request_id=st.one_of(st.just(""), st.sampled_from(["same-key-1", "same-key-2"]), texts, spoiled_ids),
    schemas=st.lists(texts, max_size=3),
    tables=st.lists(texts, max_size=3),
)


@FUZZ
@given(request=create_requests)
def test_create_maintenance(manager: Running, request: pb.CreateMaintenanceRequest) -> None:
    try:
        reply = manager.api.CreateMaintenance(request, timeout=10)
    except grpc.RpcError as error:
        assert error.code() in ALLOWED, (error.code(), error.details())  # type: ignore[attr-defined]
        return
    manager.created.update([reply.parent.id, *(c.id for c in reply.children)])


@FUZZ
@given(job_id=ids, reason=texts)
def test_get_job_and_cancel(manager: Running, job_id: str, reason: str) -> None:
    assert _code(lambda: manager.api.GetJob(pb.GetJobRequest(id=job_id), timeout=10)) in ALLOWED
    assert (
        _code(lambda: manager.api.CancelJob(pb.CancelJobRequest(id=job_id, reason=reason), timeout=10)) in ALLOWED
    )


page_tokens = st.one_of(
    texts,
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.one_of(texts, small_ints.map(str)).map(lambda t: base64.urlsafe_b64encode(f"c1:{t}".encode()).decode()),
)


@FUZZ
@given(
    size=small_ints,
    token=page_tokens,
    statuses=st.lists(st.one_of(st.integers(0, 6), enums), max_size=4),
)
def test_get_job_children_pages(manager: Running, size: int, token: str, statuses: list[int]) -> None:
    parent = manager.api.ListJobs(pb.ListJobsRequest(type="database_maintenance_parent", page_size=1), timeout=10)
    job_id = parent.jobs[0].id if parent.jobs else str(uuid.uuid4())
    request = pb.GetJobRequest(
        id=job_id, children_page_size=size, children_page_token=token, children_status=statuses
    )
    assert _code(lambda: manager.api.GetJob(request, timeout=10)) in ALLOWED


@FUZZ
@given(
    request=st.builds(
        pb.ListJobsRequest,
        status=enums,
        type=texts,
        parent_id=ids,
        page_size=small_ints,
        page_token=st.one_of(texts, st.binary(max_size=40).map(lambda b: b.hex())),
    )
)
def test_list_jobs(manager: Running, request: pb.ListJobsRequest) -> None:
    assert _code(lambda: manager.api.ListJobs(request, timeout=10)) in ALLOWED


@FUZZ
@given(job_id=ids, job_only=st.booleans())
def test_watch_job(manager: Running, job_id: str, job_only: bool) -> None:
    def first_message() -> None:
        stream = manager.api.WatchJob(pb.WatchJobRequest(id=job_id, job_only=job_only), timeout=10)
        try:
            next(iter(stream), None)
        finally:
            stream.cancel()

    assert _code(first_message) in ALLOWED


RAW_METHODS = [
    "/dbmaint.v1.MaintenanceService/CreateMaintenance",
    "/dbmaint.v1.MaintenanceService/GetJob",
    "/dbmaint.v1.MaintenanceService/ListJobs",
    "/dbmaint.v1.MaintenanceService/CancelJob",
    "/dbmaint.v1.MaintenanceService/ListWorkers",
]


@FUZZ
@given(method=st.sampled_from(RAW_METHODS), payload=st.binary(max_size=200))
def test_bytes_that_may_not_parse(manager: Running, method: str, payload: bytes) -> None:
    call = manager.channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    assert _code(lambda: call(payload, timeout=10)) in ALLOWED


@FUZZ
@given(messages=st.lists(st.binary(max_size=80), min_size=1, max_size=4))
def test_worker_stream_of_random_bytes(manager: Running, messages: list[bytes]) -> None:
    connect = manager.channel.stream_stream(
        "/dbmaint.v1.WorkerService/Connect", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    responses = connect(iter(messages), timeout=10)
    code = _code(lambda: list(responses))
    assert code in ALLOWED | {grpc.StatusCode.CANCELLED}


@FUZZ
@given(job_id=ids)
def test_cancel_of_a_real_job_with_any_reason(manager: Running, job_id: str) -> None:
    # The reason is stored (as the children's error): a real pending parent, cancelled with a hostile reason.
    created = manager.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["nobody-serves"]), timeout=10)
    manager.created.update([created.parent.id, *(c.id for c in created.children)])
    reply = manager.api.CancelJob(pb.CancelJobRequest(id=created.parent.id, reason=job_id), timeout=10)
    assert reply.job.status == pb.JOB_STATUS_CANCELLED
    for child in manager.api.GetJob(pb.GetJobRequest(id=created.parent.id), timeout=10).children:
        assert _clean(child.error), child.error


@FUZZ
@given(worker_id=ids, reason=texts)
def test_drain_worker(manager: Running, worker_id: str, reason: str) -> None:
    request = pb.DrainWorkerRequest(worker_id=worker_id, reason=reason)
    assert _code(lambda: manager.api.DrainWorker(request, timeout=10)) in ALLOWED


_targets = itertools.count()
results = st.builds(
    pb.Result,
    job_id=ids,
    attempt=st.integers(-3, 3),
    status=st.one_of(st.integers(0, 5), enums),
    error=texts,
    result=st.builds(pb.OperationResult, engine=texts, notes=st.lists(texts, max_size=4)),
)
WORKER_FUZZ = settings(FUZZ, max_examples=40)


@WORKER_FUZZ
@given(
    worker_id=st.one_of(ids, st.uuids().map(lambda u: f"fuzz-worker-{u}")),
    noise=st.lists(results, max_size=3),
    status=st.sampled_from([pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED]),
    error=texts,
    engine=texts,
    notes=st.lists(texts, max_size=4),
)
def test_a_worker_with_any_id_and_any_text_in_its_results(
    manager: Running,
    worker_id: str,
    noise: list[pb.Result],
    status: int,
    error: str,
    engine: str,
    notes: list[str],
) -> None:
    """A Hello with any worker id is welcomed or refused; a welcomed worker gets the child of a target only it
    serves, sends results for made-up children, then its own result with any text: the child ends with that
    status and the text sanitized, and the manager keeps going."""
    target = f"fuzz-{next(_targets)}"
    created = manager.api.CreateMaintenance(
        pb.CreateMaintenanceRequest(targets=[target], operations=[pb.OPERATION_ANALYZE]), timeout=10
    )
    manager.created.update([created.parent.id, *(c.id for c in created.children)])
    requests: queue.Queue[pb.WorkerMessage | None] = queue.Queue()
    hello = pb.Hello(worker_id=worker_id, targets=[target], slots=1, version="fuzz")
    requests.put(pb.WorkerMessage(hello=hello))
    stream = pb_grpc.WorkerServiceStub(manager.channel).Connect(iter(requests.get, None), timeout=15)
    try:
        try:
            welcome = next(stream)
        except grpc.RpcError as error:
            assert error.code() in ALLOWED, (error.code(), error.details())  # type: ignore[attr-defined]
            return
        assert welcome.WhichOneof("kind") == "welcome"
        assignment = next(stream).assignment
        assert assignment.job_id == created.children[0].id
        report = pb.OperationResult(engine=engine, notes=notes)
        mine = pb.Result(
            job_id=assignment.job_id, attempt=assignment.attempt, status=status, error=error, result=report
        )
        requests.put(pb.WorkerMessage(results=pb.ResultBatch(results=[*noise, mine])))

        def finished() -> pb.Job | None:
            child = manager.api.GetJob(pb.GetJobRequest(id=assignment.job_id), timeout=10).job
            return child if child.status == status else None

        child = wait_for(finished, timeout=10, message=f"child {assignment.job_id} ends {status}")
        assert _clean(child.error) and _clean(child.result.engine), child
        assert all(_clean(note) for note in child.result.notes), child
    finally:
        requests.put(None)
        stream.cancel()


def _clean(text: str) -> bool:
    return not any(c in text for c in CONTROLS) and "\x00" not in text


def test_after_the_fuzz_the_manager_is_healthy_and_the_store_holds_only_what_was_accepted(
    manager: Running,
) -> None:
    # Runs after the fuzz tests above (file order).
    health = health_pb2_grpc.HealthStub(manager.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    store = open_store(manager.store_url)
    try:
        stored = {job.id for job in _all_jobs(store)}
    finally:
        store.close()
    assert stored == manager.created
    assert manager.created, "no create was accepted: the strategies never made a valid request"


def _all_jobs(store: Any) -> list[Any]:
    from manager_service.domain import JobFilter

    jobs: list[Any] = []
    before: int | None = None
    while True:
        page = store.list_jobs(JobFilter(), 500, before)
        jobs.extend(page.jobs)
        if not page.jobs or page.next_before_seq is None:
            return jobs
        before = page.next_before_seq
