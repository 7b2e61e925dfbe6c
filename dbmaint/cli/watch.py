"""Following a job with WatchJob: the state the stream builds, the views it feeds, and reconnection."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from dbmaint.cli.client import EXIT_FAILURE, CliError, ManagerClient, rpc_code
from dbmaint.operations import PARENT_JOB_TYPE, JobStatus
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.wire import status_from_proto


def is_terminal(job: pb.Job) -> bool:
    status = status_from_proto(job.status)
    return status is not None and status.is_terminal


def is_parent(job: pb.Job) -> bool:
    return job.type == PARENT_JOB_TYPE


@dataclass
class WatchState:
    """The watched job and (for a parent) its children in requested order, as the stream last reported them."""

    job: pb.Job
    children: list[pb.Job] = field(default_factory=list)

    @classmethod
    def of(cls, response: pb.GetJobResponse) -> WatchState:
        return cls(job=response.job, children=sorted(response.children, key=lambda child: child.position))

    def apply(self, job: pb.Job) -> pb.Job | None:
        """Records a changed job; returns the version it replaces (None for a job not seen before)."""
        if job.id == self.job.id:
            previous, self.job = self.job, job
            return previous
        for index, child in enumerate(self.children):
            if child.id == job.id:
                self.children[index] = job
                return child
        self.children.append(job)
        self.children.sort(key=lambda child: child.position)
        return None

    @property
    def rows(self) -> list[pb.Job]:
        """What a view shows one row for: the children of a parent, or the watched child itself."""
        return self.children if is_parent(self.job) else [self.job]

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

    A stream that breaks with UNAVAILABLE (the manager restarted, the network blinked) is reopened for up to the
    client's timeout; the fresh snapshot replaces the state. Any other error is raised as :class:`CliError`.
    """
    state: WatchState | None = None
    lost_since: float | None = None
    started = False
    try:
        while state is None or not is_terminal(state.job):
            try:
                for message in client.watch(job_id):
                    lost_since = None
                    if message.HasField("snapshot"):
                        state = WatchState.of(message.snapshot)
                        if not started:
                            view.start(state)
                            started = True
                        else:
                            view.note("reconnected to the manager")
                            for row in state.rows:
                                view.changed(state, row, None)
                    elif state is not None:
                        previous = state.apply(message.changed)
                        view.changed(state, message.changed, previous)
                if state is None:
                    raise CliError(f"the manager ended the watch of {job_id} without a snapshot", EXIT_FAILURE)
                if not is_terminal(state.job):
                    time.sleep(0.2)  # the stream ended early: reopen it for a fresh snapshot
            except grpc.RpcError as error:
                if state is None or rpc_code(error) is not grpc.StatusCode.UNAVAILABLE:
                    raise client.error(error) from None
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    view.note(f"lost the watch stream ({client.address}); reconnecting")
                elif now - lost_since > client.timeout:
                    raise client.error(error) from None
                time.sleep(0.5)
    finally:
        if started:
            view.stop()
    return WatchState.of(client.get(job_id))
