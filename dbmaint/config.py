"""The settings of dbmaint-manager, dbmaint-worker and dbmaint, declared once each as an ``Option``.

Rules, the same in every program:

* Precedence: a flag wins over its environment variable, which wins over the default. A variable set to the
  empty string counts as unset (what ``${X:-}`` in a compose file gives).
* A secret never comes from a flag (a command line shows in ``ps``): secret ``NAME`` is read from the variable,
  or from the file that ``NAME_FILE`` names (see ``dbmaint.auth.read_secret``).
* Every value records where it came from (flag, variable, file or default), for ``--print-config``, which shows
  secrets as ``***`` and URLs with their password masked.
* A bad value raises ConfigError; its message starts with the flag or variable at fault. Every program reports
  it the same way (``report``): ``<program>: error: <message>`` on stderr, exit code 2.

The argument parser, ``--help``, ``--print-config`` and the README's configuration tables (``markdown_table``,
checked by a test) all come from the same declarations, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dbmaint import parsers
from dbmaint.auth import CredentialError, read_secret

FLAG, VARIABLE, FILE, DEFAULT = "flag", "variable", "file", "default"
CONFIG_ERROR_EXIT = 2


class ConfigError(ValueError):
    """The configuration is invalid; the message names the setting and says why."""


def _plain(value: Any) -> str:
    return "(none)" if value is None or value == "" else str(value)


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag and/or variable, how text becomes a value, its default, and how it is shown."""

    name: str
    help: str
    flag: str | None = None
    env: str | None = None
    parse: Callable[[str], Any] = str
    default: Any = None  # a callable is called for each program run (e.g. the worker id)
    secret: bool = False  # variable or NAME_FILE only; shown as ***
    repeat: bool = False  # the flag repeats, the variable is a whitespace-separated list; flags replace it
    flag_alone: str | None = None  # what the flag means given without a value (an on/off switch: "on")
    metavar: str | None = None
    show: Callable[[Any], str] = _plain
    default_text: str | None = None  # how the README and --help describe a computed or empty default

    def __post_init__(self) -> None:
        if self.secret and self.flag:
            raise ValueError(f"{self.name}: a secret has no flag (a command line shows in ps)")

    def shown(self, value: Any) -> str:
        if self.secret:
            return "***" if value else "(none)"
        return self.show(value)

    def described_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        return f"`{self.shown(self.default)}`"


@dataclass(frozen=True, slots=True)
class Setting:
    value: Any
    source: str  # FLAG, VARIABLE, FILE or DEFAULT
    origin: str = ""  # the flag or variable the value came from; empty for a default


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved value of each option of a program, with where it came from."""

    options: tuple[Option, ...]
    found: Mapping[str, Setting]
    print_requested: bool = False

    def __getitem__(self, name: str) -> Any:
        return self.found[name].value

    def origin(self, name: str) -> str:
        """The flag or variable ``name`` came from (for an error message), or ``the default of NAME``."""
        return self.found[name].origin or f"the default of {name}"

    def lines(self) -> list[str]:
        """One line per setting for ``--print-config``: ``name = value  (source origin)``."""
        width = max(len(option.name) for option in self.options)
        lines = []
        for option in self.options:
            setting = self.found[option.name]
            where = f"{setting.source} {setting.origin}".strip()
            lines.append(f"{option.name:<{width}} = {option.shown(setting.value)}  ({where})")
        return lines


@dataclass(frozen=True, slots=True)
class Program:
    """A program's name, description and options: builds its argument parser and resolves its settings."""

    prog: str
    description: str
    options: tuple[Option, ...]

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        add_flags(parser, self.options)
        parser.add_argument(
            "--print-config",
            action="store_true",
            help="print every setting with its value and where it came from (secrets masked), then exit",
        )
        return parser

    def parse(self, argv: Sequence[str] | None, environ: Mapping[str, str]) -> Settings:
        """Flags, then variables, then defaults. argparse itself exits 2 on an unknown flag."""
        args = self.parser().parse_args(argv)
        return Settings(self.options, resolve(self.options, args, environ), args.print_config)


def add_flags(parser: argparse.ArgumentParser, options: Sequence[Option], *, suppress: bool = False) -> None:
    """Add the options that have a flag; their values stay text until ``resolve``. ``suppress``: a flag not
    given leaves no attribute (for a subcommand's copy of a flag the main parser also has)."""
    for option in options:
        if option.flag is None:
            continue
        extra: dict[str, Any] = {"action": "append"} if option.repeat else {}
        if option.flag_alone is not None:
            extra = {"nargs": "?", "const": option.flag_alone}
        parser.add_argument(
            option.flag,
            dest=option.name,
            metavar=option.metavar,
            default=argparse.SUPPRESS if suppress else None,
            help=f"{option.help} [{option.env}; default: {option.described_default()}]".replace("`", ""),
            **extra,
        )


