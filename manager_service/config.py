"""The manager's settings: every flag also reads an environment variable (flag > env > default)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dbmaint.auth import CredentialError, TlsFiles, read_token_list
from manager_service.auth import AuthPolicy
from manager_service.orchestrator import OrchestratorSettings
from manager_service.validation import Limits

# Bearer tokens come only from the environment (or files it names), never from flags: a command line is visible
# to every user of the machine.
ENV_CLIENT_TOKENS = "DBMAINT_CLIENT_TOKENS"
ENV_WORKER_TOKENS = "DBMAINT_WORKER_TOKENS"


def is_loopback(host: str) -> bool:
    """Is ``host`` (of a HOST:PORT) a loopback address? A host name other than localhost may resolve anywhere."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "on", "true", "yes"}:
        return True
    if value in {"0", "off", "false", "no"}:
        return False
    raise ValueError(text)


_on_off.__name__ = "on/off"


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///dbmaint.db"
    lease_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    max_attempts: int = 3
    operation_timeout: float = 6 * 3600.0
    max_targets: int = 1000
    max_children: int = 10_000
    max_workers: int = 1_000
    max_watchers: int = 1_000
    shutdown_grace: float = 5.0
    store_lease: float = 15.0
    log_level: str = "INFO"
    # None: on when the listener is on loopback (grpcurl on the same machine), off when it is reachable from
    # elsewhere; a flag or DBMAINT_REFLECTION decides otherwise.
    reflection: bool | None = None
    metrics_listen: str = ""
    log_format: str = "text"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth: AuthPolicy = field(default_factory=AuthPolicy)

    @property
    def serves_reflection(self) -> bool:
        return self.reflection if self.reflection is not None else is_loopback(self.listen.rpartition(":")[0])

    @property
    def tls(self) -> TlsFiles | None:
        return TlsFiles.from_settings(self.tls_client_ca, self.tls_cert, self.tls_key)

    @property
    def limits(self) -> Limits:
        return Limits(max_targets=self.max_targets, max_children=self.max_children, max_attempts=self.max_attempts)

    @property
    def store_idle_timeout(self) -> float:
        """Seconds PostgreSQL lets a store session sit idle inside a transaction: below the store lease, so a
        frozen manager's open transaction cannot hold a standby's takeover up for long."""
        return min(self.store_lease / 2, max(1.0, self.store_lease / 3))

    @property
    def orchestrator_settings(self) -> OrchestratorSettings:
        return OrchestratorSettings(
            lease_timeout=self.lease_timeout,
            heartbeat_interval=self.heartbeat_interval,
            operation_timeout=self.operation_timeout,
            max_workers=self.max_workers,
            max_watchers=self.max_watchers,
        )


