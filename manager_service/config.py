"""The manager's settings, declared in ``OPTIONS`` (the README's manager table is generated from it); the rules
(flag > variable > default, secrets, errors) are those of ``dbmaint.config``."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dbmaint import parsers
from dbmaint.auth import CredentialError, TlsFiles
from dbmaint.config import (
    LOG_FORMAT,
    LOG_LEVEL,
    METRICS_LISTEN,
    ConfigError,
    Option,
    Program,
    Settings,
    listener,
    pem_file,
)
from manager_service.auth import AuthPolicy
from manager_service.orchestrator import OrchestratorSettings
from manager_service.validation import Limits

# Bearer tokens come only from the environment (or files it names), never from flags: a command line is visible
# to every user of the machine.
ENV_CLIENT_TOKENS = "DBMAINT_CLIENT_TOKENS"
ENV_WORKER_TOKENS = "DBMAINT_WORKER_TOKENS"
ENV_READONLY_TOKENS = "DBMAINT_READONLY_TOKENS"


def is_loopback(host: str) -> bool:
    """Is ``host`` (of a HOST:PORT) a loopback address? A host name other than localhost may resolve anywhere."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
    # Short, for failover within seconds (see LEASE_TRADE_OFF); raise it where fsync stalls for seconds.
    store_lease: float = 6.0
    # PostgreSQL: LISTEN/NOTIFY wakes a standby's change follower early (a hint; it polls anyway). Off behind
    # PgBouncer in transaction pooling, where LISTEN does not work.
    store_notify: bool = True
    # HOST:PORT clients and workers should use to reach this manager (empty: derived from --listen).
    advertise: str = ""
    log_level: str = "INFO"
    # None: on when the listener is on loopback (grpcurl on the same machine), off when it is reachable from
    # elsewhere; a flag or DBMAINT_REFLECTION decides otherwise.
    reflection: bool | None = None
    metrics_listen: str = ""
    log_format: str = "text"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # The web console and its JSON API (empty: off); its TLS files default to the gRPC listener's.
    http_listen: str = ""
    http_tls_cert: str | None = None
    http_tls_key: str | None = None
    auth: AuthPolicy = field(default_factory=AuthPolicy)

    @property
    def serves_reflection(self) -> bool:
        return self.reflection if self.reflection is not None else is_loopback(self.listen.rpartition(":")[0])

    @property
    def tls(self) -> TlsFiles | None:
        return TlsFiles.from_settings(self.tls_client_ca, self.tls_cert, self.tls_key)

    @property
    def http_tls(self) -> tuple[str, str] | None:
        """The console's certificate and key files (its own, else the gRPC listener's); None: plain HTTP."""
        if self.http_tls_cert and self.http_tls_key:
            return self.http_tls_cert, self.http_tls_key
        if self.tls_cert and self.tls_key:
            return self.tls_cert, self.tls_key
        return None

    @property
    def limits(self) -> Limits:
        return Limits(max_targets=self.max_targets, max_children=self.max_children, max_attempts=self.max_attempts)

    @property
    def lease_renewal_period(self) -> float:
        """Seconds between two renewals by the leader (and between two looks by a standby): a third of the lease,
        so two renewals in a row may fail before the lease is in danger."""
        return self.store_lease / 3

    @property
    def lease_margin(self) -> float:
        """Seconds before its lease could lapse at which a leader that could not renew it steps down by itself:
        the time it needs to stop acting (refuse calls, stop dispatching) while it surely still holds it."""
        return min(1.0, self.store_lease / 6)

    @property
    def lease_statement_timeout(self) -> float:
        """Seconds PostgreSQL gives a lease statement (statement_timeout and lock_timeout), and the leader waits
        for a renewal's answer at most: a renewal into a dead link fails long before the lease can lapse."""
        return self.lease_renewal_period

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


_DEFAULTS = ManagerConfig()


def _number(name: str, help_text: str, parse: parsers.Parser, metavar: str = "SECONDS") -> Option:
    """An option named like its ManagerConfig field, whose default is that field's default."""
    flag = "--" + name.replace("_", "-")
    env = "DBMAINT_" + name.upper()
    return Option(
        name, help_text, flag, env, parse, getattr(_DEFAULTS, name), metavar=metavar, show=parsers.show_number
    )


