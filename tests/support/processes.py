"""Real manager and worker processes for end-to-end tests: ``Cluster`` is a ``dbmaint.local.LocalFleet`` with
the tests' defaults (short leases and heartbeats, one slot per worker) and the client calls the tests make; its
logs are shown when a test fails, and every process is killed for sure at the end."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
from sqlalchemy.engine import URL

from dbmaint.local import LocalFleet, ServiceProcess
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.polling import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
# Quick enough that a lost worker is noticed within a test's patience.
TEST_MANAGER_FLAGS = ("--lease-timeout", "6", "--heartbeat-interval", "0.5")
LOG_LINES_SHOWN = 120
RESTART_TIMEOUT = 30.0


def target_url(where: Path | str | URL) -> str:
    """A worker's target URL: a Path is a SQLite file; a URL (or its string) is used as it is."""
    if isinstance(where, Path):
        return f"sqlite:///{where}"
    if isinstance(where, URL):
        return where.render_as_string(hide_password=False)
    return where


class Cluster(LocalFleet):
    """A manager and its workers for one test, with the client calls the tests make."""

    def start_manager(  # type: ignore[override]
        self, *extra: str, env: Mapping[str, str] | None = None
    ) -> ServiceProcess:
        """The manager with the tests' quick leases (``extra`` flags come after, so they win), once SERVING."""
        return super().start_manager(*TEST_MANAGER_FLAGS, *extra, env=env)

    def restart_manager(self, *, graceful: bool, timeout: float = RESTART_TIMEOUT) -> ServiceProcess:
        return super().restart_manager(graceful=graceful, timeout=timeout)

    def start_worker(  # type: ignore[override]
        self,
        worker_id: str,
        targets: Mapping[str, Path | str | URL],
        *extra: str,
        faults: str = "",
        slots: int = 1,
        wait_connected: bool = True,
    ) -> ServiceProcess:
        """Worker ``worker_id`` serving ``targets``, with ``DBMAINT_FAULTS`` set to ``faults`` when given."""
        urls = {name: target_url(where) for name, where in targets.items()}
        # Fault injection is opt-in: a worker given faults is also given the permission to inject them.
        env = {"DBMAINT_FAULTS": faults, "DBMAINT_ALLOW_FAULT_INJECTION": "1"} if faults else {}
        return super().start_worker(worker_id, *extra, targets=urls, slots=slots, env=env, wait=wait_connected)

    def wait_worker(self, worker_id: str) -> None:
        """Until ListWorkers lists ``worker_id`` (its process must stay alive meanwhile)."""
        self.wait_workers([worker_id])

    # -- client side

    def create(
        self, targets: Sequence[str], operations: Sequence[int] = (), request_id: str = ""
    ) -> pb.CreateMaintenanceResponse:
        return self.stub.CreateMaintenance(
            pb.CreateMaintenanceRequest(targets=list(targets), operations=list(operations), request_id=request_id),
            timeout=10,
        )

    def get(self, job_id: str) -> pb.GetJobResponse:
        """The job with ALL its children: GetJob answers one page of children at a time; this follows the pages
        and answers as if there were one."""
        reply: pb.GetJobResponse = self.stub.GetJob(
            pb.GetJobRequest(id=job_id, children_page_size=5_000), timeout=10
        )
        token = reply.next_children_page_token
        while token:
            page = self.stub.GetJob(
                pb.GetJobRequest(id=job_id, children_page_size=5_000, children_page_token=token), timeout=10
            )
            reply.children.extend(page.children)
            token = page.next_children_page_token
        reply.next_children_page_token = ""
        return reply

    def wait_status(self, job_id: str, *statuses: int, timeout: float = 60.0) -> pb.GetJobResponse:
        return wait_for(
            lambda: (r := self.get(job_id)).job.status in statuses and r,
            timeout=timeout,
            message=lambda: f"job {job_id} not in {statuses}: {self.describe(job_id)}\n{self.logs()}",
        )

    def wait_child(self, parent_id: str, predicate, timeout: float = 30.0) -> pb.Job:  # type: ignore[no-untyped-def]
        def probe() -> pb.Job | None:
            return next((c for c in self.get(parent_id).children if predicate(c)), None)

        return wait_for(probe, timeout=timeout, message=lambda: f"no child matched: {self.describe(parent_id)}")

    def describe(self, job_id: str) -> str:
        try:
            reply = self.get(job_id)
        except grpc.RpcError as error:
            return f"<GetJob failed: {error.code().name}>"
        lines = [f"{reply.job.id} {pb.JobStatus.Name(reply.job.status)} {reply.job.error}"]
        for c in reply.children:
            lines.append(
                f"  {c.target}/{pb.Operation.Name(c.operation)} {pb.JobStatus.Name(c.status)} "
                f"attempt={c.attempt} worker={c.worker_id} error={c.error!r} waiting={c.waiting_reason!r}"
            )
        return "\n".join(lines)

    def logs(self, lines: int | None = LOG_LINES_SHOWN) -> str:
        return super().logs(lines)

    def close(self) -> None:
        self.kill()


@contextmanager
def cluster(workdir: Path, store: str | None = None) -> Iterator[Cluster]:
    running = Cluster(workdir, store_url=store or "")
    try:
        yield running
    finally:
        running.close()
