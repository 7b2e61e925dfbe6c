"""A standby's reads: GetJob, ListJobs, WatchJob, ListWorkers and the schedule reads, from the store alone.

Rules:

- Jobs and schedules are read as the leader stored them; a pending child's waiting reason is not known here
  (it lives in the leader's memory): it is left empty.
- ListWorkers shows the ``workers`` table the leader rewrites with every connect, disconnect and drain and every
  few seconds (``last_heartbeat`` says how fresh each row is); the unserved targets are the targets of pending
  children that none of those workers serves without draining, as on the leader.
- WatchJob: a snapshot, then one message per stored change (``job_changes``), as on the leader. ONE
  ``ChangeFollower`` per process reads the changes after its cursor and publishes them to the process's
  ``EventBus``; it reads only while someone watches (idle, it forgets its cursor, and the next watch sets it
  before its snapshot). It polls every ``POLL_EVERY`` seconds; with ``--store-notify on`` a LISTEN connection
  wakes it as soon as a write commits (a hint: a lost notification costs at most one poll). The feed does not
  depend on which manager leads: a watch sees its parent through to its end across leader changes.
- A follower that could not read the store for longer than half the feed's retention (``CHANGES_KEPT_FOR``) may
  have missed pruned changes: it ends every watch (UNAVAILABLE, "watch again") and starts over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import psycopg

from dbmaint.operations import JobStatus
from manager_service.domain import Firing, Job, JobChange, JobFilter, Schedule
from manager_service.errors import ScheduleNotFound, StoreUnavailable
from manager_service.events import EventBus, wait_set
from manager_service.reads import Snapshot, stored_snapshot, unserved, watch_job
from manager_service.store.base import CHANGES_KEPT_FOR, JobStore, Page
from manager_service.store.sqlalchemy_store import CHANGES_CHANNEL
from manager_service.validation import DEFAULT_CHILDREN_PAGE_SIZE
from manager_service.workers import WorkerView

log = logging.getLogger(__name__)

# How often the follower reads the change feed while someone watches (a NOTIFY wakes it sooner).
POLL_EVERY = 0.5
# Changes read per store call.
CHANGES_PER_READ = 1000
# Pause before the LISTEN connection is opened again after it failed.
LISTEN_RETRY = 5.0

P = ParamSpec("P")
R = TypeVar("R")


class StoreReads:
    """Store calls on a small thread pool of their own, off the event loop."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="standby-reader")

    async def __call__(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()


class ChangeFollower:
    """Publishes every stored change of a watched job (or of a watched parent's child) to ``events``."""

    def __init__(self, read: StoreReads, events: EventBus, poll_every: float = POLL_EVERY) -> None:
        self._read = read
        self._store = read.store
        self._events = events
        self._poll_every = poll_every
        self._wake = asyncio.Event()
        # The newest change_seq published (None: nobody watches, nothing to publish).
        self._cursor: int | None = None
        self._last_read = time.monotonic()

    def wake(self) -> None:
        """Read now (a NOTIFY came)."""
        self._wake.set()

    async def mark(self) -> None:
        """A watch subscribed and is about to read its snapshot: the follower publishes every change after this
        point (what came before is in the snapshot)."""
        if self._cursor is None:
            head = await self._read(self._store.last_change_seq)
            if self._cursor is None:
                self._cursor = head
                self._last_read = time.monotonic()

    async def run(self) -> None:
        while True:
            await wait_set(self._wake, self._poll_every)
            self._wake.clear()
            if not self._events.watchers:
                self._cursor = None
                continue
            try:
                await self._catch_up()
            except StoreUnavailable as error:
                log.warning("following the job store's changes paused: %s; retrying", error)
                if time.monotonic() - self._last_read > CHANGES_KEPT_FOR / 2:
                    self._cursor = None
                    self._events.close_all("this standby lost track of the job store's changes; watch again")

    async def _catch_up(self) -> None:
        while self._cursor is not None:
            changes: list[JobChange] = await self._read(self._store.changes_after, self._cursor, CHANGES_PER_READ)
            self._last_read = time.monotonic()
            if self._cursor is None:
                return  # nobody watches any more
            self._events.publish(self._watched(changes))
            if changes:
                self._cursor = changes[-1].change_seq
            if len(changes) < CHANGES_PER_READ:
                return

    def _watched(self, changes: Sequence[JobChange]) -> list[Job]:
        """The jobs of the changes someone watches, decoded (the others are skipped undecoded)."""
        return [
            change.job()
            for change in changes
            if self._events.watched(change.job_id)
            or (change.parent_id is not None and self._events.watched(change.parent_id))
        ]


async def listen_for_changes(conninfo: str, wake: Callable[[], None]) -> None:
    """Hold a LISTEN connection on ``CHANGES_CHANNEL`` and call ``wake`` for every notification; reconnect after
    a failure (the follower polls meanwhile)."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                wake()  # what committed while it was not listening
                async for _ in conn.notifies():
                    wake()
        except (psycopg.Error, OSError) as error:
            log.warning(
                "LISTEN for job changes failed (%s); polling only, trying again in %.0fs", error, LISTEN_RETRY
            )
        await asyncio.sleep(LISTEN_RETRY)


class StoreScheduleReads:
    """The schedule reads from the store (``reads.ScheduleReads``)."""

    def __init__(self, read: StoreReads) -> None:
        self._read = read
        self._store = read.store

    async def get(self, schedule_id: str) -> Schedule:
        schedule = await self._read(self._store.get_schedule, schedule_id)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        return schedule

    async def list_schedules(self, limit: int, after_id: str | None) -> list[Schedule]:
        return await self._read(self._store.list_schedules, limit, after_id)

    async def firings(
        self, schedule_id: str, limit: int, before_seq: int | None
    ) -> tuple[list[Firing], int | None]:
        return await self._read(self._store.list_firings, schedule_id, limit, before_seq)


class StandbyReader:
    """``reads.JobReads`` from the store, and the change follower behind its WatchJob. One per manager process,
    from its first standby until it stops (its watches outlive a takeover by this manager)."""

    def __init__(
        self,
        store: JobStore,
        *,
        max_watchers: int,
        max_watch_backlog: int,
        notify_conninfo: str | None = None,
        poll_every: float | None = None,
    ) -> None:
        self._read = StoreReads(store)
        self._store = store
        self._events = EventBus(max_watch_backlog)
        self._max_watchers = max_watchers
        self._follower = ChangeFollower(self._read, self._events, POLL_EVERY if poll_every is None else poll_every)
        self._notify_conninfo = notify_conninfo
        self._tasks: list[asyncio.Task[None]] = []
        self.schedules = StoreScheduleReads(self._read)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._follower.run(), name="change-follower"))
        if self._notify_conninfo is not None:
            listener = listen_for_changes(self._notify_conninfo, self._follower.wake)
            self._tasks.append(asyncio.create_task(listener, name="change-listener"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._events.close_all("manager shutting down; watch again when it is back")
        await asyncio.to_thread(self._read.close)

    async def get(
        self,
        job_id: str,
        with_children: bool = True,
        *,
        page_size: int = DEFAULT_CHILDREN_PAGE_SIZE,
        after_position: int | None = None,
        statuses: Sequence[JobStatus] = (),
    ) -> Snapshot:
        return await stored_snapshot(
            self._read, self._store, job_id, with_children, page_size, after_position, statuses
        )

    async def list_jobs(self, filter: JobFilter, limit: int, before_seq: int | None) -> Page:
        return await self._read(self._store.list_jobs, filter, limit, before_seq)

    async def watch(self, job_id: str, with_children: bool = True) -> AsyncIterator[Snapshot | Job]:
        events = watch_job(
            self._events,
            self._max_watchers,
            lambda: self.get(job_id, with_children),
            job_id,
            with_children,
            before_snapshot=self._follower.mark,
        )
        async for event in events:
            yield event

    def waiting_reason(self, child: Job) -> str:
        return ""

    async def workers(self) -> list[WorkerView]:
        return await self._read(self._store.list_workers)

    async def unserved_targets(self) -> list[str]:
        pending = await self._read(self._store.pending_targets)
        return unserved(pending, await self.workers())

    async def changes_after(self, after_seq: int, limit: int) -> list[JobChange]:
        """The store's change feed (the web console's event stream reads it, on leader and standby alike)."""
        return await self._read(self._store.changes_after, after_seq, limit)

    async def last_change_seq(self) -> int:
        return await self._read(self._store.last_change_seq)