def _tokens(name: str, env: str, role: str) -> Option:
    """The bearer tokens of a role: several, so they can be rotated; none turns auth off."""
    return Option(
        name,
        f"bearer tokens of the {role} role, comma- or newline-separated",
        env=env,
        parse=parsers.token_list,
        default=(),
        secret=True,
        default_text="none: auth off",
    )


_SECONDS = parsers.seconds(positive=True)
_AT_LEAST_ONE = parsers.whole_number(1)

OPTIONS = (
    Option(
        name="listen",
        help="HOST:PORT to serve gRPC on (port 0: any free port)",
        flag="--listen",
        env="DBMAINT_LISTEN",
        parse=parsers.host_port(allow_port_zero=True),
        default=_DEFAULTS.listen,
        metavar="HOST:PORT",
    ),
    Option(
        name="database_url",
        help="SQLAlchemy URL of the job store: SQLite (WAL, `synchronous=FULL`, 30 s busy timeout) or PostgreSQL "
        "(`postgresql+psycopg://user@host/db`)",
        flag="--database-url",
        env="DBMAINT_DATABASE_URL",
        default=_DEFAULTS.database_url,
        metavar="URL",
        show=parsers.mask_url,
    ),
    _number(
        "lease_timeout", "seconds without a heartbeat before a worker's running children are re-queued", _SECONDS
    ),
    _number("heartbeat_interval", "seconds between worker heartbeats (told to workers in `Welcome`)", _SECONDS),
    _number("max_attempts", "attempts per child before it fails", _AT_LEAST_ONE, "N"),
    _number("operation_timeout", "seconds an operation may run before its worker interrupts it", _SECONDS),
    _number("max_targets", "targets per request", _AT_LEAST_ONE, "N"),
    _number("max_children", "children (targets x operations) per request", _AT_LEAST_ONE, "N"),
    _number("max_workers", "worker streams connected at once; more get `RESOURCE_EXHAUSTED`", _AT_LEAST_ONE, "N"),
    _number(
        "max_watchers",
        "`WatchJob` streams open at once; more get `RESOURCE_EXHAUSTED` (a watcher more than 10,000 changes "
        "behind is dropped with `UNAVAILABLE` and told why)",
        _AT_LEAST_ONE,
        "N",
    ),
    _number("shutdown_grace", "seconds in-flight RPCs get to finish on SIGTERM", parsers.seconds()),
    _number(
        "store_lease",
        "seconds a manager holds the job store without renewing it (renewed every third of it); a standby takes "
        "over once it lapses, so a crashed leader is replaced after about this long. A leader that cannot renew "
        "it steps down by itself a second before it could lapse: on a machine whose disk stalls for seconds "
        "(fsync under load), a short lease means false step-downs; raise it there",
        _SECONDS,
    ),
    Option(
        name="store_notify",
        help="PostgreSQL: each write that changes jobs sends one NOTIFY, and standbys LISTEN, to follow changes "
        "at once (their WatchJob); `off` polls only (every 0.5 s), for PgBouncer in transaction pooling",
        flag="--store-notify",
        env="DBMAINT_STORE_NOTIFY",
        parse=parsers.on_off,
        default=_DEFAULTS.store_notify,
        metavar="on|off",
        show=parsers.show_on_off,
    ),
    Option(
        name="advertise",
        help="HOST:PORT clients and workers should use to reach this manager: stored with the job store lease, "
        "and named by standbys in the `dbmaint-leader` trailing metadata of their `UNAVAILABLE` refusals",
        flag="--advertise",
        env="DBMAINT_ADVERTISE",
        parse=parsers.host_port(allow_port_zero=False, optional=True),
        default=_DEFAULTS.advertise,
        metavar="HOST:PORT",
        default_text="the `--listen` address with its bound port (the host name for a wildcard host)",
    ),
    LOG_LEVEL,
    LOG_FORMAT,
    Option(
        name="reflection",
        help="serve gRPC reflection, `on` or `off` (open to anyone who can connect)",
        flag="--reflection",
        env="DBMAINT_REFLECTION",
        parse=parsers.on_off,
        metavar="on|off",
        show=parsers.show_on_off,
        default_text="on for a loopback `--listen`, off otherwise",
    ),
    METRICS_LISTEN,
    pem_file(
        "tls_cert",
        "PEM certificate chain of the listener (with `--tls-key`): it speaks TLS",
        "--tls-cert",
        "DBMAINT_TLS_CERT",
        default_text="plaintext",
    ),
    pem_file("tls_key", "PEM private key of the listener", "--tls-key", "DBMAINT_TLS_KEY"),
    pem_file(
        "tls_client_ca",
        "PEM CA that client certificates must chain to: every client must present one (mTLS)",
        "--tls-client-ca",
        "DBMAINT_TLS_CLIENT_CA",
    ),
    _tokens("client_tokens", ENV_CLIENT_TOKENS, "client"),
    _tokens("worker_tokens", ENV_WORKER_TOKENS, "worker"),
    _tokens("readonly_tokens", ENV_READONLY_TOKENS, "read-only (reads and the web console, no writes)"),
    listener(
        "http_listen",
        "HOST:PORT of the web console and its JSON API (`/api/v1/`); a non-loopback host needs tokens (the "
        "console asks for one)",
        "--http-listen",
        "DBMAINT_HTTP_LISTEN",
    ),
    pem_file(
        "http_tls_cert",
        "PEM certificate chain of the web console (with `--http-tls-key`): it speaks HTTPS",
        "--http-tls-cert",
        "DBMAINT_HTTP_TLS_CERT",
        default_text="`--tls-cert` when set, else plain HTTP",
    ),
    pem_file(
        "http_tls_key",
        "PEM private key of the web console",
        "--http-tls-key",
        "DBMAINT_HTTP_TLS_KEY",
        default_text="`--tls-key`",
    ),
)
MANAGER = Program(
    "dbmaint-manager",
    "The dbmaint manager: stores maintenance jobs and dispatches them to workers over gRPC. "
    "`dbmaint-manager migrate` only brings the job store's schema up to date (serving does that too). "
    "Every flag also reads its DBMAINT_* environment variable; a flag wins over the variable.",
    OPTIONS,
)


