"""Domain errors, each named for what happened. The store, the orchestrator, the fleet core and validation raise
them; only the RPC edge (``manager_service.rpc_errors``) turns them into gRPC status codes, through ONE map.
Nothing else may escape a call as anything but INTERNAL."""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """Base of the errors a request can legitimately end with. ``not_run``: raised before the request changed
    anything, so a client may send it to another manager (the RPC edge marks the status so)."""

    not_run: ClassVar[bool] = False


class RequestInvalid(DomainError):
    """A request field is wrong. ``field`` names it (e.g. ``targets[2]``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class MessageMalformed(DomainError):
    """The bytes of a request message do not parse as that message."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed request message: {reason}")
        self.reason = reason


class JobNotFound(DomainError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class WorkerNotFound(DomainError):
    def __init__(self, worker_id: str) -> None:
        super().__init__(f"no worker {worker_id!r} is connected")
        self.worker_id = worker_id


class JobAlreadyFinished(DomainError):
    """The job is terminal, and the request (a cancel) applies only to unfinished jobs."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} is already {status}; only unfinished jobs can be cancelled")
        self.job_id = job_id
        self.status = status


class RequestIdReused(DomainError):
    """An idempotency key (``request_id``) is already in the store for other targets or operations."""


class ScheduleNotFound(DomainError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} not found")
        self.schedule_id = schedule_id


class ScheduleExists(DomainError):
    """A schedule with this id already exists (delete it first to start a new history under the same id)."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} already exists")
        self.schedule_id = schedule_id


class ScheduleChanged(DomainError):
    """A scheduler step was planned on a schedule that changed meanwhile (paused, edited, deleted): nothing was
    written; plan again from the schedule as it is now."""


class SlotAlreadyRecorded(DomainError):
    """A firing row for this (schedule, slot) exists already: the slot was handled (by this manager earlier, or
    by another one); nothing was written."""


class WorkerAlreadyConnected(DomainError):
    """A worker said Hello with the id of a worker that is still connected (worker ids must be unique)."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"worker {worker_id!r} is already connected; worker ids must be unique")
        self.worker_id = worker_id


class LimitReached(DomainError):
    """A cap on concurrent streams (workers, watchers) is reached; try again later."""


class Unavailable(DomainError):
    """The manager cannot take the request now; it may be retried (here or, after a failover, elsewhere)."""


class ShuttingDown(Unavailable):
    """The manager is shutting down: it takes no new request."""

    not_run = True


class NotLeading(Unavailable):
    """This manager does not hold the store's lease (it is starting, or standing by): the message names the
    manager that answers instead; ``leader`` is that manager's advertised address while its lease is alive
    (empty: unknown)."""

    not_run = True

    def __init__(self, message: str, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class StoreUnavailable(Unavailable):
    """The job store cannot be reached (a lost connection, a database restarting). Nothing was changed; the
    request can be retried."""

    not_run = True


class CommitOutcomeUnknown(StoreUnavailable):
    """The link to the store broke during COMMIT and the store could not be reached again to look: the write
    may or may not have committed. Unlike its base class, it does NOT mean "nothing changed": rebuild what you
    hold in memory from the store before acting on that write again."""

    not_run = False


class LeaseLost(Unavailable):
    """This manager no longer holds the store's lease (another manager took it, or it lapsed): nothing was
    written, and this manager must stop acting on the store. ``holder`` and ``address`` name the holder now
    (empty if nobody holds it); ``leader`` is its address only while its lease is alive (the hint a client may
    follow; empty: unknown)."""

    not_run = True

    def __init__(self, message: str, holder: str = "", address: str = "", *, leader: str = "") -> None:
        super().__init__(message)
        self.holder = holder
        self.address = address
        self.leader = leader


class LeaseNotRenewed(LeaseLost):
    """The leader could not renew its lease in time (the store unreachable or too slow to answer) and stepped
    down by itself before the lease could lapse: the store may still name it, but it acts no more."""


class StoreInUse(Exception):
    """The store admits one manager and another one has it (a SQLite store's lock file is held): a
    configuration error, reported at start."""
