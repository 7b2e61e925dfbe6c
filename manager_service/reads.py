"""What the read RPCs ask of a manager, leader or standby: the servicers depend on these interfaces only.

The leader's Orchestrator answers them from its memory and the store; a standby's ``StandbyReader``
(``manager_service.standby``) from the store alone. ``watch_job`` is the one WatchJob loop both run: a snapshot,
then one message per change of the job (and of its children), each version once, until the job is terminal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

from dbmaint.operations import JobStatus
from manager_service.domain import Firing, Job, JobFilter, Schedule
from manager_service.errors import JobNotFound, LimitReached
from manager_service.events import EventBus
from manager_service.store.base import JobStore, Page
from manager_service.validation import DEFAULT_CHILDREN_PAGE_SIZE
from manager_service.workers import WorkerView


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A job and (a parent) one page of its children; ``more_children``: more follow that page."""

    job: Job
    children: list[Job]
    more_children: bool = False


class JobReads(Protocol):
    """GetJob, ListJobs, WatchJob and ListWorkers."""

    async def get(
        self,
        job_id: str,
        with_children: bool = True,
        *,
        page_size: int = DEFAULT_CHILDREN_PAGE_SIZE,
        after_position: int | None = None,
        statuses: Sequence[JobStatus] = (),
    ) -> Snapshot:
        """The job and (a parent) one page of its children; JobNotFound."""
        ...

    async def list_jobs(self, filter: JobFilter, limit: int, before_seq: int | None) -> Page: ...

    def watch(self, job_id: str, with_children: bool = True) -> AsyncIterator[Snapshot | Job]:
        """A snapshot, then every change (see ``watch_job``)."""
        ...

    def waiting_reason(self, child: Job) -> str:
        """Why a pending child waits ("" when the reader cannot tell)."""
        ...

    async def workers(self) -> list[WorkerView]: ...

    async def unserved_targets(self) -> list[str]:
        """Targets with pending children that no connected, non-draining worker serves."""
        ...


class ScheduleReads(Protocol):
    """GetSchedule, ListSchedules and ListFirings."""

    async def get(self, schedule_id: str) -> Schedule:
        """ScheduleNotFound if there is no live schedule with this id."""
        ...

    async def list_schedules(self, limit: int, after_id: str | None) -> list[Schedule]: ...

    async def firings(
        self, schedule_id: str, limit: int, before_seq: int | None
    ) -> tuple[list[Firing], int | None]: ...


P = ParamSpec("P")
R = TypeVar("R")


class StoreCall(Protocol):
    """Runs one store call off the event loop (each reader owns the threads it runs on)."""

    async def __call__(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...


async def stored_snapshot(
    read: StoreCall,
    store: JobStore,
    job_id: str,
    with_children: bool,
    page_size: int,
    after_position: int | None,
    statuses: Sequence[JobStatus],
) -> Snapshot:
    """GetJob from the store, for leader and standby alike: the job and (a parent) one page of its children,
    ``page_size`` after ``after_position`` in position order, only those with one of ``statuses`` if given."""
    job = await read(store.get_job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    if not (job.is_parent and with_children):
        return Snapshot(job, [])
    page = await read(store.children_page, job.id, page_size, after_position, statuses)
    return Snapshot(job, page.children, page.more)


def unserved(pending_targets: Sequence[str], workers: Sequence[WorkerView]) -> list[str]:
    """The targets of ``pending_targets`` that no worker of ``workers`` serves without draining."""
    served = {target for worker in workers if not worker.draining for target in worker.targets}
    return sorted(target for target in pending_targets if target not in served)


async def watch_job(
    events: EventBus,
    max_watchers: int,
    snapshot: Callable[[], Awaitable[Snapshot]],
    job_id: str,
    with_children: bool,
    before_snapshot: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Snapshot | Job]:
    """Subscribe first, then take the snapshot: a change committed after the snapshot was read is published
    after the subscription, and one published before it is in the snapshot; what both carry is sent once (by
    version). ``before_snapshot`` runs between the two (a standby's follower marks where it reads from)."""
    if events.watchers >= max_watchers:
        raise LimitReached(f"{max_watchers} watches are open; try again later")
    subscription = events.subscribe(job_id, with_children)
    try:
        if before_snapshot is not None:
            await before_snapshot()
        first = await snapshot()
        yield first
        if first.job.status.is_terminal:
            return
        seen = {j.id: j.version for j in (first.job, *first.children)}
        while True:
            changed = await subscription.next()
            if seen.get(changed.id, 0) >= changed.version:
                continue  # already in the snapshot or a later event
            seen[changed.id] = changed.version
            yield changed
            if changed.id == job_id and changed.status.is_terminal:
                return
    finally:
        events.unsubscribe(subscription)
