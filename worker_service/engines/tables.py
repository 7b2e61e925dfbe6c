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
* ``run_operation``: the whole operation on an open connection, in this order: the dialect's ``prepare``
  (session settings, the resource lock), ``tables_in_scope`` (the catalog, the sizes before), the injected
  slow fault, the loop, ``after_tables`` (skipped after a lost connection), all interruptible; then, no longer
  interruptible, ``finish`` (the sizes after, the report) and the failure policy's verdict. A driver error
  outside a table's statement is the interrupt's doing if ``stopped()`` says so, else the dialect's
  ``failure(exc, run)`` (an ``OperationFailed`` saying what it was doing).
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

Parallel pool: ``run_tables`` takes ``more_lanes``, extra ``run_one`` callables each on a connection of its
own (the dialect opens them, each interruptible by its own interrupter: ``run_operation``'s ``open_lanes``).
With extra lanes, up to 1 + len(more_lanes) tables run at once, each lane taking the next table in the serial
order. The failure policy is the same: failed and skipped tables are noted and the next ones run; an
interruption or a lost connection stops every lane (each ends its current statement: the interrupters
interrupt them; a lost connection lets them finish it) and the interruption is raised. The outcomes are kept
in the serial order, so the notes and the report read the same as a serial run's.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from dbmaint.operations import OperationReport, TableReport
from worker_service.cancel import CancelToken, DeadlineExceeded, OperationCancelled, interrupting, interruption
from worker_service.engines.base import OperationFailed, RunStatus

# A report travels in one gRPC message: the notes of at most this many tables are listed (skipped and failed
# tables first), the others are counted in one note.
MAX_TABLE_NOTES = 500
# ... and the ``TableReport`` of at most this many (about 300 bytes each: well inside one message).
MAX_TABLE_REPORTS = 2000

Table = TypeVar("Table")
Stopped = Callable[[], OperationCancelled | DeadlineExceeded | None]
RunOne = Callable[[Table], "TableOutcome"]
# The dialect's opener of extra lanes: given how many are wanted (at least 1) and the tables, a context that
# yields the lanes' ``run_one`` (possibly fewer, none when the server has no connection to spare) and closes them.
OpenLanes = Callable[[int, Sequence[Table]], contextlib.AbstractContextManager[Sequence[RunOne[Table]]]]


class TableStatus(enum.Enum):
    PROCESSED = "processed"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TableOutcome:
    """How one table ended: its name as the notes and errors give it, the status, the reason (skipped and
    failed: why, for the error), the notes that describe it (one or more lines of the report) and its
    ``TableReport`` (the action run, the figures before and after, the duration; a skipped table: SKIP with
    the reason ``locked``)."""

    name: str
    status: TableStatus
    notes: tuple[str, ...]
    reason: str = ""
    report: TableReport | None = None


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

    def table_reports(self) -> tuple[TableReport, ...]:
        """The tables' reports in processing order, at most ``MAX_TABLE_REPORTS`` (skipped and failed first, as
        for the notes)."""
        reports = [(i, o) for i, o in enumerate(self.outcomes) if o.report is not None]
        troubled = [(i, o) for i, o in reports if o.status is not TableStatus.PROCESSED][:MAX_TABLE_REPORTS]
        fine = [(i, o) for i, o in reports if o.status is TableStatus.PROCESSED]
        kept = sorted(troubled + fine[: MAX_TABLE_REPORTS - len(troubled)], key=lambda item: item[0])
        return tuple(o.report for _, o in kept if o.report is not None)

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


class TableSession(Protocol[Table]):
    """The dialect part of one operation on its open connection (see ``run_operation``)."""

    @property
    def driver_errors(self) -> tuple[type[Exception], ...]:
        """The driver's exceptions, which ``failure`` turns into an OperationFailed."""
        ...

    def interrupt(self) -> None:
        """Interrupt the running statement; called from another thread, must not block (a
        ``RepeatingInterrupter``)."""
        ...

    def stop_interrupting(self) -> None:
        """No interrupt from now on, none in flight (``RepeatingInterrupter.stop``)."""
        ...

    def prepare(self, status: RunStatus) -> None:
        """Session settings and the resource lock (``worker_service.engines.fence``), noted in the report."""
        ...

    def tables_in_scope(self) -> Sequence[Table]:
        """The tables to run the statement on, in order, their figures before read."""
        ...

    def inject_slow(self, seconds: float, stopped: Stopped) -> None:
        """The ``slow:<op>=N`` fault: a real server statement of N seconds on the work connection, noted."""
        ...

    def run_one(self, table: Table) -> TableOutcome:
        """The statement on one table (``run_tables``)."""
        ...

    def after_tables(self, run: TableRun) -> None:
        """Work after the loop that still runs interruptibly (e.g. clean-up a failed statement left)."""
        ...

    def failure(self, exc: Exception, run: TableRun) -> OperationFailed:
        """The error of a driver exception outside the tables' statements, with the report so far."""
        ...

    def finish(self, run: TableRun) -> OperationReport:
        """The figures after (none read after a lost connection) and the report."""
        ...


def run_operation(
    session: TableSession[Table],
    operation: str,
    cancel: CancelToken,
    deadline: datetime | None,
    status: RunStatus,
    slow: float = 0.0,
    parallel: int = 1,
    open_lanes: OpenLanes[Table] | None = None,
) -> OperationReport:
    """Run one operation on an open connection, in the order of the module docstring. Raises
    OperationCancelled or DeadlineExceeded on an interrupt, OperationFailed (with the report) when a table
    failed or the work could not be done; returns the report otherwise. ``parallel`` > 1 with ``open_lanes``:
    up to ``parallel`` tables at once (never more lanes than tables), the extra lanes opened after the
    resource lock is held (it is taken once, on this connection)."""
    run = TableRun(0)
    with interruptible(session.interrupt, cancel, deadline) as stopped:
        try:
            session.prepare(status)
            tables = session.tables_in_scope()
            if slow > 0:
                session.inject_slow(slow, stopped)
            extra = min(parallel, len(tables)) - 1
            if extra > 0 and open_lanes is not None:
                with open_lanes(extra, tables) as lanes:
                    run_tables(tables, session.run_one, stopped, into=run, more_lanes=lanes)
            else:
                run_tables(tables, session.run_one, stopped, into=run)
            if not run.lost:
                session.after_tables(run)
        except session.driver_errors as exc:
            _stop_if(stopped)
            raise session.failure(exc, run) from None
        finally:
            session.stop_interrupting()
    report = session.finish(run)
    failure = run.failure_message(operation)
    if failure is not None:
        raise OperationFailed(failure, report)
    return report


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
    run_one: RunOne[Table],
    stopped: Stopped,
    into: TableRun | None = None,
    more_lanes: Sequence[RunOne[Table]] = (),
) -> TableRun:
    """Run ``run_one`` on each table in turn under the failure policy (module docstring). Raises the
    interruption (OperationCancelled, DeadlineExceeded) as soon as ``stopped`` reports one: before a table, or
    after a table that did not end processed (its error may be the interrupt's doing). The outcomes go ``into``
    the given TableRun as they come (so an exception leaves the ones so far), else into a new one. With
    ``more_lanes``, those run tables at the same time as ``run_one`` (the parallel pool)."""
    run = TableRun(0) if into is None else into
    run.total = len(tables)
    if more_lanes:
        _run_lanes(tables, [run_one, *more_lanes], stopped, run)
        return run
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


