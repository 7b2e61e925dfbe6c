"""The channel to the manager, its stub, the health probe, and gRPC errors translated into one-line messages.

Several managers (``--manager a:50051,b:50051``): one leads, the others stand by. A call moves to the next address
(``dbmaint.managers.next_manager``: the leader a refusing standby names, if configured, else the next one in the
list), each address tried at most once more than the list is long, by these rules:

* reads (GetJob, ListJobs, ListWorkers, the schedule reads) move on any ``UNAVAILABLE``: running one twice
  changes nothing;
* CreateMaintenance moves on any ``UNAVAILABLE`` too: it always carries a ``request_id``, so a second send finds
  the parent the first one made;
* other writes (CancelJob, DrainWorker, the schedule writes) move only when they cannot have been carried out:
  the connection could not be made (checked before sending), or a manager refused the call without running it
  (``dbmaint.managers.is_refusal``: the ``dbmaint-not-run`` mark, hint or none). After anything else (a leader
  hint alone included) the answer may be lost, not the work: the error is reported, never resent;
* once a call moved, the client stays on the address that answered, for the calls that follow.
"""

from __future__ import annotations

import builtins  # `list` is also a method of ManagerClient
import dataclasses
import enum
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbmaint.auth import ClientSecurity, CredentialError, TlsFiles, sync_channel
from dbmaint.config import CLIENT_TLS, CONFIG_ERROR_EXIT, MANAGER_ADDRESS, ConfigError, Option, resolve
from dbmaint.managers import is_refusal, leader_hint, next_manager
from dbmaint.transport import CLIENT_OPTIONS
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc

DEFAULT_TIMEOUT = 10.0
# Between two tries once every manager has refused (a failover under way): short, the takeover is near.
ROUND_PAUSE = 0.25
# Between a watch stream that broke (or ended before its job) and the next open.
REWATCH_PAUSE = 0.5
MANAGER = "the dbmaint manager"

# Exit codes. 1 is "it ran, but the job did not complete" (or "not SERVING"); argparse uses 2 for bad usage.
EXIT_OK = 0
EXIT_NOT_COMPLETED = 1
EXIT_REJECTED = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_FAILURE = 5  # any other failure: a server error, a local file that cannot be written, a demo process
EXIT_INTERRUPTED = 130

# How the CLI reaches a manager that asks for TLS or a token: variables only, a command line shows in `ps`.
SECURITY_OPTIONS = (
    *(dataclasses.replace(option, flag=None) for option in CLIENT_TLS),
    Option(
        name="token", help="the client role's bearer token", env="DBMAINT_TOKEN", secret=True, default_text="none"
    ),
)
OPTIONS = (MANAGER_ADDRESS, *SECURITY_OPTIONS)

_REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


