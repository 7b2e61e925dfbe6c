"""The manager's Prometheus metrics. Counters and the histogram move on the hot path (a few microseconds per
child); the gauges (workers, slots, queue depth per target) are read from the orchestrator when scraped, so they
cost nothing between scrapes. The leadership metrics (leader, term, takeovers) move when the manager's role
changes and when it looks at the store lease."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dbmaint.operations import PARENT_JOB_TYPE

# Seconds from a child becoming PENDING to its assignment: from a millisecond (a free slot) to hours (a queue).
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 3600, float("inf"))
# Seconds from a worker's result arriving to its next assignment being queued for sending, when work was queued:
# fine from 0.1 ms to 10 ms (the targets are p50 <= 1 ms and p99 <= 10 ms: both limits are bucket bounds, so
# whether they hold is exact, not interpolated), coarse above.
GAP_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    float("inf"),
)
# Seconds from a schedule's slot (plus its jitter) to its parent being created: ~ms normally, minutes after a
# restart (the catch-up firing).
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, float("inf"))


@dataclass(frozen=True, slots=True)
class FleetView:
    """What the gauges show, read at scrape time."""

    workers: int
    draining_workers: int
    slots_total: int
    slots_busy: int
    queue_depth: dict[str, int]  # pending children per target


NO_FLEET = FleetView(workers=0, draining_workers=0, slots_total=0, slots_busy=0, queue_depth={})


class ManagerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._fleet: _FleetCollector | None = None
        self.jobs_created = Counter(
            "dbmaint_jobs_created",
            "Jobs stored, by type and operation (empty for a parent).",
            ("type", "operation"),
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "dbmaint_jobs_finished",
            "Jobs that reached a terminal status, by type, status and operation (empty for a parent).",
            ("type", "status", "operation"),
            registry=self.registry,
        )
        self.assignment_wait = Histogram(
            "dbmaint_assignment_wait_seconds",
            "Time from a child becoming PENDING (created or re-queued) to its assignment to a worker.",
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.dispatch_gap = Histogram(
            "dbmaint_dispatch_gap_seconds",
            "Time from a worker's result arriving to that worker's next assignment being sent, when the child "
            "it gets could already run as the result arrived (the critical path of a busy fleet).",
            buckets=GAP_BUCKETS,
            registry=self.registry,
        )
        self.attempts_lost = Counter(
            "dbmaint_attempts_lost",
            "Child attempts taken back from a worker (disconnected or silent past its lease).",
            registry=self.registry,
        )
        self.schedule_firings = Counter(
            "dbmaint_schedule_firings",
            "Schedule slots recorded, by outcome (fired, skipped_overlap, skipped_paused, missed, outside_range).",
            ("outcome",),
            registry=self.registry,
        )
        self.schedule_lag = Histogram(
            "dbmaint_schedule_lag_seconds",
            "Time from a schedule's slot plus its jitter to the parent it fired being created.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )

        self.leader = Gauge(
            "dbmaint_manager_leader",
            "1 while this manager holds the job store lease and acts (the leader), 0 while it stands by.",
            registry=self.registry,
        )
        self.term = Gauge(
            "dbmaint_manager_term",
            "The job store lease's term as this manager last saw it: its own while it leads, the holder's while "
            "it stands by (0: not seen yet).",
            registry=self.registry,
        )
        self.takeovers = Counter(
            "dbmaint_manager_takeovers",
            "Times this manager became the leader (took the job store lease and started acting).",
            registry=self.registry,
        )

    def became_leader(self, term: int) -> None:
        self.leader.set(1)
        self.term.set(term)
        self.takeovers.inc()

    def stepped_down(self) -> None:
        self.leader.set(0)

    def saw_term(self, term: int) -> None:
        """A look at the store lease (a standby's poll) found it at ``term``."""
        self.term.set(term)

    def watch_fleet(self, view: Callable[[], FleetView]) -> None:
        """Register the scrape-time gauges, read through ``view``; a later call replaces the view (each
        leadership term of the manager has its own orchestrator)."""
        if self._fleet is None:
            self._fleet = _FleetCollector(view)
            self.registry.register(self._fleet)
        else:
            self._fleet.view = view

    def created(self, jobs: Iterable[tuple[str, str]]) -> None:
        """(type, operation) of each stored job."""
        for job_type, operation in jobs:
            self.jobs_created.labels(job_type, operation).inc()

    def finished(self, job_type: str, status: str, operation: str) -> None:
        self.jobs_finished.labels(job_type, status, operation if job_type != PARENT_JOB_TYPE else "").inc()


class _FleetCollector(Collector):
    def __init__(self, view: Callable[[], FleetView]) -> None:
        self.view = view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        view = self.view()
        yield GaugeMetricFamily("dbmaint_workers_connected", "Worker streams connected now.", value=view.workers)
        yield GaugeMetricFamily(
            "dbmaint_workers_draining", "Connected workers that take no new work.", value=view.draining_workers
        )
        yield GaugeMetricFamily(
            "dbmaint_worker_slots",
            "Slots of the connected workers (children they may run at once).",
            value=view.slots_total,
        )
        yield GaugeMetricFamily("dbmaint_worker_slots_busy", "Slots running a child now.", value=view.slots_busy)
        depth = GaugeMetricFamily("dbmaint_queue_depth", "Pending children per target.", labels=("target",))
        for target, count in sorted(view.queue_depth.items()):
            depth.add_metric((target,), count)
        yield depth