class _Pool(Generic[Table]):
    """The shared state of the parallel lanes: the next table, the outcomes by table position, the first
    exception a lane raised, and whether every lane must stop."""

    def __init__(self, tables: Sequence[Table]) -> None:
        self.lock = threading.Lock()
        self.pending: list[tuple[int, Table]] = list(enumerate(tables))
        self.done: dict[int, TableOutcome] = {}
        self.error: BaseException | None = None
        self.lost = False
        self.stop = threading.Event()

    def next_table(self) -> tuple[int, Table] | None:
        with self.lock:
            if self.stop.is_set() or not self.pending:
                return None
            return self.pending.pop(0)

    def record(self, position: int, outcome: TableOutcome) -> None:
        with self.lock:
            self.done[position] = outcome

    def fail(self, error: BaseException) -> None:
        """Every lane stops; an interruption wins over another lane's error."""
        with self.lock:
            interruption = isinstance(error, (OperationCancelled, DeadlineExceeded))
            if self.error is None or interruption:
                self.error = error
            self.stop.set()


def _lane(pool: _Pool[Table], run_one: RunOne[Table], stopped: Stopped) -> None:
    """One lane: the next table until none is left or the pool stops (the serial loop's policy)."""
    try:
        while (item := pool.next_table()) is not None:
            position, table = item
            _stop_if(stopped)
            try:
                outcome = run_one(table)
            except ConnectionLost as lost:
                pool.record(position, lost.outcome)
                with pool.lock:
                    pool.lost = True
                _stop_if(stopped)
                pool.stop.set()
                return
            pool.record(position, outcome)
            if outcome.status is not TableStatus.PROCESSED:
                _stop_if(stopped)
    except BaseException as exc:  # re-raised on the calling thread by _run_lanes
        pool.fail(exc)


def _run_lanes(tables: Sequence[Table], lanes: Sequence[RunOne[Table]], stopped: Stopped, run: TableRun) -> None:
    """The parallel pool: one thread per lane; the outcomes land in ``run`` in the serial order."""
    pool: _Pool[Table] = _Pool(tables)
    threads = [
        threading.Thread(target=_lane, args=(pool, lane, stopped), name=f"dbmaint-lane-{n}", daemon=True)
        for n, lane in enumerate(lanes)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.outcomes.extend(pool.done[position] for position in sorted(pool.done))
    run.lost = pool.lost
    if pool.error is not None:
        raise pool.error


def _stop_if(stopped: Stopped) -> None:
    stop = stopped()
    if stop is not None:
        raise stop