class CliError(Exception):
    """A failure the CLI reports as one line on stderr and an exit code, without a traceback."""

    def __init__(self, message: str, exit_code: int, status: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        # The gRPC status it came from, if any: a command may accept one (``schedule create --exist-ok``).
        self.status = status


def rpc_code(error: grpc.RpcError) -> grpc.StatusCode:
    return error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _connection_reason(details: str) -> str:
    """The useful end of a connection failure ("...; last error: UNKNOWN: ipv4:...: Connection refused")."""
    _, found, last = details.rpartition("last error: ")
    if found:
        details = re.sub(r"^([A-Z_]+: )?(ipv[46]:\S+: )?", "", last)
    return _one_line(details) or "unavailable"


def _trailing_of(error: grpc.RpcError) -> Any:
    return error.trailing_metadata() if isinstance(error, grpc.Call) else None


def _hint_of(error: grpc.RpcError) -> str:
    return leader_hint(_trailing_of(error))


def translate(error: grpc.RpcError, address: str, timeout: float | None, what: str = MANAGER) -> CliError:
    """A gRPC error as the one-line message and exit code the user sees (and the status it came from)."""
    translated = _translate(error, address, timeout, what)
    translated.status = rpc_code(error)
    return translated


def _translate(error: grpc.RpcError, address: str, timeout: float | None, what: str) -> CliError:
    code = rpc_code(error)
    details = _one_line((error.details() if isinstance(error, grpc.Call) else None) or "")
    hint = _hint_of(error)
    if code is grpc.StatusCode.UNAVAILABLE and (hint or is_refusal(code.name, _trailing_of(error))):
        leader = f" (it names {hint} as the leader)" if hint else ""
        return CliError(f"{what} at {address} does not lead: {details}{leader}", EXIT_UNREACHABLE)
    if code is grpc.StatusCode.UNAVAILABLE:
        return CliError(f"cannot reach {what} at {address}: {_connection_reason(details)}", EXIT_UNREACHABLE)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        within = f" within {timeout:g}s" if timeout else ""
        return CliError(f"{what} at {address} did not answer{within} (deadline exceeded)", EXIT_UNREACHABLE)
    if code is grpc.StatusCode.NOT_FOUND:
        message = details if "not found" in details.lower() else f"not found: {details or 'no such job'}"
        return CliError(message, EXIT_NOT_FOUND)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        hint = "set DBMAINT_TOKEN (or DBMAINT_TOKEN_FILE) to a client token of this manager"
        return CliError(f"{what} at {address} refused the call ({code.name}): {details}; {hint}", EXIT_REJECTED)
    if code in _REJECTED:
        return CliError(f"request rejected ({code.name}): {details}", EXIT_REJECTED)
    return CliError(f"{what} at {address} failed ({code.name}): {details}", EXIT_FAILURE)


def client_security() -> ClientSecurity:
    """TLS files and the bearer token from the environment; a bad setting is a configuration error (exit 2)."""
    try:
        settings = resolve(SECURITY_OPTIONS, None, os.environ)
        tls = TlsFiles.from_settings(
            settings["tls_ca"].value, settings["tls_cert"].value, settings["tls_key"].value
        )
    except (ConfigError, CredentialError) as error:
        raise CliError(str(error), CONFIG_ERROR_EXIT) from None
    return ClientSecurity(tls, settings["token"].value)


class Resend(enum.Enum):
    """When a failed call may be sent to the next manager (see the module's docstring)."""

    ALWAYS = "a read, or a write with an idempotency key"
    IF_NOT_CARRIED_OUT = "a write without a key"


_MAINTENANCE, _SCHEDULES = "maintenance", "schedules"


class ManagerClient:
    """A channel to one of the configured managers; every call translates gRPC errors into :class:`CliError` and
    moves to the next manager when it may (see the module's docstring)."""

    def __init__(
        self,
        addresses: str | Sequence[str],
        timeout: float = DEFAULT_TIMEOUT,
        security: ClientSecurity | None = None,
    ) -> None:
        self.managers: tuple[str, ...] = (addresses,) if isinstance(addresses, str) else tuple(addresses)
        self.timeout = timeout
        self._security = security if security is not None else client_security()
        self._metadata = self._security.metadata
        self._tried: builtins.list[str] = []  # the addresses the current call tried, for its error message
        self._open(next_manager(self.managers, None).address)

    def _open(self, address: str) -> None:
        self.address = address
        self._channel = sync_channel(address, self._security.tls, CLIENT_OPTIONS)
        # The generated stubs are untyped: each method below states the type of what its RPC returns.
        self._stubs: dict[str, Any] = {
            _MAINTENANCE: pb_grpc.MaintenanceServiceStub(self._channel),  # type: ignore[no-untyped-call]
            _SCHEDULES: spb_grpc.ScheduleServiceStub(self._channel),  # type: ignore[no-untyped-call]
        }

    def __enter__(self) -> ManagerClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    @property
    def several(self) -> bool:
        return len(self.managers) > 1

    def error(self, error: grpc.RpcError) -> CliError:
        translated = translate(error, self.address, self.timeout)
        others = [address for address in dict.fromkeys(self._tried) if address != self.address]
        if others:
            translated.message += f" (also tried {', '.join(others)})"
        return translated

    def fail_over(self, error: grpc.RpcError | None = None) -> bool:
        """Move to the next manager after ``error`` (following its leader hint if configured); False when there
        is no other manager to move to."""
        if not self.several:
            return False
        move = next_manager(self.managers, self.address, _hint_of(error) if error is not None else "")
        self._tried.append(self.address)
        self._channel.close()
        self._open(move.address)
        return True

    def _connection_made(self) -> bool:
        """Whether the channel connects (READY) before it fails or the timeout passes: a write sent only after
        this cannot have been lost on its way to a manager that was never reached."""
        settled = threading.Event()
        states: builtins.list[grpc.ChannelConnectivity] = []
        final = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE)

        def seen(state: grpc.ChannelConnectivity) -> None:
            if state in final or state is grpc.ChannelConnectivity.SHUTDOWN:
                states.append(state)
                settled.set()

        self._channel.subscribe(seen, try_to_connect=True)
        try:
            settled.wait(self.timeout)
        finally:
            self._channel.unsubscribe(seen)
        return bool(states) and states[0] is grpc.ChannelConnectivity.READY

    def _call(self, service: str, method: str, request: Message, resend: Resend = Resend.ALWAYS) -> Any:
        """The call on the current manager; with several, on the next one after a refusal or an unreachable
        manager (``_may_resend``), round after round while a failover may be under way: every address once and
        one more (a standby may name the leader tried first), then on until ``timeout`` seconds have passed (a
        standby takes over within a store lease, 6 s by default), pausing ``ROUND_PAUSE`` between rounds."""
        self._tried = []
        deadline = time.monotonic() + self.timeout
        first_round = len(self.managers) + 1
        attempt = 0
        while True:
            attempt += 1
            last_try = not self.several or (attempt >= first_round and time.monotonic() >= deadline)
            # A write without a key is sent only over a connection made: one never made loses nothing.
            if resend is Resend.IF_NOT_CARRIED_OUT and not last_try and not self._connection_made():
                self.fail_over()
                continue
            try:
                return getattr(self._stubs[service], method)(
                    request, timeout=self.timeout, metadata=self._metadata
                )
            except grpc.RpcError as error:
                if last_try or not self._may_resend(error, resend) or not self.fail_over(error):
                    raise self.error(error) from None
                if attempt >= first_round:
                    time.sleep(ROUND_PAUSE)

    @staticmethod
    def _may_resend(error: grpc.RpcError, resend: Resend) -> bool:
        code = rpc_code(error)
        if resend is Resend.ALWAYS:
            return code is grpc.StatusCode.UNAVAILABLE
        return is_refusal(code.name, _trailing_of(error))

    def create(self, request: pb.CreateMaintenanceRequest) -> pb.CreateMaintenanceResponse:
        response: pb.CreateMaintenanceResponse = self._call(_MAINTENANCE, "CreateMaintenance", request)
        return response

    def get(
        self, job_id: str, *, page_size: int = 0, page_token: str = "", statuses: Sequence[pb.JobStatus] = ()
    ) -> pb.GetJobResponse:
        """The job and (a parent) one page of its children: ``page_size`` (0: the manager's default of 500) after
        ``page_token``, only those with one of ``statuses`` if given."""
        request = pb.GetJobRequest(
            id=job_id, children_page_size=page_size, children_page_token=page_token, children_status=statuses
        )
        response: pb.GetJobResponse = self._call(_MAINTENANCE, "GetJob", request)
        return response

    def pages(
        self, job_id: str, *, page_size: int = 0, statuses: Sequence[pb.JobStatus] = ()
    ) -> Iterator[pb.GetJobResponse]:
        """GetJob page after page until the last page of the children (one answer for a child job)."""
        token = ""
        while True:
            response = self.get(job_id, page_size=page_size, page_token=token, statuses=statuses)
            yield response
            token = response.next_children_page_token
            if not token:
                return

    def list(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        response: pb.ListJobsResponse = self._call(_MAINTENANCE, "ListJobs", request)
        return response

    def cancel(self, job_id: str, reason: str = "") -> pb.CancelJobResponse:
        request = pb.CancelJobRequest(id=job_id, reason=reason)
        response: pb.CancelJobResponse = self._call(_MAINTENANCE, "CancelJob", request, Resend.IF_NOT_CARRIED_OUT)
        return response

    def drain(self, worker_id: str, reason: str = "") -> pb.DrainWorkerResponse:
        request = pb.DrainWorkerRequest(worker_id=worker_id, reason=reason)
        response: pb.DrainWorkerResponse = self._call(
            _MAINTENANCE, "DrainWorker", request, Resend.IF_NOT_CARRIED_OUT
        )
        return response

    def workers(self) -> pb.ListWorkersResponse:
        response: pb.ListWorkersResponse = self._call(_MAINTENANCE, "ListWorkers", pb.ListWorkersRequest())
        return response

    # -- ScheduleService ------------------------------------------------------------------------------------

    def create_schedule(self, schedule: spb.Schedule) -> spb.Schedule:
        response: spb.CreateScheduleResponse = self._call(
            _SCHEDULES, "CreateSchedule", spb.CreateScheduleRequest(schedule=schedule), Resend.IF_NOT_CARRIED_OUT
        )
        return response.schedule

    def get_schedule(self, schedule_id: str) -> spb.Schedule:
        response: spb.GetScheduleResponse = self._call(
            _SCHEDULES, "GetSchedule", spb.GetScheduleRequest(id=schedule_id)
        )
        return response.schedule

    def schedules(self) -> builtins.list[spb.Schedule]:
        """Every schedule, reading page after page."""
        found: builtins.list[spb.Schedule] = []
        token = ""
        while True:
            request = spb.ListSchedulesRequest(page_token=token)
            response: spb.ListSchedulesResponse = self._call(_SCHEDULES, "ListSchedules", request)
            found.extend(response.schedules)
            token = response.next_page_token
            if not token:
                return found

    def update_schedule(self, schedule: spb.Schedule, paths: Sequence[str]) -> spb.Schedule:
        request = spb.UpdateScheduleRequest(schedule=schedule, update_mask=FieldMask(paths=list(paths)))
        response: spb.UpdateScheduleResponse = self._call(
            _SCHEDULES, "UpdateSchedule", request, Resend.IF_NOT_CARRIED_OUT
        )
        return response.schedule

    def delete_schedule(self, schedule_id: str) -> None:
        request = spb.DeleteScheduleRequest(id=schedule_id)
        self._call(_SCHEDULES, "DeleteSchedule", request, Resend.IF_NOT_CARRIED_OUT)

    def trigger_schedule(self, schedule_id: str) -> spb.TriggerScheduleResponse:
        request = spb.TriggerScheduleRequest(id=schedule_id)
        response: spb.TriggerScheduleResponse = self._call(
            _SCHEDULES, "TriggerSchedule", request, Resend.IF_NOT_CARRIED_OUT
        )
        return response

    def firings(self, schedule_id: str) -> builtins.list[spb.Firing]:
        """A schedule's whole history of firings, newest first, reading page after page."""
        found: builtins.list[spb.Firing] = []
        token = ""
        while True:
            request = spb.ListFiringsRequest(schedule_id=schedule_id, page_token=token)
            response: spb.ListFiringsResponse = self._call(_SCHEDULES, "ListFirings", request)
            found.extend(response.firings)
            token = response.next_page_token
            if not token:
                return found

    def watch(self, job_id: str, *, job_only: bool = False) -> Iterator[pb.WatchJobResponse]:
        """The raw WatchJob stream (no deadline: it lasts until the job is terminal), of the job alone if
        ``job_only``, from the current manager. Raises grpc.RpcError (``fail_over`` moves to the next manager)."""
        stream: Iterator[pb.WatchJobResponse] = self._stubs[_MAINTENANCE].WatchJob(
            pb.WatchJobRequest(id=job_id, job_only=job_only), metadata=self._metadata
        )
        return stream

    def watch_reopening(
        self, job_id: str, *, job_only: bool = False
    ) -> Iterator[pb.WatchJobResponse | StreamLost]:
        """WatchJob that outlives a failover: the caller stops iterating once the job is terminal.

        A stream that breaks with UNAVAILABLE (a manager restarted, the network blinked, a leader stepped down)
        is reopened, on the next manager when several are configured (standbys serve WatchJob too), until no
        message came for ``timeout`` seconds; a ``StreamLost`` says so once per loss, and the reopened stream
        begins with a fresh snapshot. A stream that ends before the job did is reopened too. A first open
        refused with UNAVAILABLE moves on the same way, each manager at most once more than the list is long.
        Anything else raises CliError."""
        lost_since: float | None = None
        received = False
        refused_opens = 0
        while True:
            try:
                messages = 0
                stream = self.watch(job_id, job_only=job_only)
                try:
                    for message in stream:
                        lost_since, received, messages = None, True, messages + 1
                        yield message
                finally:
                    if isinstance(stream, grpc.Future):
                        stream.cancel()  # the caller stopped early: end the call now (a no-op once it ended)
                if messages == 0:
                    raise CliError(f"the manager ended the watch of {job_id} without a snapshot", EXIT_FAILURE)
                time.sleep(REWATCH_PAUSE)  # it ended before the job did: reopen for a fresh snapshot
            except grpc.RpcError as error:
                if rpc_code(error) is not grpc.StatusCode.UNAVAILABLE:
                    raise self.error(error) from None
                if not received:
                    refused_opens += 1
                    if refused_opens > len(self.managers) or not self.fail_over(error):
                        raise self.error(error) from None
                    continue
                now = time.monotonic()
                if lost_since is not None and now - lost_since > self.timeout:
                    raise self.error(error) from None
                lost = self.address
                moved = self.fail_over(error)
                if lost_since is None:
                    lost_since = now
                    yield StreamLost(lost, self.address if moved else "")
                time.sleep(REWATCH_PAUSE)


@dataclasses.dataclass(frozen=True, slots=True)
class StreamLost:
    """A watch stream to ``lost`` broke; it is reopened on ``moved_to`` (empty: on the same manager)."""

    lost: str
    moved_to: str


def health_status(
    address: str, service: str = "", timeout: float = DEFAULT_TIMEOUT, what: str = "the health endpoint"
) -> str:
    """The grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...) of ``service`` at ``address``."""
    with sync_channel(address, client_security().tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            if rpc_code(error) is grpc.StatusCode.NOT_FOUND:
                raise CliError(f"{address} has no health status for service {service!r}", EXIT_NOT_FOUND) from None
            raise translate(error, address, timeout, what) from None
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name
