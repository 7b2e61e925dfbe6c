"""The change feed behind WatchJob: every stored change of a job is published to the watchers of that job
and of its parent. Each watcher has a bounded queue; one that falls too far behind is dropped (told why)
instead of growing the manager's memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from manager_service.domain import Job
from manager_service.errors import DomainError


class WatcherDropped(DomainError):
    """The watcher could not keep up, or the manager is shutting down."""


_CLOSED = object()


async def wait_set(event: asyncio.Event, timeout: float | None) -> None:
    """Until ``event`` is set or ``timeout`` seconds have passed (None: no limit).

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as the event is set (the wait
    just returns), so a side task looping on it outlives its cancel and the shutdown awaiting it never ends."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


class Subscription:
    def __init__(self, job_id: str, max_pending: int, with_children: bool = True) -> None:
        self.job_id = job_id
        # False: only the job's own changes (a client that waits for the end need not pay for every child's).
        self.with_children = with_children
        self._queue: asyncio.Queue[object] = asyncio.Queue(max_pending + 1)
        self._max_pending = max_pending
        self._closed_reason: str | None = None

    def offer(self, job: Job) -> None:
        if self._closed_reason is not None:
            return
        if self._queue.qsize() >= self._max_pending:
            self.close(f"watcher fell more than {self._max_pending} changes behind; watch again")
            return
        self._queue.put_nowait(job)

    def close(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
            self._queue.put_nowait(_CLOSED)

    async def next(self) -> Job:
        item = await self._queue.get()
        if item is _CLOSED:
            raise WatcherDropped(self._closed_reason or "watch closed")
        assert isinstance(item, Job)
        return item


class EventBus:
    def __init__(self, max_pending: int = 10_000) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}
        self._max_pending = max_pending

    @property
    def watchers(self) -> int:
        return sum(len(watchers) for watchers in self._subscribers.values())

    def watched(self, job_id: str) -> bool:
        """Does anyone watch ``job_id`` (its own changes or its children's)?"""
        return job_id in self._subscribers

    def subscribe(self, job_id: str, with_children: bool = True) -> Subscription:
        subscription = Subscription(job_id, self._max_pending, with_children)
        self._subscribers.setdefault(job_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        watchers = self._subscribers.get(subscription.job_id)
        if watchers is not None:
            watchers.discard(subscription)
            if not watchers:
                del self._subscribers[subscription.job_id]

    def publish(self, changed: Iterable[Job]) -> None:
        if not self._subscribers:
            return
        for job in changed:
            for subscription in self._subscribers.get(job.id, ()):
                subscription.offer(job)
            if job.parent_id is not None:
                for subscription in self._subscribers.get(job.parent_id, ()):
                    if subscription.with_children:
                        subscription.offer(job)

    def close_all(self, reason: str) -> None:
        for watchers in self._subscribers.values():
            for subscription in watchers:
                subscription.close(reason)
