"""compose.yaml: valid against the Compose Specification, shaped as intended, and its commands really work.

There is no Docker engine here, so the e2e test plays compose itself: it reads compose.yaml (``${VAR:-default}``
interpolated with the defaults), takes each service's command, environment and healthcheck, rewrites what only
makes sense inside containers (service host names → 127.0.0.1, container ports → free local ports per replica,
volume mount points → directories under tmp_path), starts the services as processes in ``depends_on`` order
honouring the conditions, runs a maintenance with ``dbmaint create --watch`` and stops everything with SIGTERM.

The services that run a third-party image (``postgres:16``) are not processes: each is a fresh database on the
local PostgreSQL server (tests/support/servers: a test FAILS in CI when the server is missing). The URLs that name
such a service get that database's host, port, user and name; a variable that carries the service's password
gets the local one (or is dropped: the local server may need none). Their healthcheck is played as a
``SELECT 1`` on that database.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from dbmaint.cli.demo_postgres import DEMO_TABLE
from dbmaint.local import ServiceProcess, free_port
from tests.support.servers import fresh_postgres_database, require_postgres
from worker_service.config import ENV_TARGET_PASSWORD, parse_targets, secret_key

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
SCHEMA_FILE = REPO.parent / "shared" / "compose" / "compose-spec.json"
BIN = Path(sys.executable).parent

POSTGRES_IMAGE = "postgres:16"
POSTGRES_PORT = 5432
POSTGRES_DATA = "/var/lib/postgresql/data"
LIBPQ_ENV = {"PGPASSWORD"}  # read by libpq (psycopg) when a URL has no password
MANAGER_ENV = {
    "DBMAINT_LISTEN",
    "DBMAINT_DATABASE_URL",
    "DBMAINT_LEASE_TIMEOUT",
    "DBMAINT_HEARTBEAT_INTERVAL",
    "DBMAINT_MAX_ATTEMPTS",
    "DBMAINT_LOG_LEVEL",
    "DBMAINT_CLIENT_TOKENS",
    "DBMAINT_WORKER_TOKENS",
    "DBMAINT_ADVERTISE",
    "DBMAINT_TOKEN",  # for the CLI run inside the manager's container ...
    "DBMAINT_MANAGER",  # ... which finds the leader among both managers
    *LIBPQ_ENV,
}
MANAGERS = ("manager-1", "manager-2")
WORKER_ENV = {
    "DBMAINT_MANAGER",
    "DBMAINT_TARGETS",
    "DBMAINT_SLOTS",
    "DBMAINT_WORKER_ID",
    "DBMAINT_GRACE",
    "DBMAINT_HEALTH_LISTEN",
    "DBMAINT_LOG_LEVEL",
    "DBMAINT_WORKER_TOKEN",
}
# The variables compose.yaml interpolates; each has a default, so `docker compose up` works without a .env.
COMPOSE_VARIABLES = {
    "POSTGRES_STORE_PASSWORD",
    "POSTGRES_TARGET_PASSWORD",
    "DBMAINT_CLIENT_TOKEN",
    "DBMAINT_WORKER_TOKEN",
}
# The one-shot that creates the demo's schedule is a CLI client of the manager: its address and client token.
SCHEDULE_INIT_ENV = {"DBMAINT_MANAGER", "DBMAINT_TOKEN"}
START_TIMEOUT = 60.0

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"']+")


def interpolate(value: str, variables: Mapping[str, str], used: set[str] | None = None) -> str:
    """Compose's interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        if used is not None:
            used.add(name)
        current, op = variables.get(name), match["op"] or ""
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return match["arg"] if unset else str(current)
        if op.endswith("?"):
            assert not unset, f"compose.yaml requires {name}: {match['arg']}"
        return current or ""

    return _VARIABLE.sub(one, value)


def interpolated(node: Any, variables: Mapping[str, str], used: set[str] | None = None) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables, used)
    if isinstance(node, list):
        return [interpolated(item, variables, used) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, variables, used) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "compose.yaml is not a mapping"
    return document


