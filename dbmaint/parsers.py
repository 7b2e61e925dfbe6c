"""Parsers of option values (text -> value) the programs share. Each raises ValueError with a message that
says what was expected; ``dbmaint.config`` prefixes it with the flag or variable at fault."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL, make_url

from dbmaint.logs import LOG_FORMATS, LOG_LEVELS

_HOST_PORT_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):(?P<port>[0-9]{1,5})$")
# gRPC name-resolver schemes accepted as-is for a manager address (dns:///host:port, unix:/path, ...).
_GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")

Parser = Callable[[str], Any]


def whole_number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def seconds(*, positive: bool = False) -> Callable[[str], float]:
    """A finite number of seconds, >= 0 (``positive``: > 0)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"expected a finite number of seconds {bound}, got {text!r}")
        return value

    return parse


def show_number(value: float) -> str:
    """30.0 -> 30, 2.5 -> 2.5, 1000000 -> 1000000 (never 1e+06)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "on", "true", "yes"}:
        return True
    if value in {"0", "off", "false", "no"}:
        return False
    raise ValueError(f"expected on or off, got {text!r}")


def show_on_off(value: bool | None) -> str:
    return "auto" if value is None else ("on" if value else "off")


def log_level(text: str) -> str:
    """DEBUG, INFO, WARNING or ERROR, in any case."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {text!r} (expected one of {', '.join(LOG_LEVELS)})")
    return level


def log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"unknown log format {text!r} (expected {' or '.join(LOG_FORMATS)})")
    return value


def host_port(*, allow_port_zero: bool, optional: bool = False) -> Callable[[str], str]:
    """HOST:PORT (an IPv6 host in brackets). ``optional``: empty text stays empty (that listener is off)."""

    def parse(text: str) -> str:
        value = text.strip()
        if not value and optional:
            return value
        match = _HOST_PORT_RE.match(value)
        if not match:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        port = int(match["port"])
        if port > 65535 or (port == 0 and not allow_port_zero):
            raise ValueError(f"port {port} is out of range")
        return value

    return parse


def manager_address(text: str) -> str:
    """HOST:PORT of a manager, or a gRPC target with a resolver scheme (``dns:///manager:50051``)."""
    value = text.strip()
    if not value:
        raise ValueError("the manager address is empty")
    if value.startswith(_GRPC_SCHEMES):
        return value
    return host_port(allow_port_zero=False)(value)


def manager_addresses(text: str) -> tuple[str, ...]:
    """One or more manager addresses separated by commas (``a:50051,b:50051``), each as ``manager_address``;
    the order is kept (clients try them in turn), an address given twice is an error."""
    addresses = tuple(manager_address(item) for item in text.split(","))
    for index, address in enumerate(addresses):
        if address in addresses[:index]:
            raise ValueError(f"the manager address {address!r} is given twice")
    return addresses


def token_list(text: str) -> tuple[str, ...]:
    """Tokens separated by commas or new lines (several, so they can be rotated)."""
    tokens = tuple(t.strip() for t in text.replace("\n", ",").split(",") if t.strip())
    for token in tokens:
        if any(c.isspace() for c in token) or not token.isprintable():
            raise ValueError("a token may not contain spaces or control characters")
    return tokens


def mask_url(url: URL | str) -> str:
    """The URL with its password replaced by ``***``; safe to log and print."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except Exception:  # an unparseable URL may still hold a password: show none of it
        return "<unparseable url>"
    return parsed.render_as_string(hide_password=True)
