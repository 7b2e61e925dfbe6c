"""The worker's Prometheus metrics: what its operations did, and how long they took."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds an operation takes: from a millisecond (ANALYZE of a small table) to hours (VACUUM of a big one).
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, float("inf"))


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.operations = Counter(
            "dbmaint_worker_operations",
            "Operations this worker finished, by engine, operation and status.",
            ("engine", "operation", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "dbmaint_worker_operation_duration_seconds",
            "How long operations ran, by engine and operation.",
            ("engine", "operation"),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.bytes_reclaimed = Counter(
            "dbmaint_worker_bytes_reclaimed",
            "Bytes the databases shrank by, by engine and operation.",
            ("engine", "operation"),
            registry=self.registry,
        )
        self.running = Gauge("dbmaint_worker_running", "Operations running now.", registry=self.registry)
        self.connected = Gauge(
            "dbmaint_worker_connected", "1 while the stream to the manager is open.", registry=self.registry
        )

    def finished(self, engine: str, operation: str, status: str, seconds: float | None, reclaimed: int) -> None:
        self.operations.labels(engine, operation, status).inc()
        if seconds is not None:
            self.duration.labels(engine, operation).observe(seconds)
        if reclaimed > 0:
            self.bytes_reclaimed.labels(engine, operation).inc(reclaimed)
