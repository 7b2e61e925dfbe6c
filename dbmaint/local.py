"""A manager and its workers as real processes on this machine: ``LocalFleet`` and the pieces it is made of.

``dbmaint demo``, the benchmark (``bench``) and the end-to-end tests all run the services as separate processes
on loopback ports; this module is the one way they start them, wait for them, signal them and stop them. It
needs only the package's own dependencies (the demo ships in the package).

The rules every process follows:

* It runs ``python -m manager_service`` / ``python -m worker_service`` with this interpreter
  (``sys.executable``), so the packages of the caller's environment are the ones that run. Its stdin is
  /dev/null; stdout and stderr go to one log file, opened for appending (a respawned process continues the log
  of the one it replaces). It runs in the log's folder unless told otherwise.
* Its environment is this one without ``DBMAINT_*`` settings (the fleet gets everything as flags, so a stray
  variable in the caller's shell cannot change it), with ``PYTHONUNBUFFERED=1`` (the log is current whenever it
  is read), plus what the caller adds.
* It runs in a session of its own: a Ctrl-C at the terminal reaches only the caller, which then stops the fleet
  in order.
* Ready means: the manager's ``grpc.health.v1`` answers SERVING, and ``ListWorkers`` lists every worker waited
  for. While waiting, a process that has exited raises ``ProcessExited`` (its name, exit code and the tail of
  its log); the deadline raises ``StartTimeout`` (what was awaited, the last error, every log's tail).
* A graceful stop is SIGTERM, a wait up to a timeout, then SIGKILL; the exit code ``None`` marks a process that
  had to be killed. The fleet stops its workers first (they drain while the manager still answers), then the
  manager.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc

T = TypeVar("T")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
# How long a SIGKILLed process may take to be reaped (it cannot refuse; this only bounds a wedged kernel).
KILL_TIMEOUT = 10.0
# The lines of a log an error message quotes: enough for a traceback, short enough to read.
LOG_TAIL_LINES = 30
# GetJob of a 10,000-child parent is several MB; the manager sends up to 16 MB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
POLL_INTERVAL = 0.05


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without ``DBMAINT_*`` settings, unbuffered, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DBMAINT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ProcessExited(RuntimeError):
    """A service process ended while it was still needed. ``headline`` says which, with what code, and the
    last line of its log; the message adds the log's tail."""

    def __init__(self, name: str, returncode: int | None, log_path: Path, tail: Sequence[str]) -> None:
        self.name = name
        self.returncode = returncode
        self.log_path = log_path
        last_words = f": {tail[-1].strip()}" if tail else ""
        self.headline = f"{name} exited with code {returncode}{last_words}"
        super().__init__(f"{self.headline}\n{_quote_log(log_path, tail)}")


class StartTimeout(TimeoutError):
    """A fleet did not become ready in time. ``headline`` says what was awaited; the message adds the tail of
    every log."""

    def __init__(self, headline: str, logs: str) -> None:
        self.headline = headline
        super().__init__(f"{headline}\n{logs}" if logs else headline)


def _quote_log(log_path: Path, tail: Sequence[str]) -> str:
    if not tail:
        return f"----- {log_path} (empty)"
    return f"----- the last {len(tail)} lines of {log_path}:\n" + "\n".join(tail)


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = POLL_INTERVAL) -> T:
    """Calls ``probe`` until it returns something truthy and returns that. Exceptions count as "not yet", except
    ``ProcessExited`` (waiting on a dead process is pointless); at the deadline ``TimeoutError`` names ``what``
    (a phrase: "the manager was not SERVING") and the last error."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as error:
            last_error = error
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} within {timeout:g}s (last error: {_describe(last_error)})")
        time.sleep(interval)


def _describe(error: Exception | None) -> str:
    """An error in one line: an RPC's status code and details (its repr spans lines of debug text)."""
    if isinstance(error, grpc.RpcError) and isinstance(error, grpc.Call):
        return f"{error.code().name}: {error.details()}"
    return repr(error)


