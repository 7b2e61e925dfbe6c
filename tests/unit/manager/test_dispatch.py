"""Unit tests of manager_service.dispatch.DispatchQueue: the dispatch rules of docs/protocol.md."""

from __future__ import annotations

from collections import Counter

from manager_service.dispatch import DispatchQueue, PlannedAssignment, QueuedChild, WorkerCapacity


def q(seq: int, target: str, attempt: int = 1) -> QueuedChild:
    return QueuedChild(seq=seq, job_id=f"job-{seq}", attempt=attempt, target=target)


def worker(worker_id: str, targets: set[str], free: int, draining: bool = False) -> WorkerCapacity:
    return WorkerCapacity(worker_id, frozenset(targets), free, draining)


def queue_of(*children: QueuedChild) -> DispatchQueue:
    queue = DispatchQueue()
    for c in children:
        queue.push(c)
    return queue


def run_all(queue: DispatchQueue, workers: list[WorkerCapacity]) -> list[PlannedAssignment]:
    """Plan and take everything once (what the orchestrator does when the store accepts every start)."""
    planned = queue.plan(workers)
    for p in planned:
        queue.take(p.child)
    return planned


def test_never_more_than_free_slots_per_worker() -> None:
    queue = queue_of(*(q(i, f"t{i}") for i in range(1, 11)))
    targets = {f"t{i}" for i in range(1, 11)}
    planned = queue.plan([worker("a", targets, 3), worker("b", targets, 2)])
    per_worker = Counter(p.worker_id for p in planned)
    assert per_worker == {"a": 3, "b": 2}
    assert len({p.child.target for p in planned}) == 5


def test_worker_without_free_slots_gets_nothing() -> None:
    queue = queue_of(q(1, "t1"))
    assert queue.plan([worker("a", {"t1"}, 0)]) == []


def test_plan_does_not_change_the_queue() -> None:
    queue = queue_of(q(1, "t1"), q(2, "t2"))
    first = queue.plan([worker("a", {"t1", "t2"}, 5)])
    second = queue.plan([worker("a", {"t1", "t2"}, 5)])
    assert first == second and len(first) == 2
    assert len(queue) == 2 and "job-1" in queue


def test_one_child_per_target_at_a_time() -> None:
    queue = queue_of(q(1, "t"), q(2, "t"), q(3, "t"))
    planned = run_all(queue, [worker("a", {"t"}, 5), worker("b", {"t"}, 5)])
    assert [p.child.job_id for p in planned] == ["job-1"]
    assert queue.busy_with("t") == "job-1"
    # busy target is skipped, however much capacity there is
    assert queue.plan([worker("a", {"t"}, 5), worker("b", {"t"}, 5)]) == []
    assert queue.release("t", "job-1")
    assert [p.child.job_id for p in queue.plan([worker("a", {"t"}, 5)])] == ["job-2"]


def test_release_by_other_job_does_not_free_target() -> None:
    queue = queue_of(q(1, "t"), q(2, "t"))
    run_all(queue, [worker("a", {"t"}, 1)])
    assert not queue.release("t", "job-2")
    assert queue.busy_with("t") == "job-1"
    assert queue.plan([worker("a", {"t"}, 1)]) == []


def test_target_children_run_in_seq_order_whatever_push_order() -> None:
    queue = queue_of(q(7, "t"), q(3, "t"), q(5, "t"))
    order = []
    for _ in range(3):
        (planned,) = run_all(queue, [worker("a", {"t"}, 1)])
        order.append(planned.child.seq)
        queue.release("t", planned.child.job_id)
    assert order == [3, 5, 7]
    assert len(queue) == 0 and queue.head("t") is None


def test_requeued_child_keeps_its_place_at_the_head() -> None:
    queue = queue_of(q(1, "t"), q(2, "t"), q(3, "t"))
    (first,) = run_all(queue, [worker("a", {"t"}, 1)])
    assert first.child.job_id == "job-1"
    # the worker is lost: the child comes back with attempt 2, the target is freed
    queue.release("t", "job-1")
    queue.push(q(1, "t", attempt=2))
    head = queue.head("t")
    assert head is not None and (head.job_id, head.attempt) == ("job-1", 2)
    (again,) = run_all(queue, [worker("b", {"t"}, 1)])
    assert (again.child.job_id, again.child.attempt, again.worker_id) == ("job-1", 2, "b")


def test_repush_of_queued_child_updates_attempt_without_duplicate() -> None:
    queue = queue_of(q(1, "t"), q(2, "t"))
    queue.push(q(1, "t", attempt=2))
    assert len(queue) == 2
    assert queue.depths() == {"t": 2}
    head = queue.head("t")
    assert head is not None and head.attempt == 2


def test_draining_worker_gets_nothing() -> None:
    queue = queue_of(q(1, "t1"), q(2, "t2"))
    assert queue.plan([worker("a", {"t1", "t2"}, 5, draining=True)]) == []
    planned = queue.plan([worker("a", {"t1", "t2"}, 5, draining=True), worker("b", {"t2"}, 5)])
    assert [(p.child.job_id, p.worker_id) for p in planned] == [("job-2", "b")]


def test_worker_not_serving_target_gets_nothing() -> None:
    queue = queue_of(q(1, "t1"))
    assert queue.plan([worker("a", {"other"}, 5)]) == []
    assert queue.pending_targets() == ["t1"]