def load_compose(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as compose sees it, interpolated (by default: no variables set, so with the defaults)."""
    document: dict[str, Any] = interpolated(raw_compose(), variables or {})
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


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):  # the short form: service_started
        return {name: {"condition": "service_started"} for name in deps}
    return dict(deps)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def duration(text_: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text_):
        total += float(amount) * units[unit]
    return total


def runs_dbmaint(service: dict[str, Any]) -> bool:
    """A service of the image built from the Dockerfile (the others run a third-party image)."""
    return "build" in service


@dataclass(frozen=True)
class PostgresService:
    """What a ``postgres`` image service creates at its first start (the image's POSTGRES_* variables)."""

    user: str
    database: str
    password: str

    @classmethod
    def of(cls, service: dict[str, Any]) -> PostgresService:
        env = environment(service)
        user = env.get("POSTGRES_USER", "postgres")
        return cls(user=user, database=env.get("POSTGRES_DB", user), password=env["POSTGRES_PASSWORD"])


def postgres_services(compose: dict[str, Any]) -> dict[str, PostgresService]:
    return {
        name: PostgresService.of(service)
        for name, service in compose["services"].items()
        if str(service.get("image", "")).partition(":")[0] == "postgres"
    }


def pg_isready_options(argv: list[str]) -> dict[str, str]:
    """host, port, username, dbname of a ``pg_isready`` command (short or long options)."""
    assert argv[0] == "pg_isready", argv
    names = {"-h": "host", "-p": "port", "-U": "username", "-d": "dbname"}
    options: dict[str, str] = {}
    words = iter(argv[1:])
    for word in words:
        if word.startswith("--") and "=" in word:
            key, value = word[2:].split("=", 1)
            options[key] = value
        elif word.startswith("--"):
            options[word[2:]] = next(words)
        elif word in names:
            options[names[word]] = next(words)
        else:
            raise AssertionError(f"unexpected pg_isready argument {word!r}")
    return options


def urls_in(value: str) -> list[URL]:
    found = []
    for match in _URL.finditer(value):
        with suppress(ArgumentError):
            found.append(make_url(match.group(0)))
    return found


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
    broken["services"]["worker"]["depends_on"]["manager-1"]["condition"] = "service_ready"
    broken["services"]["manager-2"]["healthchek"] = {}
    broken["services"]["postgres"]["healthcheck"]["retries"] = []
    assert len(list(validator.iter_errors(broken))) == 3


def test_compose_file_interpolates_only_the_secret_variables_each_with_a_default() -> None:
    used: set[str] = set()
    defaults = interpolated(raw_compose(), {}, used)
    chosen = interpolated(raw_compose(), dict.fromkeys(COMPOSE_VARIABLES, "chosen-pw"))

    assert used == COMPOSE_VARIABLES
    passwords = {name: pg.password for name, pg in postgres_services(defaults).items()}
    assert all(passwords.values()), passwords  # a default for each
    assert len(set(passwords.values())) == len(passwords), "the job store and the target share a password"
    assert {pg.password for pg in postgres_services(chosen).values()} == {"chosen-pw"}
    # Tokens: the manager accepts the worker's token as a worker and its own client token as a client, and the
    # two roles never share a token.
    worker_env = defaults["services"]["worker"]["environment"]
    for name in MANAGERS:
        manager_env = defaults["services"][name]["environment"]
        assert manager_env["DBMAINT_WORKER_TOKENS"] == worker_env["DBMAINT_WORKER_TOKEN"]
        assert manager_env["DBMAINT_CLIENT_TOKENS"] == manager_env["DBMAINT_TOKEN"]
        assert manager_env["DBMAINT_CLIENT_TOKENS"] != manager_env["DBMAINT_WORKER_TOKENS"]


def test_compose_file_has_the_intended_shape() -> None:
    compose = load_compose()
    services = compose["services"]
    manager, standby, worker = services["manager-1"], services["manager-2"], services["worker"]
    init, pg_init = services["demo-init"], services["demo-pg-init"]
    store, target = services["postgres"], services["postgres-target"]

    assert "version" not in compose
    schedule_init = services["schedule-init"]
    assert set(services) == {
        "postgres",
        "postgres-target",
        "demo-init",
        "demo-pg-init",
        "manager-1",
        "manager-2",
        "worker",
        "schedule-init",
    }
    assert worker["deploy"]["replicas"] == 2
    # dbmaint's services run the image built from the top-level Dockerfile; the databases the official postgres
    for name, service in services.items():
        if name in ("postgres", "postgres-target"):
            assert service["image"] == POSTGRES_IMAGE and "build" not in service
        else:
            assert service["build"]["context"] == "."
            assert (REPO / service["build"].get("dockerfile", "Dockerfile")).is_file()
    # environment variables named exactly as the services read them
    manager_env, worker_env, pg_init_env = environment(manager), environment(worker), environment(pg_init)
    assert set(manager_env) <= MANAGER_ENV and {"DBMAINT_LISTEN", "DBMAINT_DATABASE_URL"} <= set(manager_env)
    target_specs = {spec.name: spec for spec in parse_targets(worker_env["DBMAINT_TARGETS"].split())}
    password_vars = {ENV_TARGET_PASSWORD + secret_key(name) for name in target_specs}
    assert set(worker_env) <= WORKER_ENV | password_vars
    assert {"DBMAINT_MANAGER", "DBMAINT_TARGETS", "DBMAINT_HEALTH_LISTEN"} <= set(worker_env)
    assert "DBMAINT_WORKER_ID" not in worker_env, "two replicas would share one worker id"
    # two managers on the one store, each advertising its own address; workers and clients are given both
    standby_env = environment(standby)
    port = port_of(manager_env["DBMAINT_LISTEN"])
    assert {k: v for k, v in standby_env.items() if k != "DBMAINT_ADVERTISE"} == {
        k: v for k, v in manager_env.items() if k != "DBMAINT_ADVERTISE"
    }
    assert [environment(services[name])["DBMAINT_ADVERTISE"] for name in MANAGERS] == [
        f"{name}:{port}" for name in MANAGERS
    ]
    both = ",".join(f"{name}:{port}" for name in MANAGERS)
    assert worker_env["DBMAINT_MANAGER"] == manager_env["DBMAINT_MANAGER"] == both
    assert manager["ports"] != standby["ports"], "both managers published on one host port"
    assert healthcheck_argv(standby) == healthcheck_argv(manager)
    assert set(pg_init_env) == LIBPQ_ENV
    # healthchecks: grpc.health.v1 with `dbmaint health` on each dbmaint service's own port ...
    manager_check, worker_check = healthcheck_argv(manager), healthcheck_argv(worker)
    assert manager_check is not None and manager_check[:2] == ["dbmaint", "health"]
    assert manager_check[-1] == f"127.0.0.1:{port_of(manager_env['DBMAINT_LISTEN'])}"
    assert "--service" not in manager_check, "the empty service name: a standby is healthy too"
    assert worker_check is not None and worker_check[:2] == ["dbmaint", "health"]
    assert worker_check[-1] == f"127.0.0.1:{port_of(worker_env['DBMAINT_HEALTH_LISTEN'])}"
    assert "healthcheck" not in init and "healthcheck" not in pg_init
    # ... and pg_isready over TCP (not the socket initdb's temporary server listens on) for the user and database
    # the postgres image creates
    pg = postgres_services(compose)
    for name in ("postgres", "postgres-target"):
        check = healthcheck_argv(services[name])
        assert check is not None
        options = pg_isready_options(check)
        assert options == {
            "host": "127.0.0.1",
            "port": str(POSTGRES_PORT),
            "username": pg[name].user,
            "dbname": pg[name].database,
        }
        assert "ports" not in services[name], f"{name} is published to the host"
    # start order: the databases are healthy, then the inits complete and the manager is healthy, then the workers
    healthy, completed = {"condition": "service_healthy"}, {"condition": "service_completed_successfully"}
    assert depends_on(store) == {} and depends_on(target) == {} and depends_on(init) == {}
    assert depends_on(pg_init) == {"postgres-target": healthy}
    assert depends_on(manager) == depends_on(standby) == {"postgres": healthy}
    assert depends_on(schedule_init) == {"manager-1": healthy, "manager-2": healthy}
    assert depends_on(worker) == {
        "manager-1": healthy,
        "manager-2": healthy,
        "postgres-target": healthy,
        "demo-init": completed,
        "demo-pg-init": completed,
    }
    # the job store: PostgreSQL in the postgres service, the password in PGPASSWORD (not in the URL)
    store_url = make_url(manager_env["DBMAINT_DATABASE_URL"])
    assert (store_url.drivername, store_url.host, store_url.port) == ("postgresql+psycopg", "postgres", 5432)
    assert (store_url.username, store_url.database) == (pg["postgres"].user, pg["postgres"].database)
    assert store_url.password is None and manager_env["PGPASSWORD"] == pg["postgres"].password
    # the targets: the SQLite file demo-init creates on the shared volume, and the database demo-pg-init fills in
    # postgres-target (not the job store), its password in DBMAINT_TARGET_PASSWORD_<NAME>
    assert set(target_specs) == {"demo", "demo-pg"}
    assert target_specs["demo"].url.render_as_string() == "sqlite:////data/demo.db"
    assert command(init) == ["dbmaint", "make-demo-db", "/data/demo.db", "--rows", "50000", "--exist-ok"]
    pg_target = target_specs["demo-pg"].url
    assert (pg_target.drivername, pg_target.host, pg_target.port) == (
        "postgresql+psycopg",
        "postgres-target",
        5432,
    )
    assert (pg_target.username, pg_target.database) == (pg["postgres-target"].user, pg["postgres-target"].database)
    assert pg_target.password is None
    assert worker_env[ENV_TARGET_PASSWORD + secret_key("demo-pg")] == pg["postgres-target"].password
    assert command(pg_init)[:2] == ["dbmaint", "make-demo-db"] and "--exist-ok" in command(pg_init)
    assert make_url(command(pg_init)[2]) == pg_target
    assert pg_init_env["PGPASSWORD"] == pg["postgres-target"].password
    # no password on a command line (ps shows it), nor in a URL
    for name, service in services.items():
        words = command(service) + (healthcheck_argv(service) or [])
        for password in (p.password for p in pg.values()):
            assert not any(password in word for word in words), f"{name}: a password on the command line"
        for value in [*words, *environment(service).values()]:
            assert all(url.password is None for url in urls_in(value)), f"{name}: a password in a URL"
    # volumes: /data shared by demo-init and the workers (the SQLite target); one per postgres server
    volume_of = {
        name: {spec.split(":")[1]: spec.split(":")[0] for spec in s.get("volumes", [])}
        for name, s in services.items()
    }
    assert volume_of["demo-init"]["/data"] == volume_of["worker"]["/data"]
    assert "/data" not in volume_of["manager-1"] and "volumes" not in pg_init
    assert volume_of["postgres"][POSTGRES_DATA] != volume_of["postgres-target"][POSTGRES_DATA]
    assert set(compose["volumes"]) == {v for mounts in volume_of.values() for v in mounts.values()}
    # the demo's schedule: created once the manager is healthy, by a client of it, idempotent (--exist-ok)
    schedule_env = environment(schedule_init)
    assert set(schedule_env) == SCHEDULE_INIT_ENV
    assert schedule_env["DBMAINT_MANAGER"] == worker_env["DBMAINT_MANAGER"]
    assert schedule_env["DBMAINT_TOKEN"] == manager_env["DBMAINT_CLIENT_TOKENS"], "a client token"
    schedule_command = command(schedule_init)
    assert schedule_command[:3] == ["dbmaint", "schedule", "create"] and "--exist-ok" in schedule_command
    assert [word for word in schedule_command if word in target_specs] == sorted(target_specs)
    assert "healthcheck" not in schedule_init and schedule_init["restart"] == "no"
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


def query(url: URL, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))  # a fresh look at the cumulative statistics
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def dead_tuples(url: URL) -> int:
    rows = query(url, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = :t", t=DEMO_TABLE)
    assert rows, f"{DEMO_TABLE} is missing"
    count: int = rows[0][0]
    return count


def poll(probe: Callable[[], int], done: Callable[[int], bool], timeout: float = 15.0) -> int:
    """The first value of ``probe`` that is ``done``, or the last one at the deadline (statistics may lag)."""
    deadline = time.monotonic() + timeout
    while not done(value := probe()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


@dataclass
class Container:
    service: str
    replica: int
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None
    log: Path
    process: ServiceProcess | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica + 1}"

    def start(self) -> None:
        # The environment compose gives the service (DBMAINT_* included), not a cleaned one; the folder stays ours.
        self.process = ServiceProcess(self.name, self.argv, self.log, self.env, cwd=Path.cwd()).start()

    def healthy(self) -> bool:
        assert self.healthcheck is not None
        result = subprocess.run(self.healthcheck, env=self.env, capture_output=True, timeout=30)
        return result.returncode == 0


@dataclass
class LocalCompose:
    """compose.yaml played with local processes; its postgres services are databases of the local server."""

    compose: dict[str, Any]
    root: Path
    stack: ExitStack
    ports: dict[tuple[str, int, int], int] = field(default_factory=dict)
    containers: dict[str, list[Container]] = field(default_factory=dict)
    databases: dict[str, URL] = field(default_factory=dict)  # postgres service -> its local stand-in

    def __post_init__(self) -> None:
        self.postgres = postgres_services(self.compose)
        for name, service in self.compose["services"].items():
            assert runs_dbmaint(service) or name in self.postgres, f"{name}: no local stand-in for its image"
        self.mounts: dict[str, dict[str, Path]] = {}
        for name, service in self.compose["services"].items():
            mounts = {}
            for spec in service.get("volumes", []) if runs_dbmaint(service) else []:
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

    def rewrite(self, text_: str, service: str, replica: int) -> str:
        services = "|".join(re.escape(name) for name in self.compose["services"] if name not in self.postgres)

        def own(match: re.Match[str]) -> str:  # an address this container listens on or calls itself at
            return f"127.0.0.1:{self.host_port(service, replica, int(match.group(1)))}"

        def other(match: re.Match[str]) -> str:  # another service, by its compose name
            return f"127.0.0.1:{self.host_port(match.group(1), 0, int(match.group(2)))}"

        text_ = re.sub(r"\b(?:0\.0\.0\.0|127\.0\.0\.1|localhost):(\d+)\b", own, text_)
        text_ = re.sub(rf"(?<![\w.-])({services}):(\d+)\b", other, text_)
        for target, directory in self.mounts[service].items():
            text_ = re.sub(rf"(?<![\w.-]){re.escape(target)}(?=/|$)", str(directory), text_)
        return _URL.sub(lambda match: self.database_url(match.group(0), service), text_)

    def database_url(self, text_: str, service: str) -> str:
        """A URL naming a postgres service -> the same for its local database (else ``text_`` unchanged)."""
        try:
            url = make_url(text_)
        except ArgumentError:
            return text_
        if url.host not in self.postgres:
            return text_
        server = self.postgres[url.host]
        assert url.host in depends_on(self.compose["services"][service]), f"{service} uses {url.host} unawaited"
        assert url.port in (None, POSTGRES_PORT), f"{service}: {url.host} listens on {POSTGRES_PORT}"
        assert (url.username, url.database) == (server.user, server.database), f"{service}: no such user/database"
        local = self.databases[url.host]
        password = local.password if url.password is not None else None
        return local.set(drivername=url.drivername, query=url.query, password=password).render_as_string(False)

    def passwords(self, service: str) -> dict[str, str | None]:
        """The passwords of the postgres services ``service`` waits for -> those of their local stand-ins."""
        return {
            self.postgres[name].password: self.databases[name].password
            for name in depends_on(self.compose["services"][service])
            if name in self.postgres
        }

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
        passwords = self.passwords(name)
        known = {server.password for server in self.postgres.values()}
        containers = []
        for replica in range(replicas):
            env = dict(base)
            for key, value in environment(service).items():
                if value in passwords:  # the local server's password, or none (then libpq's defaults apply)
                    env.pop(key, None)
                    if passwords[value] is not None:
                        env[key] = str(passwords[value])
                else:
                    assert value not in known, f"{name}: {key} holds the password of a server it does not await"
                    env[key] = self.rewrite(value, name, replica)
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

    def provision(self, name: str) -> None:
        """A postgres service: a fresh database of the local server stands in for it (dropped at the end)."""
        prefix = "dbmaint_compose_" + re.sub(r"\W", "_", name)
        self.databases[name] = self.stack.enter_context(fresh_postgres_database(prefix))

    def database_healthy(self, name: str) -> bool:
        """The postgres healthcheck, played: the database answers a query."""
        try:
            return query(self.databases[name], "SELECT 1") == [(1,)]
        except Exception:
            return False

    def order(self) -> list[str]:
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...] = ()) -> None:
            assert name not in path, f"depends_on cycle: {path}"
            for dependency in depends_on(self.compose["services"][name]):
                visit(dependency, (*path, name))
            if name not in done:
                done.append(name)

        for name in self.compose["services"]:
            visit(name)
        return done

    def wait_for(self, name: str, condition: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        if name in self.postgres:
            assert condition in ("service_started", "service_healthy"), f"{name} never completes: {condition}"
            while condition == "service_healthy" and not self.database_healthy(name):
                assert time.monotonic() < deadline, f"{name} never became healthy"
                time.sleep(0.25)
            return
        for container in self.containers[name]:
            assert container.process is not None
            if condition == "service_completed_successfully":
                code = container.process.wait(timeout=START_TIMEOUT)
                assert code == 0, f"{container.name} exited with {code}\n{self.logs()}"
            elif condition == "service_healthy":
                while not container.healthy():
                    assert container.process.alive(), f"{container.name} exited\n{self.logs()}"
                    assert time.monotonic() < deadline, f"{container.name} never became healthy\n{self.logs()}"
                    time.sleep(0.25)
            else:
                assert condition == "service_started", condition

    def up(self) -> None:
        for name in self.order():
            for dependency, spec in depends_on(self.compose["services"][name]).items():
                self.wait_for(dependency, spec.get("condition", "service_started"))
            if name in self.postgres:
                self.provision(name)
                continue
            for container in self.create(name):
                container.start()
        for name in self.postgres:
            self.wait_for(name, "service_healthy")
        for name, containers in self.containers.items():
            if containers[0].healthcheck is not None:
                self.wait_for(name, "service_healthy")

    def stop(self, name: str) -> list[int]:
        """SIGTERM every replica, wait for each (up to its stop_grace_period); the exit codes."""
        grace = duration(str(self.compose["services"][name].get("stop_grace_period", "10s")))
        running = [c.process for c in self.containers[name] if c.process is not None and c.process.alive()]
        for process in running:
            process.terminate()
        return [process.wait(timeout=grace) for process in running]

    def kill_all(self) -> None:
        for containers in self.containers.values():
            for container in containers:
                if container.process is not None:
                    container.process.kill9()

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "logs").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)