# -- one process -------------------------------------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """One service process and its log file. ``start`` launches it; the other methods are safe to call on a
    process that has already ended (signals to it are dropped)."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=clean_env)
    cwd: Path | None = None  # None: the log's folder
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        """Launches the process (once: ``respawn`` makes a new one to start again)."""
        if self.popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child holds its own copy of the descriptor
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd or self.log_path.parent,
                start_new_session=True,
            )
        return self

    def respawn(self) -> ServiceProcess:
        """A new process with the same command line, environment and folder, appending to the same log."""
        return ServiceProcess(self.name, self.argv, self.log_path, self.env, self.cwd).start()

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: the signal that ended it); None while it runs or before it started."""
        return None if self.popen is None else self.popen.poll()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        """Raises ``ProcessExited`` if the process was started and has ended."""
        if self.popen is not None and self.popen.poll() is not None:
            raise ProcessExited(self.name, self.popen.returncode, self.log_path, self.log_tail())

    # -- signals

    def signal(self, signum: int) -> None:
        self._started().send_signal(signum)  # Popen drops it once the process has been reaped

    def terminate(self) -> None:
        """SIGTERM: the services finish what they must (a worker drains) and exit 0."""
        if self.alive():
            self.signal(signal.SIGTERM)

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets and files but does nothing until ``thaw``."""
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def kill9(self) -> int | None:
        """SIGKILL (no cleanup at all, as a crash) and reap it; its exit code (None if never started)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.kill()
        return self.popen.wait(KILL_TIMEOUT)

    # -- waiting

    def wait(self, timeout: float) -> int:
        """The exit code, once the process has ended; ``subprocess.TimeoutExpired`` after ``timeout``."""
        return self._started().wait(timeout)

    def terminate_and_wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and the exit code; ``subprocess.TimeoutExpired`` if it is still running after ``timeout``."""
        self.terminate()
        return self.wait(timeout)

    def wait_or_kill(self, timeout: float) -> int | None:
        """The exit code within ``timeout``; else SIGKILL and None (None too if it never started)."""
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Graceful stop: SIGTERM, wait up to ``timeout``, then SIGKILL. The exit code; None: it was killed."""
        self.terminate()
        return self.wait_or_kill(timeout)

    # -- the log

    def log(self) -> str:
        """The whole log ("" before the process wrote it)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last ``lines`` non-blank lines of the log."""
        return [line for line in self.log_lines() if line.strip()][-lines:]

    def json_lines(self) -> list[dict[str, object]]:
        """The lines of a ``--log-format json`` log, over every life of the process. gRPC's C core writes its own
        plain lines, and a kill -9 can cut the last line short: both are skipped."""
        found = []
        for line in self.log_lines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def _started(self) -> subprocess.Popen[bytes]:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.popen


def stop_all(processes: Iterable[ServiceProcess], timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
    """SIGTERM to all at once (they stop in parallel), then each one's ``wait_or_kill``: name -> exit code."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    return {process.name: process.wait_or_kill(timeout) for process in processes}


# -- a fleet -----------------------------------------------------------------------------------------------------


