"""The table-by-table skeleton the server engines share (PostgreSQL, MariaDB; a third engine follows it).

An engine that maintains a database one table at a time supplies only its DIALECT part -- how to connect,
which tables are in scope, the statement per table and operation, how to read sizes, how to interrupt the
running statement and how to classify a table's error -- and this module does the rest the same way for all:

* ``interruptible``: the interrupter. The engine gives one interrupt callable (a backend cancel, a
  ``KILL QUERY``); it is called from another thread on cancel or at the deadline (``worker_service.cancel``),
  and ``stopped()`` tells whether the operation must stop now, and why. ``RepeatingInterrupter`` is that
  callable for a server: the dialect gives only how to open a ``Sender`` and send one request.
* ``run_tables``: the per-table loop. It checks ``stopped()`` before each table, runs the dialect's
  ``run_one(table)`` and applies the failure policy below to the ``TableOutcome`` it returns.
* ``TableRun``: the outcomes, their counts, the per-table notes under ONE cap (``MAX_TABLE_NOTES``) and the
  error of a failed child (``failure_message``).

Failure policy (the same for every table-by-table engine):

* **processed** -- the statement ran.
* **skipped** -- the dialect classifies the table's error as "could not be had without blocking or is gone"
  (a lock not available at once or after the session's lock timeout, a deadlock, a table dropped meanwhile, a
  rebuild that cannot run online). Noted with the reason, counted in ``objects_skipped``; the next table is
  tried; on its own a skip does not fail the child (like ``vacuumdb --skip-locked``).
* **failed** -- any other error of the table's statement (a permission, a broken table, a server-side cancel
  the worker did not ask for). Noted with the server's message, counted in ``objects_skipped``; the next table
  is tried. At the end the child FAILS: ``OperationFailed("<operation> failed on N of M table(s): <table>:
  <reason>; ...")``, naming every failed table, with the report attached.
* **stop at once** -- an interrupt (cancel -> ``OperationCancelled``, deadline -> ``DeadlineExceeded``) wins
  over everything: after any error the loop asks ``stopped()`` first. A lost connection (the dialect raises
  ``ConnectionLost`` with the table's outcome) ends the loop: that table is failed, the rest are "not run"
  (counted skipped), and the error says so.

Parallel pool: ``run_tables`` takes ``parallel`` (tables run at once, default 1). Running tables in parallel
needs one connection (and one interrupter) per lane, which the dialect must open; until a dialect offers
that, ``parallel`` must be 1 -- this is the seam where the pool goes.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from worker_service.cancel import CancelToken, DeadlineExceeded, OperationCancelled, interrupting, interruption

# A report travels in one gRPC message: the notes of at most this many tables are listed (skipped and failed
# tables first), the others are counted in one note.
MAX_TABLE_NOTES = 500

Table = TypeVar("Table")
Stopped = Callable[[], OperationCancelled | DeadlineExceeded | None]


class TableStatus(enum.Enum):
    PROCESSED = "processed"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TableOutcome:
    """How one table ended: its name as the notes and errors give it, the status, the reason (skipped and
    failed: why, for the error) and the notes that describe it (one or more lines of the report)."""

    name: str
    status: TableStatus
    notes: tuple[str, ...]
    reason: str = ""


class ConnectionLost(Exception):
    """The dialect's word that the connection died during a table's statement (not by our interrupt): the
    table is failed and the loop stops."""

    def __init__(self, outcome: TableOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass(slots=True)
class TableRun:
    """The tables of one operation as the loop left them."""

    total: int
    outcomes: list[TableOutcome] = field(default_factory=list)
    lost: bool = False

    def count(self, status: TableStatus) -> int:
        return sum(outcome.status is status for outcome in self.outcomes)

    @property
    def not_run(self) -> int:
        return self.total - len(self.outcomes)

    @property
    def processed(self) -> int:
        return self.count(TableStatus.PROCESSED)

    @property
    def skipped(self) -> int:
        """``objects_skipped``: skipped, failed and not run tables alike (none of them was maintained)."""
        return self.total - self.processed

    def table_notes(self, cap: int | None = None) -> list[str]:
        """The tables' notes in processing order, those of at most ``cap`` tables (default MAX_TABLE_NOTES):
        skipped and failed tables first, then the processed ones; one note counts the tables left out."""
        limit = MAX_TABLE_NOTES if cap is None else cap
        troubled = [i for i, o in enumerate(self.outcomes) if o.status is not TableStatus.PROCESSED][:limit]
        room = limit - len(troubled)
        fine = [i for i, o in enumerate(self.outcomes) if o.status is TableStatus.PROCESSED][:room]
        kept = sorted(troubled + fine)
        notes = [note for i in kept for note in self.outcomes[i].notes]
        left_out = len(self.outcomes) - len(kept)
        if left_out:
            notes.append(f"{left_out} more table notes left out (limit {limit})")
        return notes

    def failure_message(self, operation: str) -> str | None:
        """The child's error when a table failed (None: it did not), naming every failed table."""
        failed = [o for o in self.outcomes if o.status is TableStatus.FAILED]
        if not failed:
            return None
        named = "; ".join(f"{o.name}: {o.reason}" for o in failed)
        lost = " (connection lost: the remaining tables were not processed)" if self.lost else ""
        return f"{operation} failed on {len(failed)} of {self.total} table(s): {named}{lost}"


