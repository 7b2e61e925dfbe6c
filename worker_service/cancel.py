"""Cancellation and deadlines for operations running in slot threads.

A ``CancelToken`` is set from the event loop (a ``Cancel`` from the manager, or a drain past its grace) and read
from the operation's thread. Engines turn it into an interrupt of the running statement with ``interrupting``:
the token's callbacks and a deadline alarm (one thread for all, ``ALARMS``) call the engine's interrupt
function (``sqlite3.Connection.interrupt`` for SQLite, a backend cancel for servers), and engines also poll
``check`` where they can (SQLite's progress handler). After an interrupt, ``interruption`` tells which of the
two happened:

* cancelled -> ``OperationCancelled`` -> the child ends CANCELLED with the reason;
* past the deadline -> ``DeadlineExceeded`` -> the child ends FAILED "deadline exceeded".
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any


class OperationCancelled(Exception):
    """The operation was interrupted because its token was cancelled."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeadlineExceeded(Exception):
    """The operation was interrupted because its deadline passed."""

    def __init__(self, deadline: datetime) -> None:
        super().__init__(f"deadline exceeded ({deadline.isoformat()})")
        self.deadline = deadline


class CancelToken:
    """A thread-safe, one-shot cancellation flag with a reason and callbacks.

    The first ``cancel`` wins (its reason is kept); callbacks run in the cancelling thread, once.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason = ""
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next_id = 0

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        return self._reason

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel; True if this call did it, False if the token was already cancelled."""
        with self._lock:
            if self._event.is_set():
                return False
            self._reason = reason or "cancelled"
            self._event.set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            with contextlib.suppress(Exception):  # an interrupt of a finished statement must not hurt the caller
                callback()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when cancelled (now, if already). Returns a function that unregisters it."""
        with self._lock:
            if not self._event.is_set():
                key = self._next_id
                self._next_id += 1
                self._callbacks[key] = callback
                return lambda: self._unregister(key)
        with contextlib.suppress(Exception):
            callback()
        return lambda: None

    def _unregister(self, key: int) -> None:
        with self._lock:
            self._callbacks.pop(key, None)


def deadline_passed(deadline: datetime | None) -> bool:
    return deadline is not None and time.time() >= deadline.timestamp()


def seconds_left(deadline: datetime | None) -> float | None:
    return None if deadline is None else deadline.timestamp() - time.time()


def interruption(
    cancel: CancelToken, deadline: datetime | None, *, deadline_reached: bool = False
) -> OperationCancelled | DeadlineExceeded | None:
    """Why the operation must stop now, or None. A cancel wins over a deadline that passed at the same time.

    ``deadline_reached`` is the deadline timer's word for it (timers and the wall clock may disagree by a hair).
    """
    if cancel.cancelled:
        return OperationCancelled(cancel.reason)
    if deadline is not None and (deadline_reached or deadline_passed(deadline)):
        return DeadlineExceeded(deadline)
    return None


def check(cancel: CancelToken, deadline: datetime | None) -> None:
    """Raise OperationCancelled or DeadlineExceeded if the operation must stop."""
    error = interruption(cancel, deadline)
    if error is not None:
        raise error


class Interrupts:
    """What ``interrupting`` did: whether its deadline timer fired."""

    def __init__(self) -> None:
        self._deadline_reached = threading.Event()

    @property
    def deadline_reached(self) -> bool:
        return self._deadline_reached.is_set()


class Alarms:
    """Callbacks at deadlines, all on ONE daemon thread: a ``threading.Timer`` per operation would start (and
    tear down) a thread for every child, which costs more than a small maintenance operation itself."""

    def __init__(self) -> None:
        self._wakeup = threading.Condition()
        self._heap: list[list[Any]] = []  # [due (monotonic), sequence, callback, armed]
        self._armed = 0
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the alarm thread after ``delay`` seconds; returns a function that disarms it."""
        entry = [time.monotonic() + delay, next(self._sequence), callback, True]
        with self._wakeup:
            heapq.heappush(self._heap, entry)
            self._armed += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-alarms", daemon=True)
                self._thread.start()
            self._wakeup.notify()

        def disarm() -> None:
            with self._wakeup:
                if entry[3]:
                    entry[3] = False
                    self._armed -= 1
                    if len(self._heap) > 64 and self._armed < len(self._heap) // 2:
                        self._heap = [e for e in self._heap if e[3]]  # far-off disarmed alarms pile up otherwise
                        heapq.heapify(self._heap)

        return disarm

    def _run(self) -> None:
        with self._wakeup:
            while True:
                while self._heap and not self._heap[0][3]:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wakeup.wait()
                    continue
                due = self._heap[0][0] - time.monotonic()
                if due > 0:
                    self._wakeup.wait(due)
                    continue
                entry = heapq.heappop(self._heap)
                entry[3] = False
                self._armed -= 1
                self._wakeup.release()
                try:
                    with contextlib.suppress(Exception):
                        entry[2]()
                finally:
                    self._wakeup.acquire()


ALARMS = Alarms()


@contextlib.contextmanager
def interrupting(
    interrupt: Callable[[], None], cancel: CancelToken, deadline: datetime | None
) -> Iterator[Interrupts]:
    """While the block runs, call ``interrupt`` (from another thread) on cancel or when the deadline passes.

    Leave the block as soon as the statement that may be interrupted is done, so that a late cancel does not
    interrupt the bookkeeping that follows (a finished operation is reported COMPLETED: status stays honest).
    """
    state = Interrupts()

    def on_deadline() -> None:
        state._deadline_reached.set()
        with contextlib.suppress(Exception):
            interrupt()

    unregister = cancel.on_cancel(interrupt)
    left = seconds_left(deadline)
    disarm = ALARMS.schedule(max(left, 0.0), on_deadline) if left is not None else None
    try:
        yield state
    finally:
        unregister()
        if disarm is not None:
            disarm()
