"""Real manager and worker processes for end-to-end tests: started as ``python -m ...`` subprocesses on
free TCP ports, logs to files (shown when a test fails), killed for sure at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import URL

from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from tests.support.polling import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def target_url(where: Path | str | URL) -> str:
    """A worker's target URL: a Path is a SQLite file; a URL (or its string) is used as it is."""
    if isinstance(where, Path):
        return f"sqlite:///{where}"
    if isinstance(where, URL):
        return where.render_as_string(hide_password=False)
    return where


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBMAINT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Proc:
    """One running service process."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_path.parent
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets and files but does nothing until ``thaw``."""
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate_and_wait(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def json_lines(self) -> list[dict[str, object]]:
        """The lines of a ``--log-format json`` log, over every life of the process. gRPC's C core writes its own
        plain lines, and a kill -9 can cut the last line short: both are skipped."""
        lines = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return lines

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
            self.wait(10)

    def respawn(self) -> Proc:
        """A new process with the same command line and environment, appending to the same log."""
        return Proc(self.name, self.args, self.env, self.log_path).start()


@dataclass
class Cluster:
    """A manager and its workers for one test, with stubs to talk to the manager."""

    workdir: Path
    manager_port: int = field(default_factory=free_port)
    manager_args: list[str] = field(default_factory=list)
    processes: list[Proc] = field(default_factory=list)
    manager: Proc | None = None
    _manager_env: dict[str, str] | None = None
    _channel: grpc.Channel | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.manager_port}"

    store: str | None = None  # the job store's URL; default: a SQLite file in workdir

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.workdir / 'jobs.db'}"

    def start_manager(self, *extra: str, env: dict[str, str] | None = None) -> Proc:
        self.manager_args = list(extra)
        self._manager_env = env
        args = [
            sys.executable,
            "-m",
            "manager_service",
            "--listen",
            self.address,
            "--database-url",
            self.store_url,
            "--lease-timeout",
            "6",
            "--heartbeat-interval",
            "0.5",
            *extra,
        ]
        proc = Proc("manager", args, _clean_env(env or {}), self.workdir / "manager.log").start()
        self.manager = proc
        self.processes.append(proc)
        wait_for(
            lambda: self.health() == health_pb2.HealthCheckResponse.SERVING or (not proc.alive() and _raise(proc)),
            timeout=30,
            message=lambda: f"manager not SERVING; log:\n{proc.log()}",
        )
        return proc

    def restart_manager(self, *, graceful: bool, timeout: float = 30.0) -> Proc:
        """Stop the manager (SIGTERM and wait for it to exit, or kill -9), then start a new one at once on the
        same port and store with the same options. Returns the new process once it is SERVING."""
        assert self.manager is not None, "no manager to restart"
        if graceful:
            code = self.manager.terminate_and_wait(timeout)
            assert code == 0, f"the manager exited with {code} on SIGTERM:\n{self.manager.log()[-6000:]}"
        else:
            self.manager.kill9()
        # A fresh channel: the old one may sit in its reconnect backoff for seconds after the restart.
        self.close_channel()
        return self.start_manager(*self.manager_args, env=self._manager_env)

    def respawn(self, proc: Proc, wait_connected: bool = False) -> Proc:
        """Start ``proc`` again (after a kill) with the same command line, environment and log file."""
        assert not proc.alive(), f"{proc.name} still runs"
        again = proc.respawn()
        self.processes.append(again)
        if wait_connected:
            self.wait_worker(proc.name, again)
        return again

    def start_worker(
        self,
        worker_id: str,
        targets: Mapping[str, Path | str | URL],
        *extra: str,
        faults: str = "",
        slots: int = 1,
        wait_connected: bool = True,
    ) -> Proc:
        args = [
            sys.executable,
            "-m",
            "worker_service",
            "--manager",
            self.address,
            "--worker-id",
            worker_id,
            "--slots",
            str(slots),
        ]
        for name, where in targets.items():
            args += ["--target", f"{name}={target_url(where)}"]
        args += list(extra)
        # Fault injection is opt-in: a worker given faults is also given the permission to inject them.
        env = {"DBMAINT_FAULTS": faults, "DBMAINT_ALLOW_FAULT_INJECTION": "1"} if faults else {}
        proc = Proc(worker_id, args, _clean_env(env), self.workdir / f"{worker_id}.log").start()
        self.processes.append(proc)
        if wait_connected:
            self.wait_worker(worker_id, proc)
        return proc

    def worker_ids(self) -> set[str]:
        """The ids ListWorkers lists now."""
        return {w.worker_id for w in self.stub.ListWorkers(pb.ListWorkersRequest(), timeout=5).workers}

    def wait_worker(self, worker_id: str, proc: Proc | None = None) -> None:
        def connected() -> bool:
            if proc is not None and not proc.alive():
                _raise(proc)
            return worker_id in self.worker_ids()

        wait_for(
            connected,
            timeout=30,
            message=lambda: f"worker {worker_id} never connected; log:\n{proc.log() if proc else ''}",
        )

    # -- client side

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    @property
    def stub(self) -> pb_grpc.MaintenanceServiceStub:
        return pb_grpc.MaintenanceServiceStub(self.channel)

    def health(self, service: str = "") -> int:
        try:
            return int(
                health_pb2_grpc.HealthStub(self.channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                .status
            )
        except grpc.RpcError:
            return -1

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

    def logs(self) -> str:
        # A respawned process appends to the log of the one it replaces: each file once.
        latest = {p.log_path: p for p in self.processes}
        return "\n".join(f"----- {p.name} ({p.log_path})\n{p.log()[-6000:]}" for p in latest.values())

    def close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def close(self) -> None:
        self.close_channel()
        for proc in self.processes:
            proc.stop()


def _raise(proc: Proc) -> bool:
    raise AssertionError(f"{proc.name} exited with {proc.popen.returncode if proc.popen else '?'}:\n{proc.log()}")


@contextmanager
def cluster(workdir: Path, store: str | None = None) -> Iterator[Cluster]:
    running = Cluster(workdir, store=store)
    try:
        yield running
    finally:
        running.close()
