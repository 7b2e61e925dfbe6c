"""The ``Engine`` protocol and the errors engines raise.

An engine runs one maintenance operation on one database URL, on the calling (slot) thread, and returns an
``OperationReport``. It must:

* interrupt the running statement when the ``CancelToken`` is cancelled (raise ``OperationCancelled``) or the
  deadline passes (raise ``DeadlineExceeded``) -- see ``worker_service.cancel``;
* raise ``OperationFailed`` with a message fit for the job's error (no URL, no password) when the operation
  fails; any other exception is a bug the executor still reports as FAILED;
* never create a database that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import URL

from dbmaint.operations import Operation, OperationReport, TableScope
from worker_service.cancel import CancelToken

EVERYTHING = TableScope()


class EngineUnavailable(Exception):
    """No engine can serve this URL (unknown dialect, unsupported driver, unusable URL). Found at start."""


class OperationFailed(Exception):
    """The operation failed; ``str(exc)`` is the job's error, ``report`` the figures gathered so far, if any."""

    def __init__(self, message: str, report: OperationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


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
    ) -> OperationReport:
        """Run ``operation`` on the tables of ``scope`` in the database at ``url``; blocks the calling thread
        until done or interrupted. Scope names are matched against the catalog: one that does not exist raises
        OperationFailed naming it."""
        ...
