"""The worker's configuration, declared in ``OPTIONS`` (the README's worker table is generated from it).

Target URLs carry credentials: they are kept out of ``repr`` and only ever shown through ``display_url``
(password masked). They never leave the worker. A command line shows in ``ps``, so keep passwords out of it:
put the URLs in ``--targets-file`` (or ``DBMAINT_TARGETS``), or give a URL without a password and set
``DBMAINT_TARGET_PASSWORD_<NAME>`` or ``DBMAINT_TARGET_PASSWORD_FILE_<NAME>`` (``<NAME>``: the target name
upper-cased, every other character than A-Z and 0-9 turned into ``_``).

Fault injection (``DBMAINT_FAULTS``, for tests) is refused unless ``--allow-fault-injection`` (or
``DBMAINT_ALLOW_FAULT_INJECTION``) opts in, so a stray variable cannot slow a production worker down.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dbmaint import parsers
from dbmaint.auth import CredentialError, TlsFiles
from dbmaint.config import (
    CLIENT_TLS,
    LOG_FORMAT,
    LOG_LEVEL,
    MANAGER_ADDRESS,
    METRICS_LISTEN,
    ConfigError,
    Option,
    Program,
    Settings,
    listener,
)
from dbmaint.parsers import mask_url
from worker_service.faults import ENV_FAULTS, NO_FAULTS, FaultPlan, parse_faults

ENV_TARGETS = "DBMAINT_TARGETS"
ENV_ALLOW_FAULT_INJECTION = "DBMAINT_ALLOW_FAULT_INJECTION"
ENV_TARGET_PASSWORD = "DBMAINT_TARGET_PASSWORD_"
ENV_TARGET_PASSWORD_FILE = "DBMAINT_TARGET_PASSWORD_FILE_"

DEFAULT_MANAGERS: tuple[str, ...] = MANAGER_ADDRESS.default
DEFAULT_SLOTS = 1
DEFAULT_GRACE = 60.0

TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A target as configured: its name and SQLAlchemy URL (kept out of repr: it may hold a password)."""

    name: str
    url: URL = field(repr=False)

    @property
    def display_url(self) -> str:
        return mask_url(self.url)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything the worker needs to start, validated."""

    targets: tuple[TargetSpec, ...]
    # Where the managers listen, in the order to try them (one leads; see dbmaint.managers).
    managers: tuple[str, ...] = DEFAULT_MANAGERS
    slots: int = DEFAULT_SLOTS
    worker_id: str = field(default_factory=lambda: default_worker_id())
    grace: float = DEFAULT_GRACE
    health_listen: str = ""
    log_level: str = "INFO"
    tls: TlsFiles | None = None
    metrics_listen: str = ""
    log_format: str = "text"
    # The bearer token for the manager; kept out of repr like the target URLs.
    token: str | None = field(default=None, repr=False)
    faults: FaultPlan = NO_FAULTS

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def parse_target(text: str) -> TargetSpec:
    """``NAME=SQLALCHEMY_URL`` -> TargetSpec; the error never contains the URL (it may hold a password)."""
    name, sep, url_text = text.partition("=")
    name = name.strip()
    if not sep or not url_text.strip():
        raise ConfigError(f"target {name or text[:64]!r}: expected NAME=SQLALCHEMY_URL")
    if not TARGET_NAME_RE.match(name):
        raise ConfigError(
            f"target name {name!r} is invalid: it must match {TARGET_NAME_RE.pattern} "
            "(a letter or digit, then up to 63 letters, digits, '_', '.' or '-')"
        )
    try:
        url = make_url(url_text.strip())
    except (ArgumentError, ValueError) as exc:
        # SQLAlchemy's message quotes the URL; keep it out.
        raise ConfigError(
            f"target {name!r}: the URL is not a valid SQLAlchemy URL ({type(exc).__name__})"
        ) from None
    return TargetSpec(name=name, url=url)


def secret_key(name: str) -> str:
    """The suffix of the password variables of target ``name``: ``orders-db`` -> ``ORDERS_DB``."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def with_password(target: TargetSpec, env: Mapping[str, str]) -> TargetSpec:
    """Fill in the target's password from its environment variable or file, if its URL has none."""
    key = secret_key(target.name)
    password = env.get(ENV_TARGET_PASSWORD + key)
    password_file = env.get(ENV_TARGET_PASSWORD_FILE + key)
    if password is None and password_file:
        try:
            password = Path(password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"target {target.name!r}: cannot read {ENV_TARGET_PASSWORD_FILE + key}={password_file}: "
                f"{exc.strerror}"
            ) from None
    if password is None:
        return target
    if target.url.password is not None:
        raise ConfigError(
            f"target {target.name!r}: the URL has a password and {ENV_TARGET_PASSWORD}{key}* sets one"
        )
    return TargetSpec(target.name, target.url.set(password=password))