def resolve(
    options: Sequence[Option], args: argparse.Namespace | None, environ: Mapping[str, str]
) -> dict[str, Setting]:
    return {option.name: _resolve_one(option, args, environ) for option in options}


def _resolve_one(option: Option, args: argparse.Namespace | None, environ: Mapping[str, str]) -> Setting:
    given = getattr(args, option.name, None) if option.flag else None
    if given is not None:
        return Setting(_parse(option, given, option.flag or ""), FLAG, option.flag or "")
    if option.env and option.secret:
        return _resolve_secret(option, option.env, environ)
    if option.env and environ.get(option.env):
        text = environ[option.env]
        return Setting(_parse(option, text.split() if option.repeat else text, option.env), VARIABLE, option.env)
    default = option.default() if callable(option.default) else option.default
    return Setting(default, DEFAULT)


def _resolve_secret(option: Option, env: str, environ: Mapping[str, str]) -> Setting:
    try:
        text = read_secret(environ, env)
    except CredentialError as error:
        raise ConfigError(str(error)) from None
    if text is None:
        return Setting(option.default, DEFAULT)
    source, origin = (FILE, f"{env}_FILE") if environ.get(f"{env}_FILE") else (VARIABLE, env)
    return Setting(_parse(option, text, origin), source, origin)


def _parse(option: Option, given: str | list[str], origin: str) -> Any:
    """The parsed value; a parser's ValueError becomes a ConfigError that starts with ``origin``."""
    try:
        if isinstance(given, list):
            return tuple(option.parse(item) for item in given)
        return option.parse(given)
    except ValueError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(origin) else f"{origin}: {message}") from None


def report(prog: str, error: ConfigError) -> int:
    """The one way a program reports bad configuration: one line on stderr; returns the exit code (2)."""
    print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
    return CONFIG_ERROR_EXIT


def markdown_table(options: Sequence[Option]) -> str:
    """The README's table of ``options``: flag, variable, default, meaning."""
    rows = ["| flag | variable | default | meaning |", "|---|---|---|---|"]
    for option in options:
        flag = f"`{option.flag}`" + (" (repeat)" if option.repeat else "") if option.flag else "—"
        variable = f"`{option.env}`" if option.env else "—"
        if option.secret:
            variable += f" (or `{option.env}_FILE`)"
        cells = (flag, variable, option.described_default(), option.help)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


# -- options more than one program has, and kinds of options -------------------------------------------------


def listener(name: str, help_text: str, flag: str, env: str) -> Option:
    """An optional HOST:PORT to listen on (port 0: any free port); unset, that listener is off."""
    parse = parsers.host_port(allow_port_zero=True, optional=True)
    return Option(name, help_text, flag, env, parse, "", metavar="HOST:PORT", default_text="off")


def pem_file(name: str, help_text: str, flag: str | None, env: str, default_text: str = "none") -> Option:
    """The path of a PEM file (a certificate, a key, a CA): not a secret, the file's permissions guard it."""
    return Option(name, help_text, flag, env, metavar="PEM", default_text=default_text)


LOG_LEVEL = Option(
    name="log_level",
    help="DEBUG, INFO, WARNING or ERROR (any case)",
    flag="--log-level",
    env="DBMAINT_LOG_LEVEL",
    parse=parsers.log_level,
    default="INFO",
    metavar="LEVEL",
)
LOG_FORMAT = Option(
    name="log_format",
    help="`text`: human-readable lines; `json`: one JSON object per line",
    flag="--log-format",
    env="DBMAINT_LOG_FORMAT",
    parse=parsers.log_format,
    default="text",
    metavar="FORMAT",
)
METRICS_LISTEN = listener(
    "metrics_listen",
    "HOST:PORT of the Prometheus `/metrics` endpoint",
    "--metrics-listen",
    "DBMAINT_METRICS_LISTEN",
)
# Where a client (a worker, the CLI) finds the manager, and how it checks a manager that speaks TLS.
# Several managers (one leads, the others stand by): comma-separated; the client moves along the list on its own.
MANAGER_ADDRESS = Option(
    name="manager",
    help="the manager's address (or a gRPC target such as `dns:///manager:50051`); several managers of one store: "
    "comma-separated (`a:50051,b:50051`), tried in turn, following the leader a standby names if it is listed",
    flag="--manager",
    env="DBMAINT_MANAGER",
    parse=parsers.manager_addresses,
    default=("127.0.0.1:50051",),
    metavar="HOST:PORT[,HOST:PORT...]",
    show=",".join,
)
CLIENT_TLS = (
    pem_file(
        "tls_ca",
        "PEM CA the manager's certificate must chain to: the connection uses TLS",
        "--tls-ca",
        "DBMAINT_TLS_CA",
        default_text="plaintext",
    ),
    pem_file(
        "tls_cert",
        "PEM client certificate, for a manager that asks for one (mTLS)",
        "--tls-cert",
        "DBMAINT_TLS_CERT",
    ),
    pem_file("tls_key", "the client certificate's PEM private key", "--tls-key", "DBMAINT_TLS_KEY"),
)
