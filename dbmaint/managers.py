"""Which manager a client (a worker, the CLI) tries next, when several are configured.

Several ``dbmaint-manager`` processes share one store; the one holding the store lease leads, the others stand
by and refuse writes and worker streams with ``UNAVAILABLE``, naming the leader's advertised address in the
trailing metadata key ``dbmaint-leader`` when they know it. A client is configured with the list of addresses
(``--manager a:50051,b:50051``) and moves along it on its own.

Rules of ``next_manager`` (pure: the callers do the I/O, the sleeping and the counting):

* One configured address: always that one (nothing to choose; the caller's backoff does the rest).
* A leader hint is followed only if it names a configured address: the client sends its bearer token to every
  address it tries, so it never tries one the operator did not configure. A hint matches an address that is
  the same ``host:port`` once a ``dns:///`` prefix is removed, the host compared without regard to case.
* A hint that names the address that just failed is not followed (it cannot be the way forward).
* Otherwise the client rotates: the address after the one that failed, in the configured order, wrapping
  around; the first address when nothing failed yet (or what failed is not in the list).

Rules of ``is_refusal`` (is a failed call safe to send elsewhere?):

* A manager refuses a call it does not run with ``UNAVAILABLE`` and the trailing metadata key
  ``dbmaint-not-run``: it is a standby, is starting, is rebuilding its state, is shutting down (the gate in front
  of its services), its store could not be reached, or its store's lease check found the lease lost before
  anything was written. Such a call was not carried out, whether or not a ``dbmaint-leader`` hint came with it.
  The mark is read, never the message's wording (which is for people and may change).
* The hint alone proves nothing: a write whose COMMIT was cut also comes back ``UNAVAILABLE`` with the new
  leader's address. It says where to go, not that the call did not happen.
* Any other failure of a call that reached a manager may have been carried out (the answer was lost), and so
  may an ``UNAVAILABLE`` from the transport (a reset connection) that carries no mark.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dbmaint.transport import LEADER_METADATA_KEY, NOT_RUN_METADATA_KEY

Metadata = Iterable[tuple[str, str | bytes]] | None
_DNS_PREFIX = "dns:///"


@dataclass(frozen=True, slots=True)
class Move:
    """The address to try next, and why (for the log line that says why the client moved)."""

    address: str
    reason: str


def same_address(hint: str, configured: str) -> bool:
    """Whether a leader hint (``host:port``) names the configured address (``host:port`` or ``dns:///host:port``)."""
    return _plain(hint) == _plain(configured)


def _plain(address: str) -> str:
    address = address.strip()
    if address.startswith(_DNS_PREFIX):
        address = address[len(_DNS_PREFIX) :]
    host, sep, port = address.rpartition(":")
    return f"{host.lower()}{sep}{port}" if sep else address.lower()


def configured_match(hint: str, managers: Sequence[str]) -> str | None:
    """The configured address the hint names, or None (an address the operator did not configure)."""
    if not hint:
        return None
    return next((address for address in managers if same_address(hint, address)), None)


def next_manager(managers: Sequence[str], failed: str | None, leader_hint: str = "") -> Move:
    """The address to try after ``failed`` (None: nothing tried yet), following ``leader_hint`` if allowed."""
    if not managers:
        raise ValueError("no manager address configured")
    if len(managers) == 1:
        return Move(managers[0], f"{managers[0]} is the only manager configured")
    hinted = configured_match(leader_hint, managers)
    if hinted is not None and hinted != failed:
        return Move(hinted, f"{failed} named {leader_hint} as the leader")
    if failed is None or failed not in managers:
        return Move(managers[0], "the first manager configured")
    after = managers[(list(managers).index(failed) + 1) % len(managers)]
    reason = f"the next manager configured after {failed}"
    if leader_hint and hinted is None:
        reason += f" (its leader hint {leader_hint} is not a configured manager address: not followed)"
    return Move(after, reason)


def _value(metadata: Metadata, wanted: str) -> str | None:
    for key, value in metadata or ():
        if key.lower() == wanted:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            return text.strip()
    return None


def leader_hint(metadata: Metadata) -> str:
    """The ``dbmaint-leader`` value of (trailing) metadata, or ``""``."""
    return _value(metadata, LEADER_METADATA_KEY) or ""


def is_refusal(code_name: str, trailing: Metadata) -> bool:
    """Whether a call that ended ``code_name`` with ``trailing`` metadata was refused without being run."""
    return code_name == "UNAVAILABLE" and _value(trailing, NOT_RUN_METADATA_KEY) is not None
