"""The fleet core against a model of the world (hypothesis state machine).

The world: a store with the real fencing rules (``state_machine``), workers that run attempts behind a
resource lock per target, streams whose messages can be delayed, lost with a hang-up or a kill, and a manager
that can restart at any moment, including between a commit and the sends that follow it. Hypothesis drives
random interleavings of connects, hang-ups, kills, results (late, duplicate, stale, foreign), heartbeats,
lease ticks, cancels and restarts; after every step the invariants below must hold, and at the end a calm
period must bring every child to a terminal status.

Invariants:
* at most one live attempt per child: every lease matches the store's RUNNING attempt and worker, and every
  RUNNING child has a lease;
* at most one running child per target: no two leases share a target, and in the world no two attempts hold a
  target's resource lock (an attempt whose end is unknown keeps it until it really ends);
* slots never over-committed: a worker is never sent more work than it has free slots;
* a result is applied at most once;
* a stored cancel is sent to the holder: whenever the holder is connected, its stream has carried the cancel;
* per-target order: a child starts only when no older child of its target that MAY start is waiting;
* read-only (MODE_PLAN) children hold no target: they start beside whatever runs there, whatever their window
  says, and are left out of the two rules above (they still take a slot, and still end);
* maintenance windows: a windowed child starts only while its window allows a start; the shell's part (the
  window keeper: cancel what a closed one-off window never started, interrupt CANCEL-policy children at the
  window's end) runs before every turn, and the calm period must still end every child.

The everyday run tries a small number of examples; ``HYPOTHESIS_PROFILE=ci`` (set by .ci/run) tries many more.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dbmaint.operations import CHILD_JOB_TYPE, PARENT_JOB_TYPE, JobStatus, Operation
from manager_service import state_machine, window_rules
from manager_service.domain import BatchOutcome, ChildOutcome, Job, StartRequest, Transition, is_plan_config
from manager_service.errors import WorkerAlreadyConnected
from manager_service.fleet import FleetCore, FleetSettings
from manager_service.workers import (
    AckCommand,
    AssignCommand,
    CancelCommand,
    Command,
    HelloInfo,
    RunKey,
    RunningReport,
    Send,
)

LEASE = 3.0
GRACE = 1.0
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TARGETS = ("t0", "t1", "t2")
WORKERS = {"w0": (("t0", "t1"), 1), "w1": (("t1", "t2"), 2), "w2": (("t0", "t2"), 1)}
PARENT = Job(id="parent", seq=0, type=PARENT_JOB_TYPE, status=JobStatus.RUNNING, config={}, created_at=NOW)
# The model's wall clock is NOW + its monotonic seconds: this one-off window opens 4 s in, and lets children
# start until 2 s before it closes, 20 s in (a run usually lives through all of it).
WINDOW = window_rules.window(
    NOW + timedelta(seconds=4), NOW + timedelta(seconds=20), "", None, "", timedelta(seconds=2), {}
)

settings.register_profile(
    "default-model",
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci-model",
    max_examples=2_000,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = "ci-model" if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else "default-model"


class ModelStore:
    """The store's fencing rules on child rows in memory (the SQL store's contract, without SQL)."""

    def __init__(self) -> None:
        self.children: dict[str, Job] = {}
        self.applied: Counter[RunKey] = Counter()
        self._seq = 0

    def create(self, target: str, window: window_rules.Window | None = None, plan: bool = False) -> Job:
        self._seq += 1
        child = Job(
            id=f"c{self._seq}",
            seq=self._seq,
            type=CHILD_JOB_TYPE,
            status=JobStatus.PENDING,
            config={"operation": "vacuum", "target": target, **({"mode": "plan"} if plan else {})},
            created_at=NOW,
            parent_id=PARENT.id,
            target=target,
            operation=Operation.VACUUM,
            attempt=1,
            max_attempts=1_000,
            window=window_rules.to_dict(window) if window is not None else None,
        )
        self.children[child.id] = child
        return child

    def apply_batch(
        self, outcomes: list[ChildOutcome], starts: list[StartRequest], wall: datetime
    ) -> BatchOutcome:
        finished, started = [], []
        for outcome in outcomes:
            child = self.children.get(outcome.job_id)
            if child is None or not state_machine.result_applies(child, outcome.attempt, outcome.worker_id):
                continue
            self.applied[(outcome.job_id, outcome.attempt)] += 1
            child = self.children[child.id] = replace(child, status=outcome.status)
            finished.append(Transition(child, PARENT))
        for request in starts:
            child = self.children[request.job_id]
            if not state_machine.start_applies(child, request.attempt):
                continue
            assert may_start(child, wall), f"{child.id} started outside its window at {wall}"
            older = [
                c.id
                for c in self.children.values()
                if c.target == child.target
                and c.status is JobStatus.PENDING
                and c.seq < child.seq
                and may_start(c, wall)
                and not (c.is_plan or child.is_plan)
            ]
            assert not older, f"{child.id} started while older children of {child.target} wait: {older}"
            child = self.children[child.id] = replace(
                child, status=JobStatus.RUNNING, worker_id=request.worker_id, started_at=wall
            )
            started.append(Transition(child, PARENT))
        return BatchOutcome(finished, started)

    def release(self, job_id: str, attempt: int) -> Transition | None:
        child = self.children[job_id]
        if child.status is not JobStatus.RUNNING or child.attempt != attempt:
            return None
        decision = state_machine.after_worker_lost(child, "lapsed")
        child = self.children[job_id] = replace(child, status=decision.status, attempt=decision.attempt)
        return Transition(child, PARENT)

    def cancel(self, job_id: str) -> tuple[list[Job], list[Job]]:
        child = self.children[job_id]
        if child.status.is_terminal:
            return [], []
        if child.status is JobStatus.RUNNING:
            child = self.children[job_id] = replace(child, cancel_requested=True)
            return [child], [child]
        child = self.children[job_id] = replace(child, status=JobStatus.CANCELLED, cancel_requested=True)
        return [child], []

    def unfinished(self) -> list[Job]:
        return sorted((c for c in self.children.values() if not c.status.is_terminal), key=lambda c: c.seq)


def may_start(child: Job, wall: datetime) -> bool:
    """Whether its window lets it start now (a read-only child ignores its window)."""
    window = child.window
    return window is None or child.is_plan or window_rules.may_start(window_rules.from_dict(window), wall)


@dataclass
class Attempt:
    key: RunKey
    target: str
    executing: bool = False
    # A cancel arrived: the statement stops, but only when the engine gets to it (its slot is busy until then).
    cancelled: bool = False
    # A MODE_PLAN attempt only reads: it runs without the target's resource lock.
    read_only: bool = False


@dataclass
class WorkerProcess:
    """A worker in the world: its attempts, its unacknowledged results and its stream (if connected)."""

    worker_id: str
    targets: tuple[str, ...]
    slots: int
    alive: bool = True
    stream: int | None = None
    running: dict[RunKey, Attempt] = field(default_factory=dict)
    unacked: dict[RunKey, ChildOutcome] = field(default_factory=dict)
    down: list[Command] = field(default_factory=list)  # manager -> worker, in flight on the current stream
    up: list[tuple[str, object]] = field(default_factory=list)  # worker -> manager, in flight


class FleetModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.store = ModelStore()
        self.core = FleetCore(FleetSettings(LEASE, GRACE, max_workers=10))
        self.workers = {w: WorkerProcess(w, targets, slots) for w, (targets, slots) in WORKERS.items()}
        self.locks: dict[str, RunKey] = {}
        # Every command routed to a stream, for the cancel invariant.
        self.sent: dict[int, list[Command]] = {}

    # -- the shell's part: route sends, run turns

    def route(self, sends: list[Send]) -> None:
        for send in sends:
            self.sent.setdefault(send.stream, []).append(send.command)
            worker = next((w for w in self.workers.values() if w.stream == send.stream), None)
            if worker is not None:
                worker.down.append(send.command)

    @property
    def wall(self) -> datetime:
        return NOW + timedelta(seconds=self.now)

    def keep_windows(self) -> None:
        """The shell's window keeper: cancel what a closed window never started; interrupt at the end."""
        for job_id in self.core.closed_windows(self.wall):
            changed, to_interrupt = self.store.cancel(job_id)
            self.route(self.core.cancel_stored(changed, to_interrupt, "window closed"))
        for job_id, _ in self.core.take_window_ends(self.wall):
            changed, to_interrupt = self.store.cancel(job_id)
            self.route(self.core.cancel_stored(changed, to_interrupt, "window ended"))

    def commit_turn(self, *, crash_after: bool = False) -> None:
        self.keep_windows()
        self.core.tick_windows(self.wall)
        turn = self.core.take_turn()
        if turn is None:
            return
        batch = self.store.apply_batch(turn.outcomes, turn.starts, self.wall)
        if crash_after:
            self.restart_manager()  # committed, but nothing of it was sent
            return
        self.route(self.core.turn_applied(turn, batch, self.now, NOW).sends)

    def release_lapsed(self) -> None:
        for lease in self.core.lapsed(self.now):
            transition = self.store.release(lease.job_id, lease.attempt)
            self.route(self.core.released(lease, transition, self.now))

    # -- the world's part: workers

    def connect(self, worker: WorkerProcess) -> None:
        stream = self.core.open_stream()
        running = tuple(RunningReport(*key, self.waiting(a)) for key, a in worker.running.items())
        hello = HelloInfo(worker.worker_id, frozenset(worker.targets), worker.slots, running, accepts_acks=True)
        try:
            sends = self.core.connect(stream, hello, self.now)
        except WorkerAlreadyConnected:
            self.core.disconnect(stream)
            return
        worker.stream = stream
        worker.down.clear()
        worker.up = [("result", outcome) for outcome in worker.unacked.values()]
        self.route(sends)

    def hang_up(self, worker: WorkerProcess) -> None:
        if worker.stream is not None:
            self.core.disconnect(worker.stream)
        worker.stream = None
        worker.down.clear()
        worker.up.clear()

    def waiting(self, attempt: Attempt) -> str:
        return "" if attempt.executing else f"waiting for the lock on {attempt.target}"

    def try_lock(self, attempt: Attempt) -> None:
        if attempt.read_only:
            attempt.executing = True
        elif not attempt.executing and attempt.target not in self.locks:
            self.locks[attempt.target] = attempt.key
            attempt.executing = True

    def end(self, worker: WorkerProcess, key: RunKey, status: JobStatus) -> None:
        attempt = worker.running.pop(key)
        if self.locks.get(attempt.target) == key:
            del self.locks[attempt.target]
        outcome = ChildOutcome(key[0], key[1], worker.worker_id, status)
        worker.unacked[key] = outcome
        if worker.stream is not None:
            worker.up.append(("result", outcome))
        for other in self.workers.values():
            for waiting in other.running.values():
                self.try_lock(waiting)

    def deliver(self, worker: WorkerProcess, command: Command) -> None:
        if isinstance(command, AssignCommand):
            key = (command.job_id, command.attempt)
            if key in worker.running:
                return
            assert len(worker.running) < worker.slots, f"{worker.worker_id} over-committed: {worker.running}"
            attempt = worker.running[key] = Attempt(key, command.target, read_only=is_plan_config(command.config))
            self.try_lock(attempt)
        elif isinstance(command, CancelCommand):
            key = (command.job_id, command.attempt)
            if key in worker.running:
                worker.running[key].cancelled = True
        elif isinstance(command, AckCommand):
            key = (command.job_id, command.attempt)
            child = self.store.children.get(command.job_id)
            unsettled = child is not None and state_machine.result_applies(child, key[1], worker.worker_id)
            # An ack for a result the worker does not hold is ignored (it may answer a result another process
            # made up); one that makes it forget a result the store has not settled loses that result.
            assert not (key in worker.unacked and unsettled), (
                f"acknowledged before the store settled it: {command}"
            )
            worker.unacked.pop(key, None)

    def deliver_up(self, worker: WorkerProcess) -> None:
        assert worker.stream is not None
        for kind, payload in worker.up:
            if kind == "result":
                assert isinstance(payload, ChildOutcome)
                self.core.receive(worker.stream, [payload])
            else:
                assert isinstance(payload, tuple)
                self.core.heartbeat(worker.stream, payload, self.now)
        worker.up.clear()

    def restart_manager(self) -> None:
        for worker in self.workers.values():
            worker.stream = None
            worker.down.clear()
            worker.up.clear()
        self.core = FleetCore(FleetSettings(LEASE, GRACE, max_workers=10))
        self.core.rebuild(self.store.unfinished(), self.now)

    # -- rules

    @rule(on=st.sampled_from(TARGETS), count=st.integers(1, 3))
    def children_are_created(self, on: str, count: int) -> None:
        for _ in range(count):
            self.core.enqueue(self.store.create(on), self.now)

    @rule(on=st.sampled_from(TARGETS), count=st.integers(1, 3))
    def children_in_a_window_are_created(self, on: str, count: int) -> None:
        for _ in range(count):
            self.core.enqueue(self.store.create(on, WINDOW), self.now)

    @rule(on=st.sampled_from(TARGETS), count=st.integers(1, 3), windowed=st.booleans())
    def plan_children_are_created(self, on: str, count: int, windowed: bool) -> None:
        for _ in range(count):
            self.core.enqueue(self.store.create(on, WINDOW if windowed else None, plan=True), self.now)

    @rule(worker_id=st.sampled_from(sorted(WORKERS)))
    def worker_connects(self, worker_id: str) -> None:
        worker = self.workers[worker_id]
        if worker.alive and worker.stream is None:
            self.connect(worker)

    @rule(worker_id=st.sampled_from(sorted(WORKERS)))
    def link_drops(self, worker_id: str) -> None:
        self.hang_up(self.workers[worker_id])

    @rule(worker_id=st.sampled_from(sorted(WORKERS)))
    def worker_is_cut_off_past_its_lease_and_comes_back(self, worker_id: str) -> None:
        """Its attempts run on while its leases lapse (their end unknown); it comes back listing them."""
        worker = self.workers[worker_id]
        self.hang_up(worker)
        self.now += LEASE + 0.5
        self.release_lapsed()
        self.connect(worker)

    @rule(worker_id=st.sampled_from(sorted(WORKERS)))
    def worker_is_killed_and_restarts(self, worker_id: str) -> None:
        worker = self.workers[worker_id]
        self.hang_up(worker)
        for key in list(worker.running):
            attempt = worker.running.pop(key)
            if self.locks.get(attempt.target) == key:
                del self.locks[attempt.target]  # the lock dies with the process
        worker.unacked.clear()
        for other in self.workers.values():
            for waiting in other.running.values():
                self.try_lock(waiting)

    @rule(worker_id=st.sampled_from(sorted(WORKERS)), count=st.integers(1, 3))
    def manager_messages_arrive(self, worker_id: str, count: int) -> None:
        worker = self.workers[worker_id]
        for _ in range(min(count, len(worker.down))):
            self.deliver(worker, worker.down.pop(0))

    @rule(worker_id=st.sampled_from(sorted(WORKERS)))
    def worker_messages_arrive(self, worker_id: str) -> None:
        worker = self.workers[worker_id]
        if worker.stream is not None:
            self.deliver_up(worker)

    @rule(
        worker_id=st.sampled_from(sorted(WORKERS)),
        index=st.integers(0, 3),
        status=st.sampled_from([JobStatus.COMPLETED, JobStatus.FAILED]),
    )
    def an_operation_ends(self, worker_id: str, index: int, status: JobStatus) -> None:
        worker = self.workers[worker_id]
        ending = [key for key, a in worker.running.items() if a.executing or a.cancelled]
        if ending:
            key = ending[index % len(ending)]
            self.end(worker, key, JobStatus.CANCELLED if worker.running[key].cancelled else status)

    @rule(worker_id=st.sampled_from(sorted(WORKERS)))
    def worker_resends_its_unacknowledged_results(self, worker_id: str) -> None:
        worker = self.workers[worker_id]
        if worker.stream is not None:
            worker.up.extend(("result", o) for o in worker.unacked.values())

    @rule(
        worker_id=st.sampled_from(sorted(WORKERS)), index=st.integers(0, 5), offset=st.sampled_from([0, 0, 1, -1])
    )
    def worker_sends_a_result_it_does_not_hold(self, worker_id: str, index: int, offset: int) -> None:
        """A result for another worker's child (its attempt, or a stale or future one): it must change nothing,
        and must not hide the holder's own result. (A result for an attempt of its own that it still runs, or
        was revoked from it, is a lie about its own slots: it can only over-commit itself; not made here.)"""
        worker = self.workers[worker_id]
        others = [lease for lease in self.core.leases.values() if lease.worker_id != worker_id]
        session = self.core.session_of(worker.stream) if worker.stream is not None else None
        if session is None or not others:
            return
        lease = others[index % len(others)]
        key = (lease.job_id, lease.attempt + offset)
        if key in worker.running or session.holds_foreign(key):
            return
        self.core.receive(session.stream, [ChildOutcome(*key, worker_id, JobStatus.COMPLETED)])

    @rule(worker_id=st.sampled_from(sorted(WORKERS)), index=st.integers(0, 5))
    def worker_echoes_a_result_another_worker_has_in_flight(self, worker_id: str, index: int) -> None:
        """The same (job_id, attempt) from two workers in one turn: the holder's must still count."""
        worker = self.workers[worker_id]
        in_flight = [
            payload
            for other in self.workers.values()
            if other is not worker
            for kind, payload in other.up
            if kind == "result" and isinstance(payload, ChildOutcome)
        ]
        if worker.stream is not None and in_flight:
            echo = replace(in_flight[index % len(in_flight)], worker_id=worker_id)
            self.core.receive(worker.stream, [echo])

    @rule(worker_id=st.sampled_from(sorted(WORKERS)))
    def worker_sends_a_heartbeat(self, worker_id: str) -> None:
        worker = self.workers[worker_id]
        if worker.stream is not None:
            running = tuple(RunningReport(*key, self.waiting(a)) for key, a in worker.running.items())
            worker.up.append(("heartbeat", running))

    @rule(worker_id=st.sampled_from(sorted(WORKERS)))
    def worker_heartbeats_and_the_manager_dispatches(self, worker_id: str) -> None:
        """A heartbeat straight to the manager and a dispatch turn right after it: the turn must still count
        every attempt the worker runs, its own or not."""
        worker = self.workers[worker_id]
        if worker.stream is not None:
            self.worker_sends_a_heartbeat(worker_id)
            self.deliver_up(worker)
            self.commit_turn()

    @rule()
    def a_turn_commits(self) -> None:
        self.commit_turn()

    @rule()
    def the_manager_crashes_right_after_a_commit(self) -> None:
        self.commit_turn(crash_after=True)

    @rule()
    def the_manager_restarts(self) -> None:
        self.restart_manager()

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.release_lapsed()

    @precondition(lambda self: bool(self.store.children))
    @rule(job=st.integers(1, 30))
    def an_operator_cancels(self, job: int) -> None:
        job_id = f"c{job}"
        if job_id in self.store.children:
            changed, to_interrupt = self.store.cancel(job_id)
            self.route(self.core.cancel_stored(changed, to_interrupt, "operator"))

    # -- invariants

    @invariant()
    def one_live_attempt_per_child(self) -> None:
        for lease in self.core.leases.values():
            child = self.store.children[lease.job_id]
            assert child.status is JobStatus.RUNNING, (lease, child.status)
            assert (child.attempt, child.worker_id) == (lease.attempt, lease.worker_id), (lease, child)
        running = {c.id for c in self.store.children.values() if c.status is JobStatus.RUNNING}
        assert running == set(self.core.leases), "a RUNNING child without a lease (or the reverse)"

    @invariant()
    def one_running_child_per_target(self) -> None:
        holding = [lease for lease in self.core.leases.values() if not lease.read_only]
        leases = self.core.leases.values()
        assert all(lease.read_only == self.store.children[lease.job_id].is_plan for lease in leases)
        targets = [lease.target for lease in holding]
        assert len(targets) == len(set(targets)), f"two leases on one target: {targets}"
        for target in TARGETS:
            holder = self.core.queue.busy_with(target)
            leased = [lease.job_id for lease in holding if lease.target == target]
            assert leased == ([holder] if holder else []), (target, holder, leased)
        executing = Counter(
            a.target for w in self.workers.values() for a in w.running.values() if a.executing and not a.read_only
        )
        assert all(n == 1 for n in executing.values()), executing

    @invariant()
    def slots_are_never_over_committed(self) -> None:
        # The world's side of it is checked as each assignment arrives (``deliver``).
        for session in self.core.sessions.values():
            assert len(self.core.held_by(session.worker_id)) <= session.slots, session

    @invariant()
    def a_result_is_applied_at_most_once(self) -> None:
        assert all(n == 1 for n in self.store.applied.values()), self.store.applied

    @invariant()
    def a_stored_cancel_is_sent_to_a_connected_holder(self) -> None:
        for lease in self.core.leases.values():
            session = self.core.sessions.get(lease.worker_id)
            if lease.cancel_reason is None or session is None:
                continue
            sent = self.sent.get(session.stream, [])
            assert CancelCommand(lease.job_id, lease.attempt, lease.cancel_reason) in sent, lease

    # -- the end: a calm period finishes everything

    def teardown(self) -> None:
        # Each round starts at most one child per target and ends it in the next: the budget grows with them.
        for _ in range(20 + 3 * len(self.store.children)):
            if self.settled():
                break
            for worker in self.workers.values():
                if worker.stream is None:
                    self.connect(worker)
                while worker.down:
                    self.deliver(worker, worker.down.pop(0))
                for key, attempt in list(worker.running.items()):
                    if attempt.executing or attempt.cancelled:
                        self.end(worker, key, JobStatus.CANCELLED if attempt.cancelled else JobStatus.COMPLETED)
                if worker.stream is not None:
                    running = tuple(RunningReport(*k, self.waiting(a)) for k, a in worker.running.items())
                    worker.up.append(("heartbeat", running))
                    self.deliver_up(worker)
            self.commit_turn()
            self.now += LEASE / 2
            self.release_lapsed()
        unfinished = [c for c in self.store.children.values() if not c.status.is_terminal]
        assert not unfinished, f"still unfinished after a calm period: {unfinished}"
        unacked = {w.worker_id: list(w.unacked) for w in self.workers.values() if w.unacked}
        assert not unacked, f"results never acknowledged: {unacked}"

    def settled(self) -> bool:
        finished = all(c.status.is_terminal for c in self.store.children.values())
        return finished and not any(w.unacked or w.down for w in self.workers.values())


FleetModel.TestCase.settings = settings.get_profile(PROFILE)
test_the_fleet_core_keeps_its_promises_under_any_interleaving = FleetModel.TestCase