def test_unservable_head_does_not_block_other_targets() -> None:
    queue = queue_of(q(1, "nobody"), q(2, "t2"))
    planned = queue.plan([worker("a", {"t2"}, 1)])
    assert [p.child.job_id for p in planned] == ["job-2"]


def test_different_targets_run_in_parallel() -> None:
    queue = queue_of(q(1, "t1"), q(2, "t1"), q(3, "t2"), q(4, "t3"))
    planned = run_all(queue, [worker("a", {"t1", "t2", "t3"}, 10)])
    assert sorted(p.child.job_id for p in planned) == ["job-1", "job-3", "job-4"]
    assert {queue.busy_with(t) for t in ("t1", "t2", "t3")} == {"job-1", "job-3", "job-4"}


def test_discard_removes_pending_child() -> None:
    queue = queue_of(q(1, "t"), q(2, "t"))
    queue.discard("job-1")
    assert "job-1" not in queue and len(queue) == 1
    planned = queue.plan([worker("a", {"t"}, 1)])
    assert [p.child.job_id for p in planned] == ["job-2"]
    queue.discard("job-2")
    assert queue.plan([worker("a", {"t"}, 1)]) == []
    assert queue.pending_targets() == []
    queue.discard("never-queued")  # harmless


def test_oldest_head_served_first_when_capacity_is_short() -> None:
    queue = queue_of(q(5, "young"), q(2, "old"), q(9, "youngest"))
    planned = queue.plan([worker("a", {"young", "old", "youngest"}, 1)])
    assert [p.child.job_id for p in planned] == ["job-2"]
    planned = queue.plan([worker("a", {"young", "old", "youngest"}, 2)])
    assert [p.child.job_id for p in planned] == ["job-2", "job-5"]


def test_load_spreads_across_workers() -> None:
    targets = {f"t{i}" for i in range(4)}
    queue = queue_of(*(q(i + 1, f"t{i}") for i in range(4)))
    planned = queue.plan([worker("a", targets, 4), worker("b", targets, 4)])
    assert Counter(p.worker_id for p in planned) == {"a": 2, "b": 2}


def test_worker_with_most_free_slots_is_preferred() -> None:
    queue = queue_of(q(1, "t1"))
    planned = queue.plan([worker("a", {"t1"}, 1), worker("b", {"t1"}, 3)])
    assert [p.worker_id for p in planned] == ["b"]


def test_take_marks_target_busy_and_removes_child() -> None:
    queue = queue_of(q(1, "t"))
    queue.take(q(1, "t"))
    assert "job-1" not in queue
    assert queue.busy_with("t") == "job-1"
    assert queue.release("t", "job-1")
    assert queue.busy_with("t") is None


def _reference_plan(
    queue: DispatchQueue, workers: list[WorkerCapacity], released: set[str]
) -> list[PlannedAssignment]:
    """The dispatch rules written the slow, obvious way: every target's head, oldest first."""
    capacities = [w for w in workers if w.free_slots > 0 and not w.draining]
    heads = [c for t in queue.pending_targets() if (c := queue.head(t)) is not None]
    ready = sorted(
        (c for c in heads if queue.busy_with(c.target) is None or c.target in released), key=lambda c: c.seq
    )
    planned = []
    for child in ready:
        serving = [w for w in capacities if w.free_slots > 0 and child.target in w.targets]
        if not serving:
            continue
        best = max(serving, key=lambda w: w.free_slots)  # first of the most free, as the planner picks
        best.free_slots -= 1
        planned.append(PlannedAssignment(child, best.worker_id))
    return planned


def test_plan_matches_the_reference_over_random_histories() -> None:
    import random

    targets = [f"t{i}" for i in range(12)]
    for seed in range(200):
        rng = random.Random(seed)
        queue = DispatchQueue()
        seq = 0
        running: dict[str, QueuedChild] = {}
        for _ in range(60):
            action = rng.random()
            if action < 0.45:
                seq += 1
                queue.push(q(seq, rng.choice(targets)))
            elif action < 0.55 and len(queue):
                queue.discard(f"job-{rng.randint(1, seq)}")
            elif action < 0.7 and running:
                child = running.pop(rng.choice(sorted(running)))
                queue.release(child.target, child.job_id)
                if rng.random() < 0.3:  # lost worker: re-queued with the next attempt, same place
                    queue.push(QueuedChild(child.seq, child.job_id, child.attempt + 1, child.target))
            else:
                served = set(rng.sample(targets, rng.randint(1, len(targets))))
                workers = [worker("a", served, rng.randint(0, 3)), worker("b", set(targets), rng.randint(0, 2))]
                released = {c.target for c in running.values() if rng.random() < 0.3}
                expected = _reference_plan(queue, [WorkerCapacity(**vars_of(w)) for w in workers], released)
                planned = queue.plan(workers, released=released)
                assert planned == expected, (seed, planned, expected)
                for p in planned:
                    if p.child.target in released:
                        old = next(c for c in running.values() if c.target == p.child.target)
                        running.pop(old.job_id)
                        queue.release(old.target, old.job_id)
                    queue.take(p.child)
                    running[p.child.job_id] = p.child


def vars_of(capacity: WorkerCapacity) -> dict[str, object]:
    return {
        "worker_id": capacity.worker_id,
        "targets": capacity.targets,
        "free_slots": capacity.free_slots,
        "draining": capacity.draining,
    }
