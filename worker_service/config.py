"""The worker's configuration: flags, each with an environment variable as its default.

=====================  ========================  ===========================================================
flag                   environment variable      meaning (default)
=====================  ========================  ===========================================================
``--manager``          ``DBMAINT_MANAGER``       manager address HOST:PORT (``127.0.0.1:50051``)
``--target``           ``DBMAINT_TARGETS``       NAME=SQLALCHEMY_URL; the flag repeats, the variable is a
                                                 whitespace-separated list; flags replace the variable
``--slots``            ``DBMAINT_SLOTS``         operations run at once (1)
``--worker-id``        ``DBMAINT_WORKER_ID``     stable id (``<hostname>-<pid>``)
``--grace``            ``DBMAINT_GRACE``         seconds a drain waits for running operations (60)
``--health-listen``    ``DBMAINT_HEALTH_LISTEN`` HOST:PORT of the grpc.health.v1 server (empty: off)
``--log-level``        ``DBMAINT_LOG_LEVEL``     DEBUG, INFO, WARNING, ERROR (INFO)
``--log-format``       ``DBMAINT_LOG_FORMAT``    text or json (one JSON object per line) (text)
``--targets-file``     ``DBMAINT_TARGETS_FILE``  a file of NAME=SQLALCHEMY_URL lines (``#`` comments), added to
                                                 the targets above
``--tls-ca``           ``DBMAINT_TLS_CA``        PEM CA the manager's certificate must chain to: the stream
                                                 uses TLS (off: plaintext)
``--tls-cert``         ``DBMAINT_TLS_CERT``      this worker's PEM certificate, for a manager that asks for one
``--tls-key``          ``DBMAINT_TLS_KEY``       its PEM private key
``--metrics-listen``   ``DBMAINT_METRICS_LISTEN`` HOST:PORT of the Prometheus /metrics endpoint (empty: off)
(no flag)              ``DBMAINT_WORKER_TOKEN``  the bearer token sent to the manager (or
                                                 ``DBMAINT_WORKER_TOKEN_FILE``: a file holding it)
=====================  ========================  ===========================================================

Target URLs carry credentials: they are kept out of ``repr`` and only ever shown through ``display_url``
(password masked). They never leave the worker. A command line shows in ``ps``, so keep passwords out of it:
put the URLs in ``--targets-file`` (or ``DBMAINT_TARGETS``), or give a URL without a password and set
``DBMAINT_TARGET_PASSWORD_<NAME>`` or ``DBMAINT_TARGET_PASSWORD_FILE_<NAME>`` (``<NAME>``: the target name
upper-cased, every other character than A-Z and 0-9 turned into ``_``).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dbmaint.auth import CredentialError, TlsFiles, read_secret
from dbmaint.logs import LOG_FORMATS

ENV_MANAGER = "DBMAINT_MANAGER"
ENV_TARGETS = "DBMAINT_TARGETS"
ENV_SLOTS = "DBMAINT_SLOTS"
ENV_WORKER_ID = "DBMAINT_WORKER_ID"
ENV_GRACE = "DBMAINT_GRACE"
ENV_HEALTH_LISTEN = "DBMAINT_HEALTH_LISTEN"
ENV_LOG_LEVEL = "DBMAINT_LOG_LEVEL"
ENV_TARGETS_FILE = "DBMAINT_TARGETS_FILE"
ENV_TLS_CA = "DBMAINT_TLS_CA"
ENV_TLS_CERT = "DBMAINT_TLS_CERT"
ENV_TLS_KEY = "DBMAINT_TLS_KEY"
ENV_WORKER_TOKEN = "DBMAINT_WORKER_TOKEN"
ENV_METRICS_LISTEN = "DBMAINT_METRICS_LISTEN"
ENV_LOG_FORMAT = "DBMAINT_LOG_FORMAT"
ENV_TARGET_PASSWORD = "DBMAINT_TARGET_PASSWORD_"
ENV_TARGET_PASSWORD_FILE = "DBMAINT_TARGET_PASSWORD_FILE_"

DEFAULT_MANAGER = "127.0.0.1:50051"
DEFAULT_SLOTS = 1
DEFAULT_GRACE = 60.0
DEFAULT_LOG_LEVEL = "INFO"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST_PORT_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):(?P<port>[0-9]{1,5})$")
# gRPC name-resolver schemes accepted as-is for --manager (dns:///host:port, unix:/path, ...).
_GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


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
    manager: str = DEFAULT_MANAGER
    slots: int = DEFAULT_SLOTS
    worker_id: str = field(default_factory=lambda: default_worker_id())
    grace: float = DEFAULT_GRACE
    health_listen: str = ""
    log_level: str = DEFAULT_LOG_LEVEL
    tls: TlsFiles | None = None
    metrics_listen: str = ""
    log_format: str = "text"
    # The bearer token for the manager; kept out of repr like the target URLs.
    token: str | None = field(default=None, repr=False)

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def mask_url(url: URL | str) -> str:
    """The URL with its password replaced by ``***``; safe to log."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


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
    targets = tuple(parse_target(entry) for entry in entries)
    if not targets:
        raise ConfigError(f"no target configured: pass --target NAME=SQLALCHEMY_URL or set {ENV_TARGETS}")
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ConfigError(f"target {target.name!r} is configured more than once")
        seen.add(target.name)
    return targets


