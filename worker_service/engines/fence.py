"""The resource fence: one operation per target, enforced at the target itself.

The manager frees a target when an attempt's worker is gone (stream lost, lease lapsed) and may start the next
attempt elsewhere, although the first one's statement may still run (a frozen worker, a partitioned link). So
every operation holds a lock **on the target**, for its whole run, on the operation's own session: the lock
ends when that session really ends -- with the process (kill -9) or its backend -- and survives a frozen one
(SIGSTOP). A lock on a separate idle connection would not do: it would be released while a killed worker's
statement still runs.

This module is the shared part; each engine supplies the dialect part, a ``ResourceLock``:

==========  ===================================================================================================
PostgreSQL  session advisory lock ``pg_try_advisory_lock(key1, key2)`` on the maintenance connection
            (``worker_service.engines.postgresql.AdvisoryLock`` documents the keys)
MariaDB     ``GET_LOCK(name, 0)`` on the work connection (``worker_service.engines.mariadb.NamedLock``)
SQLite      ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<database>.dbmaint-lock`` next to the database file
            (``worker_service.engines.sqlite.FileLock``)
==========  ===================================================================================================

Rules of the wait (``acquire``):

* a held lock is waited for, without failing and without using an attempt: a try-lock every
  ``LOCK_POLL_SECONDS`` (never a blocking lock call, which only a backend cancel could stop);
* while it waits the attempt's ``RunStatus`` says why, naming the holder where the engine can find it;
* a cancel stops the wait at once (``OperationCancelled``), and so does the deadline (``DeadlineExceeded``);
* the lease is not involved: heartbeats list the waiting attempt as running, so the manager keeps it here.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol

from worker_service.cancel import CancelToken, check, seconds_left
from worker_service.engines.base import RunStatus

LOCK_POLL_SECONDS = 0.25
# The holder is looked up again this often while waiting (it changes when a third attempt takes the lock).
HOLDER_REFRESH_SECONDS = 2.0


class ResourceLock(Protocol):
    """One engine's lock on one target, taken on the operation's own session."""

    @property
    def description(self) -> str:
        """What the lock is, for the report's notes (e.g. ``advisory lock (1684172148, 16384)``)."""
        ...

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False at once if another session or process holds it."""
        ...

    def holder(self) -> str:
        """Who holds it, for the waiting reason (e.g. ``PostgreSQL backend pid 4242``); "" if unknown."""
        ...


def waiting_reason(target: str, holder: str) -> str:
    where = f"target {target!r}" if target else "the target"
    return f"waiting for the resource lock on {where} (held by {holder or 'another session'})"


def acquire(
    lock: ResourceLock,
    cancel: CancelToken,
    deadline: datetime | None,
    status: RunStatus,
    poll: float = LOCK_POLL_SECONDS,
) -> float:
    """Take ``lock``, waiting for it as long as it takes; returns the seconds waited (0.0: it was free).

    Raises OperationCancelled when ``cancel`` is cancelled and DeadlineExceeded when the deadline passes, also
    while waiting. ``status`` carries the waiting reason during the wait and is clear again on return.
    """
    check(cancel, deadline)
    if lock.try_acquire():
        return 0.0
    started = time.monotonic()
    holder_seen = time.monotonic()
    status.waiting(waiting_reason(status.target, lock.holder()))
    try:
        while True:
            left = seconds_left(deadline)
            cancel.wait(poll if left is None else max(0.0, min(poll, left)))
            check(cancel, deadline)
            if lock.try_acquire():
                return time.monotonic() - started
            if time.monotonic() - holder_seen >= HOLDER_REFRESH_SECONDS:
                holder_seen = time.monotonic()
                status.waiting(waiting_reason(status.target, lock.holder()))
    finally:
        status.working()


def lock_note(lock: ResourceLock, waited: float) -> str:
    """The report's note on the lock."""
    after = f", after waiting {waited:.1f}s for another attempt or session to release it" if waited else ""
    return f"resource lock: {lock.description} held for the whole operation{after}"