def program(prog: str = MANAGER.prog) -> Program:
    """The manager's options under the name of one of its commands (``dbmaint-manager migrate``)."""
    return dataclasses.replace(MANAGER, prog=prog)


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, prog: str = MANAGER.prog
) -> ManagerConfig:
    """Flags, then variables, then defaults. Raises ConfigError (argparse itself exits 2 on unknown flags)."""
    environ = os.environ if environ is None else environ
    return build_config(program(prog).parse(argv, environ))


def build_config(settings: Settings) -> ManagerConfig:
    """The validated ManagerConfig of resolved ``settings``."""
    values = {option.name: settings[option.name] for option in OPTIONS}
    tokens = (values.pop("client_tokens"), values.pop("worker_tokens"), values.pop("readonly_tokens"))
    config = ManagerConfig(**values, auth=AuthPolicy(*tokens))
    _check(config)
    return config


def _check(config: ManagerConfig) -> None:
    """The rules that tie settings together."""
    if config.heartbeat_interval >= config.lease_timeout:
        raise ConfigError("--heartbeat-interval must be shorter than --lease-timeout")
    if config.tls_client_ca and not config.tls_cert:
        raise ConfigError(
            "--tls-client-ca asks clients for certificates: the listener needs --tls-cert and --tls-key"
        )
    if bool(config.http_tls_cert) != bool(config.http_tls_key):
        raise ConfigError("--http-tls-cert and --http-tls-key go together: set both or neither")
    for name, path in (("--http-tls-cert", config.http_tls_cert), ("--http-tls-key", config.http_tls_key)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{name}: no such file: {path}")
    if config.http_listen and not config.auth.enabled and not is_loopback(config.http_listen.rpartition(":")[0]):
        raise ConfigError(
            f"--http-listen {config.http_listen} is reachable from other machines and no token is configured: "
            f"set {ENV_CLIENT_TOKENS} (and {ENV_READONLY_TOKENS} for viewers), or listen on 127.0.0.1"
        )
    try:
        config.tls  # noqa: B018 - checks that the files exist and go together
    except CredentialError as error:
        raise ConfigError(str(error)) from None