@dataclass
class LocalFleet:
    """A manager on a free loopback port and any number of workers, with a gRPC client to the manager.

    The job store is ``store_url`` (default: ``jobs.db`` in ``workdir``); logs go to ``log_dir`` (default:
    ``workdir``) as ``<name>.log``. ``processes`` holds every process ever started, in order (for logs and the
    final cleanup); ``manager`` and ``workers`` (by worker id) the current ones.
    """

    workdir: Path
    store_url: str = ""
    log_dir: Path | None = None
    manager_port: int = field(default_factory=free_port)
    manager: ServiceProcess | None = None
    workers: dict[str, ServiceProcess] = field(default_factory=dict)
    processes: list[ServiceProcess] = field(default_factory=list)
    _channel: grpc.Channel | None = None

    def __post_init__(self) -> None:
        self.store_url = self.store_url or f"sqlite:///{self.workdir / 'jobs.db'}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.manager_port}"

    def log_path(self, name: str) -> Path:
        return (self.log_dir or self.workdir) / f"{name}.log"

    # -- starting

    def manager_argv(self, *extra: str) -> list[str]:
        listen = ("--listen", self.address, "--database-url", self.store_url)
        return [sys.executable, "-m", "manager_service", *listen, *extra]

    def worker_argv(
        self, worker_id: str, *extra: str, targets: Mapping[str, str] | None = None, slots: int | None = None
    ) -> list[str]:
        argv = [sys.executable, "-m", "worker_service", "--manager", self.address, "--worker-id", worker_id]
        if slots is not None:
            argv += ["--slots", str(slots)]
        for name, url in (targets or {}).items():
            argv += ["--target", f"{name}={url}"]
        return [*argv, *extra]

    def launch(self, process: ServiceProcess) -> ServiceProcess:
        """Starts ``process`` as one of this fleet's (its log is shown by ``logs``, it is stopped with it)."""
        self.processes.append(process.start())
        return process

    def start_manager(
        self, *extra: str, env: Mapping[str, str] | None = None, wait: bool = True, timeout: float = START_TIMEOUT
    ) -> ServiceProcess:
        """Starts the manager with ``extra`` flags (and ``env`` added to the clean environment); with ``wait``,
        returns once it is SERVING."""
        self.manager = self.launch(
            ServiceProcess("manager", self.manager_argv(*extra), self.log_path("manager"), clean_env(env))
        )
        if wait:
            self.wait_serving(timeout)
        return self.manager

    def start_worker(
        self,
        worker_id: str,
        *extra: str,
        targets: Mapping[str, str] | None = None,
        slots: int | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        wait: bool = True,
        timeout: float = START_TIMEOUT,
    ) -> ServiceProcess:
        """Starts worker ``worker_id`` (process and log named ``name``, default the id) serving ``targets``
        (name -> URL) with ``extra`` flags; with ``wait``, returns once ListWorkers lists it."""
        argv = self.worker_argv(worker_id, *extra, targets=targets, slots=slots)
        label = name or worker_id
        process = self.launch(ServiceProcess(label, argv, self.log_path(label), clean_env(env)))
        self.workers[worker_id] = process
        if wait:
            self.wait_workers([worker_id], timeout)
        return process

    def respawn(
        self, process: ServiceProcess, wait: bool = False, timeout: float = START_TIMEOUT
    ) -> ServiceProcess:
        """Starts a process of this fleet again (after it ended) with the same command line, environment and
        log; it replaces the old one as the manager or as its worker. With ``wait``, returns once ready."""
        if process.alive():
            raise RuntimeError(f"{process.name} still runs")
        again = process.respawn()
        self.processes.append(again)
        worker_id = next((key for key, current in self.workers.items() if current is process), None)
        if worker_id is not None:
            self.workers[worker_id] = again
        if process is self.manager:
            self.manager = again
            self.close_channel()  # the old channel may sit in its reconnect backoff for seconds
        if wait and worker_id is not None:
            self.wait_workers([worker_id], timeout)
        elif wait:
            self.wait_serving(timeout)
        return again

    def restart_manager(self, *, graceful: bool, timeout: float = STOP_TIMEOUT) -> ServiceProcess:
        """Stops the manager (SIGTERM and its exit, which must be 0; or kill -9), then starts it again at once
        on the same port and store with the same flags. Returns the new process once it is SERVING."""
        manager = self._manager()
        if graceful:
            code = manager.terminate_and_wait(timeout)
            if code != 0:
                raise ProcessExited(manager.name, code, manager.log_path, manager.log_tail())
        else:
            manager.kill9()
        return self.respawn(manager, wait=True)

    # -- waiting

    def check_alive(self) -> None:
        """Raises ``ProcessExited`` for the first current process (manager, then workers) that has ended."""
        for process in ([self.manager] if self.manager else []) + list(self.workers.values()):
            process.check_alive()

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        """Returns once the manager's health service answers SERVING."""

        def serving() -> bool:
            self._manager().check_alive()
            return bool(self.health(raise_errors=True) == health_pb2.HealthCheckResponse.SERVING)

        self._wait(serving, timeout, f"the manager at {self.address} was not SERVING")

    def wait_workers(
        self, worker_ids: Iterable[str] | None = None, timeout: float = START_TIMEOUT
    ) -> list[pb.WorkerInfo]:
        """Returns ListWorkers' workers once it lists every one of ``worker_ids`` (default: all started). Only the
        manager and the awaited workers must stay alive meanwhile (another worker may be down on purpose)."""
        expected = set(self.workers if worker_ids is None else worker_ids)
        awaited = [process for worker_id, process in self.workers.items() if worker_id in expected]

        def connected() -> list[pb.WorkerInfo] | None:
            for process in [self._manager(), *awaited]:
                process.check_alive()
            listed = self.list_workers()
            return listed if {info.worker_id for info in listed} >= expected else None

        return self._wait(connected, timeout, f"workers {', '.join(sorted(expected))} did not all connect")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> list[pb.WorkerInfo]:
        """The manager SERVING and every worker connected, within one ``timeout``; ListWorkers' workers."""
        deadline = time.monotonic() + timeout
        self.wait_serving(timeout)
        return self.wait_workers(None, max(0.0, deadline - time.monotonic()))

    def _wait(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            return wait_until(probe, timeout, what)
        except TimeoutError as error:
            raise StartTimeout(str(error), self.logs(LOG_TAIL_LINES)) from None

    # -- the client side

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
            self._channel = grpc.insecure_channel(self.address, options=options)
        return self._channel

    @property
    def stub(self) -> pb_grpc.MaintenanceServiceStub:
        return pb_grpc.MaintenanceServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def health(self, service: str = "", *, raise_errors: bool = False) -> int:
        """The manager's grpc.health.v1 status of ``service``; -1 when it does not answer (unless
        ``raise_errors``)."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            return int(health_pb2_grpc.HealthStub(self.channel).Check(request, timeout=2).status)
        except grpc.RpcError:
            if raise_errors:
                raise
            return -1

    def list_workers(self) -> list[pb.WorkerInfo]:
        return list(self.stub.ListWorkers(pb.ListWorkersRequest(), timeout=5).workers)

    def worker_ids(self) -> set[str]:
        """The ids ListWorkers lists now."""
        return {info.worker_id for info in self.list_workers()}

    def close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # -- stopping

    def pids(self) -> dict[str, int]:
        """Process name -> pid of the current processes that were started."""
        current = [*self.workers.values(), *([self.manager] if self.manager else [])]
        return {process.name: process.pid for process in current if process.popen is not None}

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """Graceful stop: SIGTERM to the workers (they drain), their exits, then the manager's; any process
        still running after ``timeout`` is killed (exit code None). Returns name -> exit code of the current
        processes; every other process of the fleet still running is killed."""
        self.close_channel()
        codes = stop_all(self.workers.values(), timeout)
        if self.manager is not None:
            codes.update(stop_all([self.manager], timeout))
        self.kill()
        return codes

    def kill(self) -> None:
        """kill -9 every process of the fleet still running (a test's cleanup: fast, no draining)."""
        self.close_channel()
        for process in self.processes:
            process.kill9()

    def __enter__(self) -> LocalFleet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def logs(self, lines: int | None = None) -> str:
        """Each log file once (a respawned process appends to the log of the one it replaces), headed by its
        process and path; only the last ``lines`` of each when given."""
        latest = {process.log_path: process for process in self.processes}
        parts = []
        for path, process in latest.items():
            text = process.log_lines() if lines is None else process.log_tail(lines)
            parts.append(f"----- {process.name} ({path})\n" + "\n".join(text))
        return "\n".join(parts)

    def _manager(self) -> ServiceProcess:
        if self.manager is None:
            raise RuntimeError("the manager was not started")
        return self.manager
