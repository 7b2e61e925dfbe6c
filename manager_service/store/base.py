"""The store interface the orchestrator depends on. Synchronous; the orchestrator runs it off the event loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from manager_service.domain import (
    BatchOutcome,
    CancelOutcome,
    ChildOutcome,
    CreateOutcome,
    Job,
    JobFilter,
    MaintenanceSpec,
    StartRequest,
    Transition,
)


@dataclass(frozen=True, slots=True)
class Page:
    jobs: list[Job]
    next_before_seq: int | None


class JobStore(Protocol):
    def create_maintenance(self, spec: MaintenanceSpec) -> CreateOutcome:
        """Store the parent and all its children in ONE transaction. A known request_id returns the stored
        parent (created=False); the same key with other parameters raises AlreadyExists."""

    def get_job(self, job_id: str) -> Job | None: ...

    def get_children(self, parent_id: str) -> list[Job]: ...

    def list_jobs(self, filter: JobFilter, limit: int, before_seq: int | None) -> Page:
        """Newest first; ``before_seq`` continues a previous page."""

    def unfinished_children(self) -> list[Job]:
        """PENDING and RUNNING children in creation order: what the manager rebuilds its memory from."""

    def start_children(self, requests: Sequence[StartRequest]) -> list[Transition]:
        """PENDING -> RUNNING for each request whose attempt still matches (one transaction); the others are
        left out of the answer."""

    def apply_batch(self, outcomes: Sequence[ChildOutcome], starts: Sequence[StartRequest]) -> BatchOutcome:
        """Results, then starts, fenced like finish_child/start_children, in ONE transaction (group commit)."""

    def finish_child(self, outcome: ChildOutcome) -> Transition | None:
        """RUNNING -> COMPLETED/FAILED/CANCELLED if the attempt and worker match; None if stale."""

    def release_child(self, job_id: str, attempt: int, why: str) -> Transition | None:
        """The worker running this attempt was lost: re-queue (attempt + 1), or fail/cancel per the state
        machine. None if the attempt is no longer running."""

    def cancel_job(self, job_id: str, reason: str) -> CancelOutcome:
        """Cancel a parent (all its unfinished children) or a child. Raises NotFound or FailedPrecondition."""

    def close(self) -> None: ...
