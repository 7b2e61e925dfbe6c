"""The ``Engine`` protocol and the errors engines raise.

An engine runs one maintenance operation on one database URL, on the calling (slot) thread, and returns an
``OperationReport``. It must:

* interrupt the running statement when the ``CancelToken`` is cancelled (raise ``OperationCancelled``) or the
  deadline passes (raise ``DeadlineExceeded``) -- see ``worker_service.cancel``;
* raise ``OperationFailed`` with a message fit for the job's error (no URL, no password) when the operation
  fails; any other exception is a bug the executor still reports as FAILED;
* never create a database that does not exist;
* hold the target's resource lock for the whole operation, on the operation's own session, waiting for it
  while another attempt holds it (``worker_service.engines.fence``) and saying so through ``status``.

``observe`` is the exception: read-only, it takes no resource lock and runs no maintenance statement. MODE_PLAN
is one ``observe`` (``worker_service.engines.plan``); MODE_AUTO is ``observe``, the engine's run restricted to
the tables that need it, and ``observe`` again (``worker_service.engines.auto``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sqlalchemy.engine import URL

from dbmaint.operations import Operation, OperationReport, TableScope
from dbmaint.thresholds import DEFAULT_THRESHOLDS, Thresholds
from worker_service.cancel import CancelToken

if TYPE_CHECKING:
    from worker_service.engines.observe import TableObservation

EVERYTHING = TableScope()

# MODE_AUTO's work for a table engine: (schema, table) -> the observations to act on (their ``action`` and
# ``reasons``), in the order to run the tables in (most urgent first). The engine runs only these tables, each
# with the statement(s) its actions call for.
TableActions = Mapping[tuple[str, str], Sequence["TableObservation"]]


@dataclass(frozen=True, slots=True)
class Observed:
    """What ``Engine.observe`` saw: the observations, most urgent first, and the database's size in bytes (as
    the engine's reports count it)."""

    observations: Sequence[TableObservation]
    size_bytes: int


class EngineUnavailable(Exception):
    """No engine can serve this URL (unknown dialect, unsupported driver, unusable URL). Found at start."""


class OperationFailed(Exception):
    """The operation failed; ``str(exc)`` is the job's error, ``report`` the figures gathered so far, if any."""

    def __init__(self, message: str, report: OperationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class RunStatus:
    """What one running attempt is doing that the manager should see, beyond "running": today the reason it
    waits (for the target's resource lock), empty while it works.

    The engine sets it on the slot thread; the worker reads it on its event loop (thread-safe). ``on_change``
    is called, on the setting thread, with the new reason each time it changes (the executor logs it and wakes
    the heartbeat, so the manager hears of a wait at once rather than at the next interval).
    """

    def __init__(self, target: str = "", on_change: Callable[[str], None] | None = None) -> None:
        self.target = target
        self._on_change = on_change
        self._lock = threading.Lock()
        self._waiting_reason = ""

    @property
    def waiting_reason(self) -> str:
        with self._lock:
            return self._waiting_reason

    def waiting(self, reason: str) -> None:
        """The attempt waits, for ``reason`` (one line a person can read)."""
        self._set(reason)

    def working(self) -> None:
        """The attempt no longer waits."""
        self._set("")

    def _set(self, reason: str) -> None:
        with self._lock:
            changed = reason != self._waiting_reason
            self._waiting_reason = reason
        if changed and self._on_change is not None:
            self._on_change(reason)


class Engine(Protocol):
    """Runs maintenance operations for one SQLAlchemy dialect."""

    @property
    def name(self) -> str:
        """The engine's name as reported in results: "sqlite", "postgresql", "mariadb"."""
        ...

    @property
    def dialect(self) -> str:
        """The SQLAlchemy backend name this engine serves (``URL.get_backend_name()``)."""
        ...

    def check_url(self, url: URL) -> None:
        """Raise EngineUnavailable if this engine cannot work with ``url`` (checked once, at start)."""
        ...

    def run(
        self,
        operation: Operation,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope = EVERYTHING,
        status: RunStatus | None = None,
    ) -> OperationReport:
        """Run ``operation`` on the tables of ``scope`` in the database at ``url``; blocks the calling thread
        until done or interrupted. Scope names are matched against the catalog: one that does not exist raises
        OperationFailed naming it. ``status`` (None: nobody listens) hears of a wait for the resource lock."""
        ...

    def observe(
        self,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> Observed:
        """What each table of ``scope`` needs (the engine's observer, ``worker_service.engines.observe``),
        changing nothing. Read-only, so it takes no resource lock and never waits behind a running operation; a
        cancel or the deadline still stops it. OperationFailed names an unknown schema or table."""
        ...


@runtime_checkable
class ParallelEngine(Protocol):
    """A table-by-table engine (``worker_service.engines.tables``): it can run several tables of one operation
    at once (the child's ``"parallel"``) and run chosen tables with chosen actions (MODE_AUTO). The others
    run serially whatever the child asks (the executor notes it) and run MODE_AUTO as their whole operation on
    the tables that need it."""

    def run_parallel(
        self,
        operation: Operation,
        url: URL,
        cancel: CancelToken,
        deadline: datetime | None,
        scope: TableScope,
        status: RunStatus | None,
        parallel: int,
        actions: TableActions | None = None,
    ) -> OperationReport:
        """``Engine.run`` with up to ``parallel`` tables at once, each on a connection of its own. With
        ``actions`` (MODE_AUTO) only those tables of ``scope`` run, in that order, each with the statement its
        actions call for (a FREEZE: ``VACUUM (FREEZE)``) rather than the operation's."""
        ...
