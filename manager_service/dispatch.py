"""Dispatch rules: which pending child goes to which worker. Pure and in memory; the store stays the truth.

* one child runs per target at a time (across all parents);
* a target's children run in creation order (``seq``); a re-queued child keeps its place;
* refinement for maintenance windows: the order holds among the children that MAY start now. A child whose
  window does not allow a start is not in this queue at all (the fleet core keeps it aside until its window
  opens), so it neither starts nor holds its target: a younger child of another parent may run there
  meanwhile, and when the window opens the waiting child takes its place by ``seq`` among those queued then;
* a child goes only to a non-draining worker that serves its target and has a free slot;
* different targets run in parallel; the target whose head child is oldest is served first;
* a read-only child (MODE_PLAN: it observes the catalog and changes nothing) does not hold its target: it is
  not in its target's queue, starts beside whatever runs there (a VACUUM of another parent, another PLAN child)
  and never blocks the next child there. It still takes a worker slot, and the read-only children are served
  in ``seq`` order among the targets' heads (the oldest first). It ignores maintenance windows (the fleet core
  queues it whatever its window says).
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
    # MODE_PLAN: needs a slot but not its target (see the module docstring).
    read_only: bool = False


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
        # (seq of its head child, target) for every target that can start a child now, so a dispatch turn looks
        # at the few targets it can serve instead of all of them. An entry goes stale when its target turns busy
        # or its head changes; stale entries are dropped when they reach the top (``_ready_head``).
        self._ready: list[tuple[int, str]] = []
        # (seq, job id) of the read-only children: ready whatever their target does. Entries of discarded
        # children are dropped when they reach the top.
        self._read_only: list[tuple[int, str]] = []

    # -- pending children

    def push(self, child: QueuedChild) -> None:
        """Queue a child (again, with its new attempt); its position comes from its seq."""
        if child.job_id in self._queued:
            self._queued[child.job_id] = child
            return
        self._queued[child.job_id] = child
        if child.read_only:
            heapq.heappush(self._read_only, (child.seq, child.job_id))
            return
        heapq.heappush(self._pending.setdefault(child.target, []), (child.seq, child.job_id))
        self._offer(child.target)

    def discard(self, job_id: str) -> None:
        """Forget a pending child (cancelled). Its heap entry is dropped lazily."""
        child = self._queued.pop(job_id, None)
        if child is not None and not child.read_only:
            self._offer(child.target)  # its target may have a new head

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
        targets = [t for t in list(self._pending) if self.head(t) is not None]
        read_only = {c.target for c in self._queued.values() if c.read_only}
        return targets + sorted(read_only.difference(targets))

    def depths(self) -> dict[str, int]:
        """Pending children per target."""
        depths: dict[str, int] = {}
        for child in list(self._queued.values()):
            depths[child.target] = depths.get(child.target, 0) + 1
        return depths

    # -- busy targets

    def mark_busy(self, target: str, job_id: str) -> None:
        self._busy[target] = job_id

    def release(self, target: str, job_id: str) -> bool:
        """Free ``target`` if ``job_id`` holds it; True if it did."""
        if self._busy.get(target) == job_id:
            del self._busy[target]
            self._offer(target)
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
        free = sum(w.free_slots for w in capacities)
        # Released targets are busy until this turn's commit frees them, so they are not in the ready heap.
        freed = sorted((c for t in released if (c := self.head(t)) is not None), key=lambda c: c.seq)
        planned: list[PlannedAssignment] = []
        looked_at: list[tuple[int, str]] = []  # ready entries taken off the heap, put back at the end
        read_only_looked_at: list[tuple[int, str]] = []  # likewise for the read-only heap
        seen: set[tuple[bool, str]] = set()  # (read-only, its job id) or (not, its target)
        next_freed = 0
        while free > 0:
            ready = self._ready_head()
            read_only = self._read_only_head()
            freed_head = freed[next_freed] if next_freed < len(freed) else None
            candidates = [c for c in (freed_head, ready, read_only) if c is not None]
            if not candidates:
                break
            child = min(candidates, key=lambda c: c.seq)
            if child is freed_head:
                next_freed += 1
            elif child is ready:
                looked_at.append(heapq.heappop(self._ready))
            else:
                read_only_looked_at.append(heapq.heappop(self._read_only))
            # A duplicate entry of a target (or of a read-only child queued again) already considered.
            key = (child.read_only, child.job_id if child.read_only else child.target)
            if key in seen:
                continue
            seen.add(key)
            worker = _pick_worker(capacities, child.target)
            if worker is None:
                continue  # nobody serves it now; the others still go
            worker.free_slots -= 1
            planned.append(PlannedAssignment(child, worker.worker_id))
            free -= 1
        for entry in looked_at:
            heapq.heappush(self._ready, entry)
        for entry in read_only_looked_at:
            heapq.heappush(self._read_only, entry)
        return planned

    def take(self, child: QueuedChild) -> None:
        """The child was assigned: mark its target busy (unless it is read-only) and remove it from its queue."""
        if not child.read_only:
            self.mark_busy(child.target, child.job_id)
        self.discard(child.job_id)

    def _offer(self, target: str) -> None:
        """Add a ready-heap entry for ``target`` if it can start a child now."""
        if target not in self._busy and (head := self.head(target)) is not None:
            heapq.heappush(self._ready, (head.seq, target))

    def _ready_head(self) -> QueuedChild | None:
        """The head child of the top ready entry (the oldest that can start), dropping stale entries on the way."""
        while self._ready:
            seq, target = self._ready[0]
            head = None if target in self._busy else self.head(target)
            if head is not None and head.seq == seq:
                return head
            heapq.heappop(self._ready)
        return None

    def _read_only_head(self) -> QueuedChild | None:
        """The oldest queued read-only child, dropping the entries of discarded ones on the way."""
        while self._read_only:
            seq, job_id = self._read_only[0]
            child = self._queued.get(job_id)
            if child is not None and child.seq == seq:
                return child
            heapq.heappop(self._read_only)
        return None


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
