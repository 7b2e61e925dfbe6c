"""compose.yaml: valid against the Compose Specification, shaped as intended, and its commands really work.

There is no Docker engine here, so the e2e test plays compose itself: it reads compose.yaml, takes each service's
command, environment and healthcheck, rewrites what only makes sense inside containers (service host names →
127.0.0.1, container ports → free local ports per replica, volume mount points → directories under tmp_path),
starts the services as processes in ``depends_on`` order honouring the conditions, runs a maintenance with
``dbmaint create --watch`` and stops everything with SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
SCHEMA_FILE = REPO.parent / "shared" / "compose" / "compose-spec.json"
BIN = Path(sys.executable).parent

MANAGER_ENV = {
    "DBMAINT_LISTEN",
    "DBMAINT_DATABASE_URL",
    "DBMAINT_LEASE_TIMEOUT",
    "DBMAINT_HEARTBEAT_INTERVAL",
    "DBMAINT_MAX_ATTEMPTS",
    "DBMAINT_LOG_LEVEL",
}
WORKER_ENV = {
    "DBMAINT_MANAGER",
    "DBMAINT_TARGETS",
    "DBMAINT_SLOTS",
    "DBMAINT_WORKER_ID",
    "DBMAINT_GRACE",
    "DBMAINT_HEALTH_LISTEN",
    "DBMAINT_LOG_LEVEL",
}
START_TIMEOUT = 60.0


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "compose.yaml is not a mapping"
    return document


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    def words(value: Any) -> list[str]:
        return [] if value is None else value.split() if isinstance(value, str) else [str(v) for v in value]

    return words(service.get("entrypoint")) + words(service.get("command"))


def healthcheck_argv(service: dict[str, Any]) -> list[str] | None:
    test = service.get("healthcheck", {}).get("test")
    if test is None:
        return None
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *rest = test
    if kind == "CMD":
        return [str(word) for word in rest]
    if kind == "CMD-SHELL":
        return ["sh", "-c", str(rest[0])]
    raise AssertionError(f"unsupported healthcheck test {test!r}")


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(amount) * units[unit]
    return total


# -- (a) the file itself ----------------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    if not SCHEMA_FILE.is_file():
        pytest.fail(
            f"the Compose Specification schema is missing: expected {SCHEMA_FILE} (shared/ must sit beside the "
            "repository clone); compose.yaml cannot be validated without it"
        )
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)

    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(load_compose())
    ]

    assert errors == []
    # The validator does reject a broken file (so the check above can fail).
    broken = load_compose()
    broken["services"]["worker"]["depends_on"]["manager"]["condition"] = "service_ready"
    broken["services"]["manager"]["healthchek"] = {}
    assert len(list(validator.iter_errors(broken))) == 2


def test_compose_file_has_the_intended_shape() -> None:
    compose = load_compose()
    services = compose["services"]
    manager, worker, init = services["manager"], services["worker"], services["demo-init"]

    assert "version" not in compose
    assert set(services) == {"demo-init", "manager", "worker"}
    assert worker["deploy"]["replicas"] == 2
    # every service runs the image built from the top-level Dockerfile
    for service in services.values():
        assert service["build"]["context"] == "."
        assert (REPO / service["build"].get("dockerfile", "Dockerfile")).is_file()
    # environment variables named exactly as the services read them
    manager_env, worker_env = environment(manager), environment(worker)
    assert set(manager_env) <= MANAGER_ENV and {"DBMAINT_LISTEN", "DBMAINT_DATABASE_URL"} <= set(manager_env)
    assert set(worker_env) <= WORKER_ENV
    assert {"DBMAINT_MANAGER", "DBMAINT_TARGETS", "DBMAINT_HEALTH_LISTEN"} <= set(worker_env)
    assert "DBMAINT_WORKER_ID" not in worker_env, "two replicas would share one worker id"
    assert worker_env["DBMAINT_MANAGER"] == f"manager:{port_of(manager_env['DBMAINT_LISTEN'])}"
    # healthchecks through grpc.health.v1 with `dbmaint health` on each service's own port
    manager_check, worker_check = healthcheck_argv(manager), healthcheck_argv(worker)
    assert manager_check is not None and manager_check[:2] == ["dbmaint", "health"]
    assert manager_check[-1] == f"127.0.0.1:{port_of(manager_env['DBMAINT_LISTEN'])}"
    assert worker_check is not None and worker_check[:2] == ["dbmaint", "health"]
    assert worker_check[-1] == f"127.0.0.1:{port_of(worker_env['DBMAINT_HEALTH_LISTEN'])}"
    assert "healthcheck" not in init
    # start order: demo-init completes, then the manager is healthy, then the workers start
    assert manager["depends_on"] == {"demo-init": {"condition": "service_completed_successfully"}}
    assert worker["depends_on"]["manager"] == {"condition": "service_healthy"}
    assert worker["depends_on"]["demo-init"] == {"condition": "service_completed_successfully"}
    # one named volume at /data: the manager's store, the demo target the workers serve, what demo-init creates
    volume = next(iter(compose["volumes"]))
    for service in services.values():
        assert f"{volume}:/data" in service["volumes"]
    assert manager_env["DBMAINT_DATABASE_URL"].startswith("sqlite:////data/")
    url = worker_env["DBMAINT_TARGETS"].partition("=")[2]
    assert url == "sqlite:////data/demo.db"
    assert command(init)[:3] == ["dbmaint", "make-demo-db", "/data/demo.db"]
    # a worker drains within its grace period before Docker's SIGKILL
    assert duration(worker["stop_grace_period"]) > float(worker_env["DBMAINT_GRACE"])


def test_dockerfile_builds_from_python_311_slim_and_installs_the_project() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()

    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# -- (b) the commands, as processes -----------------------------------------------------------------------------


def freelist_count(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        count: int = connection.execute("PRAGMA freelist_count").fetchone()[0]
        return count
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Container:
    service: str
    replica: int
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica + 1}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    def healthy(self) -> bool:
        assert self.healthcheck is not None
        result = subprocess.run(self.healthcheck, env=self.env, capture_output=True, timeout=30)
        return result.returncode == 0


@dataclass
class LocalCompose:
    """compose.yaml played with local processes."""

    compose: dict[str, Any]
    root: Path
    ports: dict[tuple[str, int, int], int] = field(default_factory=dict)
    containers: dict[str, list[Container]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mounts: dict[str, dict[str, Path]] = {}
        for name, service in self.compose["services"].items():
            mounts = {}
            for spec in service.get("volumes", []):
                volume, target = spec.split(":")[:2]
                mounts[target] = self.root / volume
                mounts[target].mkdir(parents=True, exist_ok=True)
            self.mounts[name] = mounts
        (self.root / "logs").mkdir(exist_ok=True)

    def host_port(self, service: str, replica: int, port: int) -> int:
        key = (service, replica, port)
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def rewrite(self, text: str, service: str, replica: int) -> str:
        services = "|".join(re.escape(name) for name in self.compose["services"])

        def own(match: re.Match[str]) -> str:  # an address this container listens on or calls itself at
            return f"127.0.0.1:{self.host_port(service, replica, int(match.group(1)))}"

        def other(match: re.Match[str]) -> str:  # another service, by its compose name
            return f"127.0.0.1:{self.host_port(match.group(1), 0, int(match.group(2)))}"

        text = re.sub(r"\b(?:0\.0\.0\.0|127\.0\.0\.1|localhost):(\d+)\b", own, text)
        text = re.sub(rf"(?<![\w.-])({services}):(\d+)\b", other, text)
        for target, directory in self.mounts[service].items():
            text = re.sub(rf"(?<![\w.-]){re.escape(target)}(?=/|$)", str(directory), text)
        return text

    def executable(self, word: str) -> str:
        if word in ("python", "python3"):
            return sys.executable
        found = shutil.which(word, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        assert found, f"{word!r} (from compose.yaml) is not installed"
        return found

    def create(self, name: str) -> list[Container]:
        service = self.compose["services"][name]
        replicas = service.get("deploy", {}).get("replicas", 1)
        base = {key: value for key, value in os.environ.items() if not key.startswith("DBMAINT_")}
        base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
        containers = []
        for replica in range(replicas):
            env = base | {key: self.rewrite(value, name, replica) for key, value in environment(service).items()}
            argv = [self.rewrite(word, name, replica) for word in command(service)]
            check = healthcheck_argv(service)
            containers.append(
                Container(
                    service=name,
                    replica=replica,
                    argv=[self.executable(argv[0]), *argv[1:]],
                    env=env,
                    healthcheck=None if check is None else [self.rewrite(word, name, replica) for word in check],
                    log=self.root / "logs" / f"{name}-{replica + 1}.log",
                )
            )
        self.containers[name] = containers
        return containers

    def order(self) -> list[str]:
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...] = ()) -> None:
            assert name not in path, f"depends_on cycle: {path}"
            for dependency in self.compose["services"][name].get("depends_on", {}):
                visit(dependency, (*path, name))
            if name not in done:
                done.append(name)

        for name in self.compose["services"]:
            visit(name)
        return done

    def wait_for(self, name: str, condition: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for container in self.containers[name]:
            assert container.process is not None
            if condition == "service_completed_successfully":
                code = container.process.wait(timeout=START_TIMEOUT)
                assert code == 0, f"{container.name} exited with {code}\n{self.logs()}"
            elif condition == "service_healthy":
                while not container.healthy():
                    assert container.process.poll() is None, f"{container.name} exited\n{self.logs()}"
                    assert time.monotonic() < deadline, f"{container.name} never became healthy\n{self.logs()}"
                    time.sleep(0.25)
            else:
                assert condition == "service_started", condition

    def up(self) -> None:
        for name in self.order():
            for dependency, spec in self.compose["services"][name].get("depends_on", {}).items():
                self.wait_for(dependency, spec.get("condition", "service_started"))
            for container in self.create(name):
                container.start()
        for name, containers in self.containers.items():
            if containers[0].healthcheck is not None:
                self.wait_for(name, "service_healthy")

    def stop(self, name: str) -> list[int]:
        """SIGTERM every replica, wait for each (up to its stop_grace_period); the exit codes."""
        grace = duration(str(self.compose["services"][name].get("stop_grace_period", "10s")))
        running = [c.process for c in self.containers[name] if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        return [process.wait(timeout=grace) for process in running]

    def kill_all(self) -> None:
        for containers in self.containers.values():
            for container in containers:
                if container.process is not None and container.process.poll() is None:
                    container.process.kill()
                    container.process.wait()

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "logs").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)


@pytest.mark.e2e
def test_the_services_compose_declares_run_and_maintain_the_demo_target(tmp_path: Path) -> None:
    compose = load_compose()
    fleet = LocalCompose(compose, tmp_path)
    manager_port = port_of(environment(compose["services"]["manager"])["DBMAINT_LISTEN"])
    target = environment(compose["services"]["worker"])["DBMAINT_TARGETS"].split()[0].split("=", 1)[0]
    try:
        fleet.up()
        address = f"127.0.0.1:{fleet.host_port('manager', 0, manager_port)}"
        dbmaint = str(BIN / "dbmaint")
        demo_db = fleet.mounts["demo-init"]["/data"] / "demo.db"
        before = freelist_count(demo_db)

        listed = subprocess.run(
            [dbmaint, "--manager", address, "workers", "--json"], capture_output=True, text=True, timeout=30
        )
        workers = json.loads(listed.stdout)["workers"]
        run = subprocess.run(
            [dbmaint, "--manager", address, "create", target, *("-o", "vacuum", "-o", "analyze"), "--watch"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        after = freelist_count(demo_db)
        worker_codes = fleet.stop("worker")
        manager_codes = fleet.stop("manager")
    finally:
        fleet.kill_all()

    assert len(workers) == 2 and all(worker["targets"] == [target] for worker in workers), listed.stdout
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{fleet.logs()}"
    assert "completed" in run.stdout and "Traceback" not in run.stderr
    assert before > 0 and after == 0, "VACUUM did not give the free pages back"
    assert worker_codes == [0, 0], fleet.logs()
    assert manager_codes == [0], fleet.logs()