# flag, attribute, env var, type, help
_OPTIONS: list[tuple[str, str, str, Callable[[str], object], str]] = [
    ("--listen", "listen", "DBMAINT_LISTEN", str, "HOST:PORT to serve gRPC on (port 0: any free port)"),
    ("--database-url", "database_url", "DBMAINT_DATABASE_URL", str, "SQLAlchemy URL of the job store"),
    (
        "--lease-timeout",
        "lease_timeout",
        "DBMAINT_LEASE_TIMEOUT",
        float,
        "seconds without a heartbeat before a worker's running children are re-queued",
    ),
    (
        "--heartbeat-interval",
        "heartbeat_interval",
        "DBMAINT_HEARTBEAT_INTERVAL",
        float,
        "seconds between worker heartbeats (told to workers in Welcome)",
    ),
    ("--max-attempts", "max_attempts", "DBMAINT_MAX_ATTEMPTS", int, "attempts per child before it fails"),
    (
        "--operation-timeout",
        "operation_timeout",
        "DBMAINT_OPERATION_TIMEOUT",
        float,
        "seconds an operation may run before the worker interrupts it",
    ),
    ("--max-targets", "max_targets", "DBMAINT_MAX_TARGETS", int, "targets per request"),
    ("--max-children", "max_children", "DBMAINT_MAX_CHILDREN", int, "children (targets x operations) per request"),
    ("--max-workers", "max_workers", "DBMAINT_MAX_WORKERS", int, "worker streams connected at once"),
    ("--max-watchers", "max_watchers", "DBMAINT_MAX_WATCHERS", int, "WatchJob streams open at once"),
    (
        "--shutdown-grace",
        "shutdown_grace",
        "DBMAINT_SHUTDOWN_GRACE",
        float,
        "seconds in-flight RPCs get to finish on SIGTERM",
    ),
    (
        "--store-lease",
        "store_lease",
        "DBMAINT_STORE_LEASE",
        float,
        "seconds a manager holds the job store without renewing it; a standby takes over once it lapses",
    ),
    ("--log-level", "log_level", "DBMAINT_LOG_LEVEL", str, "DEBUG, INFO, WARNING or ERROR"),
    ("--log-format", "log_format", "DBMAINT_LOG_FORMAT", str, "text, or json: one JSON object per line"),
    (
        "--reflection",
        "reflection",
        "DBMAINT_REFLECTION",
        _on_off,
        "serve gRPC reflection: on or off (unset: on for a loopback --listen, off otherwise)",
    ),
    (
        "--metrics-listen",
        "metrics_listen",
        "DBMAINT_METRICS_LISTEN",
        str,
        "HOST:PORT of the Prometheus /metrics endpoint (empty: off)",
    ),
    ("--tls-cert", "tls_cert", "DBMAINT_TLS_CERT", str, "PEM certificate chain of the listener (with --tls-key)"),
    ("--tls-key", "tls_key", "DBMAINT_TLS_KEY", str, "PEM private key of the listener"),
    (
        "--tls-client-ca",
        "tls_client_ca",
        "DBMAINT_TLS_CLIENT_CA",
        str,
        "PEM CA that client certificates must chain to: every client must present one (mTLS)",
    ),
]


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, prog: str = "dbmaint-manager"
) -> ManagerConfig:
    environ = os.environ if environ is None else environ
    defaults = ManagerConfig()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="The dbmaint manager: stores maintenance jobs and dispatches them to workers over gRPC. "
        "`dbmaint-manager migrate` only brings the job store's schema up to date (serving does that too).",
    )
    for flag, attribute, env, kind, help_text in _OPTIONS:
        default = getattr(defaults, attribute)
        parser.add_argument(
            flag, dest=attribute, type=kind, default=None, help=f"{help_text} [{env}; default {default}]"
        )
    args = parser.parse_args(argv)
    values = {}
    for flag, attribute, env, kind, _ in _OPTIONS:
        value = getattr(args, attribute)
        if value is None and environ.get(env):
            try:
                value = kind(environ[env])
            except ValueError:
                parser.error(f"{env}={environ[env]!r} is not a valid {kind.__name__} (for {flag})")
        values[attribute] = getattr(defaults, attribute) if value is None else value
    try:
        values["auth"] = AuthPolicy(
            read_token_list(environ, ENV_CLIENT_TOKENS), read_token_list(environ, ENV_WORKER_TOKENS)
        )
    except CredentialError as error:
        parser.error(str(error))
    config = ManagerConfig(**values)
    _check(config, parser)
    return config


def _check(config: ManagerConfig, parser: argparse.ArgumentParser) -> None:
    host, sep, port = config.listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        parser.error(f"--listen must be HOST:PORT, got {config.listen!r}")
    if config.lease_timeout <= 0 or config.heartbeat_interval <= 0:
        parser.error("--lease-timeout and --heartbeat-interval must be positive")
    if config.store_lease <= 0:
        parser.error("--store-lease must be positive")
    if config.heartbeat_interval >= config.lease_timeout:
        parser.error("--heartbeat-interval must be shorter than --lease-timeout")
    if (
        min(config.max_attempts, config.max_targets, config.max_children, config.max_workers, config.max_watchers)
        < 1
    ):
        parser.error(
            "--max-attempts, --max-targets, --max-children, --max-workers and --max-watchers must be >= 1"
        )
    if config.metrics_listen:
        _, m_sep, m_port = config.metrics_listen.rpartition(":")
        if not m_sep or not m_port.isdigit():
            parser.error(f"--metrics-listen must be HOST:PORT, got {config.metrics_listen!r}")
    if config.tls_client_ca and not config.tls_cert:
        parser.error("--tls-client-ca asks clients for certificates: the listener needs --tls-cert and --tls-key")
    try:
        config.tls  # noqa: B018 - checks that the files exist and go together
    except CredentialError as error:
        parser.error(str(error))
    if config.log_format not in ("text", "json"):
        parser.error(f"--log-format must be text or json, got {config.log_format!r}")
    if config.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        parser.error(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {config.log_level!r}")