def read_targets_file(path: str, source: str) -> list[str]:
    """NAME=URL entries of a targets file: one a line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def parse_targets(entries: Sequence[str]) -> tuple[TargetSpec, ...]:
    return check_targets(tuple(parse_target(entry) for entry in entries))


def check_targets(targets: tuple[TargetSpec, ...]) -> tuple[TargetSpec, ...]:
    """At least one target, and no name twice."""
    if not targets:
        raise ConfigError(f"no target configured: pass --target NAME=SQLALCHEMY_URL or set {ENV_TARGETS}")
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ConfigError(f"target {target.name!r} is configured more than once")
        seen.add(target.name)
    return targets


def _worker_id(text: str) -> str:
    worker_id = text.strip()  # blank: the default
    if any(ch.isspace() for ch in worker_id) or len(worker_id) > 200:
        raise ValueError("the worker id must be 1-200 characters without spaces")
    return worker_id


def _show_targets(targets: tuple[TargetSpec, ...]) -> str:
    return " ".join(f"{target.name}={target.display_url}" for target in targets) or "(none)"


def _show_faults(plan: FaultPlan) -> str:
    return ",".join(f"slow:{name}={seconds:g}" for name, seconds in plan.slow.items()) or "none"


OPTIONS = (
    MANAGER_ADDRESS,
    Option(
        name="targets",
        help="a database this worker serves, `NAME=SQLALCHEMY_URL`: a name for the API, a URL that never leaves "
        "the worker (the variable: a whitespace-separated list; flags replace it)",
        flag="--target",
        env=ENV_TARGETS,
        parse=parse_target,
        default=(),
        repeat=True,
        metavar="NAME=SQLALCHEMY_URL",
        show=_show_targets,
        default_text="none",
    ),
    Option(
        name="targets_file",
        help="a file of `NAME=SQLALCHEMY_URL` lines (`#` comments), added to the targets: keeps passwords out of "
        "`ps`",
        flag="--targets-file",
        env="DBMAINT_TARGETS_FILE",
        metavar="PATH",
        default_text="none",
    ),
    Option(
        name="slots",
        help="operations run at once (always on different targets)",
        flag="--slots",
        env="DBMAINT_SLOTS",
        parse=parsers.whole_number(1),
        default=DEFAULT_SLOTS,
        metavar="N",
    ),
    Option(
        name="worker_id",
        help="unique id among the connected workers",
        flag="--worker-id",
        env="DBMAINT_WORKER_ID",
        parse=_worker_id,
        default=lambda: default_worker_id(),
        metavar="ID",
        default_text="`<hostname>-<pid>`",
    ),
    Option(
        name="grace",
        help="on SIGTERM, seconds to finish running operations before interrupting them",
        flag="--grace",
        env="DBMAINT_GRACE",
        parse=parsers.seconds(),
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        show=parsers.show_number,
    ),
    listener(
        "health_listen",
        "HOST:PORT of the `grpc.health.v1` server: SERVING while connected to the manager",
        "--health-listen",
        "DBMAINT_HEALTH_LISTEN",
    ),
    LOG_LEVEL,
    LOG_FORMAT,
    METRICS_LISTEN,
    *CLIENT_TLS,
    Option(
        name="token",
        help="the worker role's bearer token, sent to the manager",
        env="DBMAINT_WORKER_TOKEN",
        secret=True,
        default_text="none",
    ),
    Option(
        name="allow_fault_injection",
        help=f"on or off: let `{ENV_FAULTS}` inject faults (tests only; without it a set `{ENV_FAULTS}` is an "
        "error)",
        flag="--allow-fault-injection",
        env=ENV_ALLOW_FAULT_INJECTION,
        parse=parsers.on_off,
        default=False,
        flag_alone="on",
        metavar="on|off",
        show=parsers.show_on_off,
    ),
    Option(
        name="faults",
        help="test-only fault injection, e.g. `slow:vacuum=5`: the statement takes at least 5 s while really "
        "running (see `worker_service/faults.py`)",
        env=ENV_FAULTS,
        parse=parse_faults,
        default=NO_FAULTS,
        show=_show_faults,
        default_text="none",
    ),
)
WORKER = Program(
    "dbmaint-worker",
    "Run database maintenance operations (VACUUM, ANALYZE, REINDEX, optimize) for a dbmaint manager. Every "
    "flag also reads its DBMAINT_* environment variable; a flag wins over the variable.",
    OPTIONS,
)


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Flags, then variables, then defaults. Raises ConfigError (argparse itself exits 2 on unknown flags)."""
    environ = os.environ if environ is None else environ
    return build_config(WORKER.parse(argv, environ), environ)


def build_config(settings: Settings, environ: Mapping[str, str]) -> WorkerConfig:
    """The validated WorkerConfig of resolved ``settings``; ``environ`` holds the target passwords."""
    targets: tuple[TargetSpec, ...] = settings["targets"]
    if settings["targets_file"]:
        entries = read_targets_file(settings["targets_file"], settings.origin("targets_file"))
        targets += tuple(parse_target(entry) for entry in entries)
    faults: FaultPlan = settings["faults"]
    if not faults.empty and not settings["allow_fault_injection"]:
        raise ConfigError(
            f"{ENV_FAULTS} is set but fault injection is not allowed: set {ENV_ALLOW_FAULT_INJECTION}=1 "
            f"(or pass --allow-fault-injection) to opt in, or unset {ENV_FAULTS}"
        )
    try:
        tls = TlsFiles.from_settings(settings["tls_ca"], settings["tls_cert"], settings["tls_key"])
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    return WorkerConfig(
        targets=tuple(with_password(target, environ) for target in check_targets(targets)),
        managers=settings["manager"],
        slots=settings["slots"],
        worker_id=settings["worker_id"] or default_worker_id(),
        grace=settings["grace"],
        health_listen=settings["health_listen"],
        log_level=settings["log_level"],
        tls=tls,
        token=settings["token"],
        metrics_listen=settings["metrics_listen"],
        log_format=settings["log_format"],
        faults=faults,
    )
