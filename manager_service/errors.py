"""Domain errors. The servicers map each to one gRPC status code; nothing else may escape as INTERNAL."""

from __future__ import annotations


class DomainError(Exception):
    """Base of the errors a request can legitimately end with."""


class InvalidArgument(DomainError):
    """A request field is wrong. ``field`` names it (e.g. ``targets[2]``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(DomainError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class WorkerNotFound(DomainError):
    def __init__(self, worker_id: str) -> None:
        super().__init__(f"no worker {worker_id!r} is connected")
        self.worker_id = worker_id


class FailedPrecondition(DomainError):
    """The request is valid but the job's state does not allow it (e.g. cancel of a finished job)."""


class AlreadyExists(DomainError):
    """An idempotency key was reused with different parameters."""


class ResourceExhausted(DomainError):
    """A cap on concurrent streams (workers, watchers) is reached; try again later."""


class Unavailable(DomainError):
    """The manager is shutting down or otherwise cannot take the request now."""


class StoreUnavailable(Unavailable):
    """The job store cannot be reached (a lost connection, a database restarting). Nothing was changed; the
    request can be retried."""


class CommitOutcomeUnknown(StoreUnavailable):
    """The link to the store broke during COMMIT and the store could not be reached again to look: the write
    may or may not have committed. Unlike its base class, it does NOT mean "nothing changed": rebuild what you
    hold in memory from the store before acting on that write again."""


class LeaseLost(Unavailable):
    """This manager no longer holds the store's lease (another manager took it, or it lapsed): nothing was
    written, and this manager must stop acting on the store. ``holder`` and ``address`` name the holder now
    (empty if nobody holds it)."""

    def __init__(self, message: str, holder: str = "", address: str = "") -> None:
        super().__init__(message)
        self.holder = holder
        self.address = address


class StoreInUse(Exception):
    """The store admits one manager and another one has it (a SQLite store's lock file is held): a
    configuration error, reported at start."""