@contextlib.contextmanager
def interruptible(
    interrupt: Callable[[], None], cancel: CancelToken, deadline: datetime | None
) -> Iterator[Stopped]:
    """While the block runs, ``interrupt`` is called on cancel or at the deadline; the block gets ``stopped``,
    which returns the exception to raise when the operation must stop (None: go on)."""
    with interrupting(interrupt, cancel, deadline) as interrupts:
        yield lambda: interruption(cancel, deadline, deadline_reached=interrupts.deadline_reached)


class Sender(Protocol):
    """The dialect's way to interrupt its running statement from another thread, one request at a time."""

    def send(self) -> None:
        """Send one interrupt request (a request landing between two statements must do no harm)."""
        ...

    def close(self) -> None:
        """Release what ``send`` used (a connection of its own)."""
        ...


class RepeatingInterrupter:
    """The interrupt callable for ``interruptible`` when the statement runs on a server.

    Calling it never blocks (it is called on the worker's event loop or the deadline alarm thread): the first
    call starts a thread that opens the dialect's ``Sender`` (``open_sender``, which may wait on the network, and
    returns None when it cannot -- it says why) and sends a request every ``every`` seconds until ``stop``. The
    repetition catches a statement that had not reached the server yet when the first request landed, which the
    server drops. ``stop`` waits for the thread (up to ``join_seconds``), so no request reaches a later
    statement. A ``send`` that raises ends the thread (the sender logs why).
    """

    def __init__(
        self, open_sender: Callable[[], Sender | None], every: float, join_seconds: float, name: str
    ) -> None:
        self._open_sender = open_sender
        self._every = every
        self._join_seconds = join_seconds
        self._name = name
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        sender = self._open_sender()
        if sender is None:
            return
        try:
            while not self._stopped.is_set():
                sender.send()
                self._stopped.wait(self._every)
        except Exception:  # the sender logged why; nothing more can be sent
            return
        finally:
            sender.close()

    def stop(self) -> None:
        """No more requests from now on; waits for one in flight."""
        with self._lock:
            self._stopped.set()
            thread = self._thread
        if thread is not None:
            thread.join(self._join_seconds)


def run_tables(
    tables: Sequence[Table],
    run_one: Callable[[Table], TableOutcome],
    stopped: Stopped,
    parallel: int = 1,
) -> TableRun:
    """Run ``run_one`` on each table in turn under the failure policy (module docstring). Raises the
    interruption (OperationCancelled, DeadlineExceeded) as soon as ``stopped`` reports one: before a table, or
    after a table that did not end processed (its error may be the interrupt's doing)."""
    if parallel != 1:
        raise ValueError(f"parallel={parallel}: no dialect opens one connection per lane yet (only 1 is served)")
    run = TableRun(len(tables))
    for table in tables:
        _stop_if(stopped)
        try:
            outcome = run_one(table)
        except ConnectionLost as lost:
            _stop_if(stopped)
            run.outcomes.append(lost.outcome)
            run.lost = True
            break
        if outcome.status is not TableStatus.PROCESSED:
            _stop_if(stopped)
        run.outcomes.append(outcome)
    return run


def _stop_if(stopped: Stopped) -> None:
    stop = stopped()
    if stop is not None:
        raise stop
