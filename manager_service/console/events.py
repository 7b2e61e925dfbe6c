"""``GET /api/v1/events``: Server-Sent Events, one per stored job change, read from the store's change feed
(``job_changes``) through the current role's reader, so leader and standby stream alike.

Each event's ``id`` is the store's change_seq and its data the changed Job in the protobuf JSON mapping. A
reconnect with ``Last-Event-ID`` resumes after that change; when the changes right after it are gone (pruned
after an hour, or an id this store never had), a ``reset`` event tells the page to reload its data. Changes are
read in batches at most every ``DEBOUNCE_SECONDS`` and only the latest version of each job in a batch is sent,
so a parent of 10,000 children does not flood the browser. A keep-alive comment goes every
``KEEPALIVE_SECONDS``. The store writes no change rows for the children a new parent is created with: a new
parent's event means "reload its children"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from aiohttp import web
from google.protobuf import json_format

from manager_service.convert import job_to_proto
from manager_service.domain import JobChange
from manager_service.errors import StoreUnavailable

log = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
CHANGES_PER_READ = 1000
RETRY_MILLISECONDS = 2000


class ChangeFeed(Protocol):
    async def changes_after(self, after_seq: int, limit: int) -> list[JobChange]: ...

    async def last_change_seq(self) -> int: ...


def latest_per_job(changes: Sequence[JobChange]) -> list[JobChange]:
    """Of each job, only its latest change in ``changes``, in change order: the last one sent has the batch's
    highest change_seq, so a resume from it misses nothing."""
    latest: dict[str, JobChange] = {}
    for change in changes:
        latest.pop(change.job_id, None)  # re-inserted last: dict order is the order of latest changes
        latest[change.job_id] = change
    return list(latest.values())


def event(change: JobChange) -> bytes:
    data = json_format.MessageToJson(job_to_proto(change.job()), indent=None)
    return f"id: {change.change_seq}\nevent: job\ndata: {data}\n\n".encode()


RESET = b"event: reset\ndata: {}\n\n"
KEEPALIVE = b": keep-alive\n\n"


def resume_point(last_event_id: str | None) -> int | None:
    """The change_seq of a Last-Event-ID (None: none, or not one of ours)."""
    if last_event_id is None or not last_event_id.strip().isdigit():
        return None
    return int(last_event_id.strip())


class EventStream:
    """The handler of ``/api/v1/events``; ``feed()`` gives the current role's feed (None while starting or
    stopping) on every read, so a stream goes on across a change of role."""

    def __init__(self, feed: Callable[[], ChangeFeed | None], closing: asyncio.Event) -> None:
        self._feed = feed
        self._closing = closing

    async def _current(self) -> ChangeFeed:
        while (feed := self._feed()) is None:
            await self._pause(DEBOUNCE_SECONDS)
        return feed

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
        if self._closing.is_set():
            raise asyncio.CancelledError

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MILLISECONDS}\n\n".encode())
        try:
            # A reconnect says where it was (Last-Event-ID); a page first opens where its data was read (?after=).
            where = request.headers.get("Last-Event-ID") or request.query.get("after")
            cursor = await self._start(response, resume_point(where))
            idle = 0.0
            while True:
                await self._pause(DEBOUNCE_SECONDS)
                try:
                    batch = await self._batch(cursor)
                except StoreUnavailable as error:
                    log.warning("the console's event stream could not read the store: %s; retrying", error)
                    batch = []
                for change in latest_per_job(batch):
                    await response.write(event(change))
                if batch:
                    cursor, idle = batch[-1].change_seq, 0.0
                else:
                    idle += DEBOUNCE_SECONDS
                    if idle >= KEEPALIVE_SECONDS:
                        await response.write(KEEPALIVE)
                        idle = 0.0
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        return response

    async def _start(self, response: web.StreamResponse, resume_after: int | None) -> int:
        feed = await self._current()
        head = await feed.last_change_seq()
        if resume_after is None:
            await response.write(b": connected\n\n")
            return head
        if resume_after > head:
            await response.write(RESET)  # not an id of this store (a new one, or another)
            return head
        first = await feed.changes_after(resume_after, 1)
        if resume_after < head and (not first or first[0].change_seq > resume_after + 1):
            await response.write(RESET)  # the changes after it were pruned (or a sequence gap: reloading is safe)
            return head
        return resume_after

    async def _batch(self, cursor: int) -> list[JobChange]:
        """Every change after ``cursor`` (read CHANGES_PER_READ at a time)."""
        feed = await self._current()
        changes: list[JobChange] = []
        while True:
            read = await feed.changes_after(changes[-1].change_seq if changes else cursor, CHANGES_PER_READ)
            changes += read
            if len(read) < CHANGES_PER_READ:
                return changes
