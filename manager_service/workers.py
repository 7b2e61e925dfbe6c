"""Connected workers, as the manager sees them. In memory only: a worker re-announces itself on reconnect."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from dbmaint.operations import Operation
from manager_service.dispatch import WorkerCapacity
from manager_service.domain import utcnow


@dataclass(frozen=True, slots=True)
class AssignCommand:
    job_id: str
    attempt: int
    target: str
    operation: Operation
    job_type: str
    config: dict[str, object]
    deadline: datetime
    parent_id: str


@dataclass(frozen=True, slots=True)
class CancelCommand:
    job_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class DrainCommand:
    """Tell the worker to drain (an operator asked)."""

    reason: str


@dataclass(frozen=True, slots=True)
class CloseCommand:
    """End the stream cleanly (the manager is shutting down)."""

    reason: str


Command = AssignCommand | CancelCommand | DrainCommand | CloseCommand


@dataclass(frozen=True, slots=True)
class HelloInfo:
    worker_id: str
    targets: frozenset[str]
    slots: int
    running: tuple[tuple[str, int], ...] = ()
    peer: str = ""
    version: str = ""
    accepts_batches: bool = False


@dataclass(eq=False)
class WorkerSession:
    """One connected worker stream."""

    worker_id: str
    targets: frozenset[str]
    slots: int
    peer: str = ""
    # The worker reads AssignmentBatch: several assignments go out as one message.
    accepts_batches: bool = False
    connected_at: datetime = field(default_factory=utcnow)
    last_seen_at: datetime = field(default_factory=utcnow)
    last_seen_monotonic: float = field(default_factory=time.monotonic)
    draining: bool = False
    # Children this worker holds per the store: job_id -> attempt.
    assigned: dict[str, int] = field(default_factory=dict)
    # Children it says it runs that are not (or no longer) its own; they still take a slot until it stops them.
    foreign: set[tuple[str, int]] = field(default_factory=set)
    outbox: asyncio.Queue[Command] = field(default_factory=asyncio.Queue)

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - len(self.assigned) - len(self.foreign))

    def capacity(self) -> WorkerCapacity:
        return WorkerCapacity(self.worker_id, self.targets, self.free_slots, self.draining)

    def holds(self, job_id: str, attempt: int) -> bool:
        """Does this child attempt take one of the worker's slots?"""
        return self.assigned.get(job_id) == attempt or (job_id, attempt) in self.foreign

    def forget(self, job_id: str, attempt: int) -> None:
        """The worker reported this attempt finished: its slot is free."""
        self.foreign.discard((job_id, attempt))
        if self.assigned.get(job_id) == attempt:
            del self.assigned[job_id]

    def send(self, command: Command) -> None:
        self.outbox.put_nowait(command)

    async def next_commands(self, limit: int) -> list[Command]:
        """Wait for a command, then take (up to ``limit``) all that are queued behind it."""
        commands = [await self.outbox.get()]
        while len(commands) < limit and not self.outbox.empty():
            commands.append(self.outbox.get_nowait())
        return commands

    def touch(self) -> None:
        self.last_seen_at = utcnow()
        self.last_seen_monotonic = time.monotonic()
