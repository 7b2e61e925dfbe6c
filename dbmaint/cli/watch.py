"""Following a job with WatchJob: the state the stream builds, the views it feeds, and reconnection."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Protocol

from dbmaint.cli.client import ManagerClient, StreamLost
from dbmaint.operations import PARENT_JOB_TYPE, JobStatus
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.wire import status_from_proto


def is_terminal(job: pb.Job) -> bool:
    status = status_from_proto(job.status)
    return status is not None and status.is_terminal


def is_parent(job: pb.Job) -> bool:
    return job.type == PARENT_JOB_TYPE


# The children that did not complete: what `dbmaint get` shows by default, and the results of a large parent.
NOT_COMPLETED = (pb.JOB_STATUS_PENDING, pb.JOB_STATUS_RUNNING, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED)
# Which children a view with little room shows first.
_SHOW_FIRST = {
    pb.JOB_STATUS_RUNNING: 0,
    pb.JOB_STATUS_FAILED: 1,
    pb.JOB_STATUS_CANCELLED: 2,
    pb.JOB_STATUS_PENDING: 3,
}


@dataclass
class WatchState:
    """The watched job and (for a parent) the children the stream reported, as it last reported them: those of
    the snapshot's page and every child that changed since. A change costs O(1), whatever the parent's size."""

    job: pb.Job
    by_id: dict[str, pb.Job] = field(default_factory=dict)
    _in_order: list[pb.Job] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, response: pb.GetJobResponse) -> WatchState:
        return cls(job=response.job, by_id={child.id: child for child in response.children})

    @property
    def children(self) -> list[pb.Job]:
        """The known children in requested order (sorted once per change, when asked)."""
        if self._in_order is None:
            self._in_order = sorted(self.by_id.values(), key=lambda child: child.position)
        return self._in_order

    def apply(self, job: pb.Job) -> pb.Job | None:
        """Records a changed job; returns the version it replaces (None for a job not seen before)."""
        if job.id == self.job.id:
            watched, self.job = self.job, job
            return watched
        previous = self.by_id.get(job.id)
        self.by_id[job.id] = job
        self._in_order = None
        return previous

    @property
    def rows(self) -> list[pb.Job]:
        """What a view shows one row for: the children of a parent, or the watched child itself."""
        return self.children if is_parent(self.job) else [self.job]

    def rows_within(self, limit: int) -> list[pb.Job]:
        """At most ``limit`` rows, in requested order: all of them if they fit; otherwise the children that did
        not complete, running ones first, then failed, cancelled and pending ones."""
        rows = self.rows
        if len(rows) <= limit:
            return rows
        unfinished = (row for row in rows if row.status in _SHOW_FIRST)
        picked = heapq.nsmallest(limit, unfinished, key=lambda row: (_SHOW_FIRST[row.status], row.position))
        return sorted(picked, key=lambda row: row.position)

    @property
    def completed(self) -> bool:
        return status_from_proto(self.job.status) is JobStatus.COMPLETED


class WatchView(Protocol):
    def start(self, state: WatchState) -> None: ...

    def changed(self, state: WatchState, job: pb.Job, previous: pb.Job | None) -> None: ...

    def note(self, text: str) -> None: ...

    def stop(self) -> None: ...


def follow(client: ManagerClient, job_id: str, view: WatchView) -> WatchState:
    """Streams WatchJob into ``view`` until the job is terminal; returns the final state (re-read with GetJob).

    A broken stream is reopened (``ManagerClient.watch_reopening``: on the next manager when several are
    configured, for up to the client's timeout); the fresh snapshot replaces the state. Any other error is
    raised as :class:`CliError`.
    """
    state: WatchState | None = None
    started = False
    try:
        for message in client.watch_reopening(job_id):
            if isinstance(message, StreamLost):
                where = f"reconnecting to {message.moved_to}" if message.moved_to else "reconnecting"
                view.note(f"lost the watch stream ({message.lost}); {where}")
            elif message.HasField("snapshot"):
                state = WatchState.of(message.snapshot)
                if not started:
                    view.start(state)
                    started = True
                else:
                    view.note(f"reconnected to the manager ({client.address})")
                    for row in state.rows:
                        view.changed(state, row, None)
            elif state is not None:
                previous = state.apply(message.changed)
                view.changed(state, message.changed, previous)
            if state is not None and is_terminal(state.job):
                break
    finally:
        if started:
            view.stop()
    final = client.get(job_id)
    if final.next_children_page_token:  # more children than a page: the results show those that did not complete
        final = client.get(job_id, statuses=NOT_COMPLETED)
    return WatchState.of(final)