@pytest.mark.e2e
def test_the_services_compose_declares_run_and_maintain_both_demo_targets(tmp_path: Path) -> None:
    require_postgres()  # before any process starts: fails in CI, skips elsewhere
    compose = load_compose()
    manager_port = port_of(environment(compose["services"]["manager-1"])["DBMAINT_LISTEN"])
    targets = [
        spec.name for spec in parse_targets(environment(compose["services"]["worker"])["DBMAINT_TARGETS"].split())
    ]
    pg_init = command(compose["services"]["demo-pg-init"])
    deleted = int(pg_init[pg_init.index("--rows") + 1]) // 2  # make-demo-db deletes the older half
    with ExitStack() as stack:
        fleet = LocalCompose(compose, tmp_path, stack)
        try:
            fleet.up()
            addresses = [f"127.0.0.1:{fleet.host_port(name, 0, manager_port)}" for name in MANAGERS]
            address = ",".join(addresses)  # the CLI on the host is given both managers
            dbmaint = str(BIN / "dbmaint")
            demo_db = fleet.mounts["demo-init"]["/data"] / "demo.db"
            demo_pg, store = fleet.databases["postgres-target"], fleet.databases["postgres"]
            free_before = freelist_count(demo_db)
            dead_before = poll(lambda: dead_tuples(demo_pg), lambda count: count > 0)

            # The CLI on the host presents the client token, as the header of compose.yaml says.
            token = environment(compose["services"]["manager-1"])["DBMAINT_TOKEN"]
            client_env = {k: v for k, v in os.environ.items() if not k.startswith("DBMAINT_")}
            tokenless = subprocess.run(
                [dbmaint, "--manager", address, "workers"],
                capture_output=True,
                text=True,
                timeout=30,
                env=client_env,
            )
            client_env["DBMAINT_TOKEN"] = token
            listed = subprocess.run(
                [dbmaint, "--manager", address, "workers", "--json"],
                capture_output=True,
                text=True,
                timeout=30,
                env=client_env,
            )
            workers = json.loads(listed.stdout)["workers"]
            fleet.wait_for("schedule-init", "service_completed_successfully")
            schedules = subprocess.run(
                [dbmaint, "--manager", address, "schedule", "list", "--json"],
                capture_output=True,
                text=True,
                timeout=30,
                env=client_env,
            )
            init = fleet.containers["schedule-init"][0]
            init_again = subprocess.run(init.argv, capture_output=True, text=True, timeout=30, env=init.env)
            started = time.monotonic()
            run = subprocess.run(
                [dbmaint, "--manager", address, "create", *targets, *("-o", "vacuum", "-o", "analyze"), "--watch"],
                capture_output=True,
                text=True,
                timeout=120,
                env=client_env,
            )
            took = time.monotonic() - started
            free_after = freelist_count(demo_db)
            dead_after = poll(lambda: dead_tuples(demo_pg), lambda count: count == 0)
            # Failover: the leader (the first manager up took the store lease) dies; the standby takes over,
            # the workers follow it, and the CLI, given both addresses, finds it.
            leader = fleet.containers["manager-1"][0].process
            assert leader is not None
            leader.kill9()
            killed = time.monotonic()
            again = subprocess.run(
                [dbmaint, "--manager", address, "create", "demo", "-o", "analyze", "--watch"],
                capture_output=True,
                text=True,
                timeout=120,
                env=client_env,
            )
            failover_took = time.monotonic() - killed
            children = query(store, "SELECT target, operation, status FROM jobs WHERE parent_id IS NOT NULL")
            parents = query(store, "SELECT status FROM jobs WHERE parent_id IS NULL")
            worker_codes = fleet.stop("worker")
            manager_codes = fleet.stop("manager-2")
        finally:
            fleet.kill_all()

    assert targets == ["demo", "demo-pg"]
    assert tokenless.returncode == 2 and "UNAUTHENTICATED" in tokenless.stderr, tokenless.stderr
    assert len(workers) == 2 and all(sorted(worker["targets"]) == targets for worker in workers), listed.stdout
    assert schedules.returncode == 0, schedules.stderr
    (nightly,) = json.loads(schedules.stdout)["schedules"]
    assert (nightly["id"], nightly["cron"], nightly["time_zone"]) == ("nightly", "0 3 * * *", "UTC")
    assert nightly["maintenance"]["targets"] == targets
    assert nightly["next_fire_time"].endswith("T03:00:00Z")
    assert init_again.returncode == 0, init_again.stderr
    assert init_again.stdout.strip() == "schedule nightly already exists; left as it is"
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{fleet.logs()}"
    assert "completed" in run.stdout and "Traceback" not in run.stderr
    print(
        f"maintenance of {targets} took {took:.2f}s; SQLite free pages {free_before} -> {free_after}; "
        f"{DEMO_TABLE} dead tuples {dead_before} -> {dead_after}"
    )
    assert free_before > 0 and free_after == 0, "VACUUM did not give the SQLite free pages back"
    assert dead_before == deleted, "make-demo-db did not leave one dead tuple per deleted row"
    assert dead_after == 0, "VACUUM did not remove the PostgreSQL dead tuples"
    # the job store is the postgres service's database
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}\n{fleet.logs()}"
    print(f"after kill -9 of manager-1, a new parent on manager-2 completed {failover_took:.1f}s after the kill")
    assert parents == [("completed",), ("completed",)]
    assert sorted(children) == sorted(
        [(target, operation, "completed") for target in targets for operation in ("analyze", "vacuum")]
        + [("demo", "analyze", "completed")]
    )
    assert worker_codes == [0, 0], fleet.logs()
    assert manager_codes == [0], fleet.logs()
