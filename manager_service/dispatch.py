"""Dispatch rules: which pending child goes to which worker. Pure and in memory; the store stays the truth.

* one child runs per target at a time (across all parents);
* a target's children run in creation order (``seq``); a re-queued child keeps its place;
* a child goes only to a non-draining worker that serves its target and has a free slot;
* different targets run in parallel; the target whose head child is oldest is served first.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueuedChild:
    seq: int
    job_id: str
    attempt: int
    target: str


@dataclass(slots=True)
class WorkerCapacity:
    """What the planner needs to know of a connected worker."""

    worker_id: str
    targets: frozenset[str]
    free_slots: int
    draining: bool = False


@dataclass(frozen=True, slots=True)
class PlannedAssignment:
    child: QueuedChild
    worker_id: str


class DispatchQueue:
    """Pending children per target, and which target is busy with which child."""

    def __init__(self) -> None:
        self._pending: dict[str, list[tuple[int, str]]] = {}
        self._queued: dict[str, QueuedChild] = {}
        self._busy: dict[str, str] = {}

    # -- pending children

    def push(self, child: QueuedChild) -> None:
        """Queue a child (again, with its new attempt); its position comes from its seq."""
        if child.job_id in self._queued:
            self._queued[child.job_id] = child
            return
        self._queued[child.job_id] = child
        heapq.heappush(self._pending.setdefault(child.target, []), (child.seq, child.job_id))

    def discard(self, job_id: str) -> None:
        """Forget a pending child (cancelled). Its heap entry is dropped lazily."""
        self._queued.pop(job_id, None)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._queued

    def __len__(self) -> int:
        return len(self._queued)

    def head(self, target: str) -> QueuedChild | None:
        """The next child of ``target`` in order, skipping discarded entries."""
        heap = self._pending.get(target)
        while heap:
            seq, job_id = heap[0]
            child = self._queued.get(job_id)
            if child is not None and child.seq == seq:
                return child
            heapq.heappop(heap)
        self._pending.pop(target, None)
        return None

    def pending_targets(self) -> list[str]:
        return [t for t in list(self._pending) if self.head(t) is not None]

    def depth(self, target: str) -> int:
        return sum(1 for c in self._queued.values() if c.target == target)

    # -- busy targets

    def mark_busy(self, target: str, job_id: str) -> None:
        self._busy[target] = job_id

    def release(self, target: str, job_id: str) -> bool:
        """Free ``target`` if ``job_id`` holds it; True if it did."""
        if self._busy.get(target) == job_id:
            del self._busy[target]
            return True
        return False

    def busy_with(self, target: str) -> str | None:
        return self._busy.get(target)

    # -- planning

    def plan(self, workers: Iterable[WorkerCapacity], released: Collection[str] = ()) -> list[PlannedAssignment]:
        """Assignments that respect every rule above, counting ``released`` targets as free (their running
        child is being finished in the same commit). Does not change the queue: the caller pops what the store
        accepted with ``take``."""
        capacities = [w for w in workers if w.free_slots > 0 and not w.draining]
        if not capacities:
            return []
        ready = [
            child
            for t in list(self._pending)
            if (t not in self._busy or t in released) and (child := self.head(t)) is not None
        ]
        ready.sort(key=lambda c: c.seq)
        free = sum(w.free_slots for w in capacities)
        planned: list[PlannedAssignment] = []
        for child in ready:
            worker = _pick_worker(capacities, child.target)
            if worker is None:
                continue
            worker.free_slots -= 1
            planned.append(PlannedAssignment(child, worker.worker_id))
            free -= 1
            if free == 0:
                break  # every slot is taken: the rest wait for the next turn
        return planned

    def take(self, child: QueuedChild) -> None:
        """The child was assigned: remove it from its queue and mark its target busy."""
        self.discard(child.job_id)
        self.mark_busy(child.target, child.job_id)


def _pick_worker(capacities: list[WorkerCapacity], target: str) -> WorkerCapacity | None:
    """The serving worker with the most free slots (ties: first connected), so load spreads."""
    best: WorkerCapacity | None = None
    for worker in capacities:
        if (
            worker.free_slots > 0
            and target in worker.targets
            and (best is None or worker.free_slots > best.free_slots)
        ):
            best = worker
    return best