def _parse_slots(text: str, source: str) -> int:
    try:
        slots = int(text)
    except ValueError:
        raise ConfigError(f"{source}: expected a whole number of slots, got {text!r}") from None
    if slots < 1:
        raise ConfigError(f"{source}: slots must be at least 1, got {slots}")
    return slots


def _parse_grace(text: str, source: str) -> float:
    try:
        grace = float(text)
    except ValueError:
        raise ConfigError(f"{source}: expected a number of seconds, got {text!r}") from None
    if not grace >= 0 or grace == float("inf"):
        raise ConfigError(f"{source}: the grace period must be a finite number of seconds >= 0, got {text!r}")
    return grace


def _check_host_port(value: str, source: str, *, allow_port_zero: bool) -> str:
    match = _HOST_PORT_RE.match(value)
    if not match:
        raise ConfigError(f"{source}: expected HOST:PORT, got {value!r}")
    port = int(match["port"])
    if port > 65535 or (port == 0 and not allow_port_zero):
        raise ConfigError(f"{source}: port {port} is out of range")
    return value


def _check_manager(value: str, source: str) -> str:
    value = value.strip()
    if not value:
        raise ConfigError(f"{source}: the manager address is empty")
    if value.startswith(_GRPC_SCHEMES):
        return value
    return _check_host_port(value, source, allow_port_zero=False)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbmaint-worker",
        description="Run database maintenance operations (VACUUM, ANALYZE, REINDEX, optimize) for a dbmaint "
        "manager. Every flag defaults to its DBMAINT_* environment variable.",
    )
    parser.add_argument(
        "--manager", metavar="HOST:PORT", help=f"manager address (${ENV_MANAGER}; {DEFAULT_MANAGER})"
    )
    parser.add_argument(
        "--target",
        metavar="NAME=SQLALCHEMY_URL",
        action="append",
        default=None,
        help=f"a database this worker serves; repeat for more (${ENV_TARGETS}: whitespace-separated list)",
    )
    parser.add_argument(
        "--targets-file",
        metavar="PATH",
        help=f"a file of NAME=SQLALCHEMY_URL lines, added to the targets (${ENV_TARGETS_FILE})",
    )
    parser.add_argument("--slots", metavar="N", help=f"operations run at once (${ENV_SLOTS}; {DEFAULT_SLOTS})")
    parser.add_argument("--worker-id", metavar="ID", help=f"worker id (${ENV_WORKER_ID}; <hostname>-<pid>)")
    parser.add_argument("--grace", metavar="SECONDS", help=f"drain grace period (${ENV_GRACE}; {DEFAULT_GRACE:g})")
    parser.add_argument(
        "--health-listen", metavar="HOST:PORT", help=f"grpc.health.v1 address (${ENV_HEALTH_LISTEN}; off)"
    )
    parser.add_argument(
        "--log-level", metavar="LEVEL", help=f"{', '.join(LOG_LEVELS)} (${ENV_LOG_LEVEL}; {DEFAULT_LOG_LEVEL})"
    )
    parser.add_argument("--log-format", metavar="FORMAT", help=f"text or json (${ENV_LOG_FORMAT}; text)")
    parser.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help=f"Prometheus /metrics address (${ENV_METRICS_LISTEN}; off)"
    )
    parser.add_argument(
        "--tls-ca", metavar="PEM", help=f"CA of the manager's certificate: use TLS (${ENV_TLS_CA})"
    )
    parser.add_argument("--tls-cert", metavar="PEM", help=f"client certificate for mTLS (${ENV_TLS_CERT})")
    parser.add_argument("--tls-key", metavar="PEM", help=f"its private key (${ENV_TLS_KEY})")
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Parse flags with environment defaults. Raises ConfigError (argparse itself exits 2 on unknown flags)."""
    env = os.environ if environ is None else environ
    args = _build_parser().parse_args(argv)

    def pick(flag_value: str | None, env_name: str) -> tuple[str | None, str]:
        if flag_value is not None:
            return flag_value, "--" + env_name.removeprefix("DBMAINT_").lower().replace("_", "-")
        return env.get(env_name), env_name

    manager, manager_src = pick(args.manager, ENV_MANAGER)
    slots_text, slots_src = pick(args.slots, ENV_SLOTS)
    worker_id, worker_id_src = pick(args.worker_id, ENV_WORKER_ID)
    grace_text, grace_src = pick(args.grace, ENV_GRACE)
    health, health_src = pick(args.health_listen, ENV_HEALTH_LISTEN)
    level, level_src = pick(args.log_level, ENV_LOG_LEVEL)

    target_entries: list[str] = args.target if args.target else env.get(ENV_TARGETS, "").split()
    targets_file, targets_file_src = pick(args.targets_file, ENV_TARGETS_FILE)
    if targets_file:
        target_entries += read_targets_file(targets_file, targets_file_src)

    worker_id = (worker_id or "").strip() or default_worker_id()
    if any(ch.isspace() for ch in worker_id) or len(worker_id) > 200:
        raise ConfigError(f"{worker_id_src}: the worker id must be 1-200 characters without spaces")

    log_level = (level or DEFAULT_LOG_LEVEL).strip().upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"{level_src}: unknown log level {level!r} (expected one of {', '.join(LOG_LEVELS)})")

    health_listen = (health or "").strip()
    if health_listen:
        _check_host_port(health_listen, health_src, allow_port_zero=True)

    log_format_text, log_format_src = pick(args.log_format, ENV_LOG_FORMAT)
    log_format = (log_format_text or "text").strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"{log_format_src}: unknown log format {log_format_text!r} (expected text or json)")
    metrics, metrics_src = pick(args.metrics_listen, ENV_METRICS_LISTEN)
    metrics_listen = (metrics or "").strip()
    if metrics_listen:
        _check_host_port(metrics_listen, metrics_src, allow_port_zero=True)

    try:
        tls = TlsFiles.from_settings(
            pick(args.tls_ca, ENV_TLS_CA)[0],
            pick(args.tls_cert, ENV_TLS_CERT)[0],
            pick(args.tls_key, ENV_TLS_KEY)[0],
        )
        token = read_secret(env, ENV_WORKER_TOKEN)
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None

    return WorkerConfig(
        targets=tuple(with_password(t, env) for t in parse_targets(target_entries)),
        manager=_check_manager(manager if manager is not None else DEFAULT_MANAGER, manager_src),
        slots=_parse_slots(slots_text, slots_src) if slots_text else DEFAULT_SLOTS,
        worker_id=worker_id,
        grace=_parse_grace(grace_text, grace_src) if grace_text else DEFAULT_GRACE,
        health_listen=health_listen,
        log_level=log_level,
        tls=tls,
        token=token,
        metrics_listen=metrics_listen,
        log_format=log_format,
    )
