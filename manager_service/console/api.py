"""The JSON API under ``/api/v1/``: each endpoint builds the request message of its RPC, calls the servicer that
answers that RPC in the manager's current role (``ManagerServer.servicers``), and answers the response message
in the protobuf JSON mapping, as grpcurl prints it. Errors are ``{"code": ..., "message": ...}`` with the HTTP
status of their gRPC code; a write on a standby also names the leader (``"leader"``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import grpc
from aiohttp import web
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message

from dbmaint.transport import LEADER_METADATA_KEY
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb

if TYPE_CHECKING:
    from manager_service.schedule_servicer import ScheduleServicer
    from manager_service.server import ManagerServer, RoleServicers
    from manager_service.servicers import MaintenanceServicer

M = TypeVar("M", bound=Message)

# The HTTP status of each gRPC code (as Google's HTTP mapping has it, but a failed precondition, such as
# cancelling a finished job, is a conflict with the resource's state: 409).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
MAX_BODY_BYTES = 64 * 1024


class ApiError(Exception):
    """An answer other than 200: the gRPC code the RPC would have ended with, its message, and on a standby the
    leader's address."""

    def __init__(self, code: grpc.StatusCode, message: str, leader: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.leader = leader

    def response(self) -> web.Response:
        body: dict[str, str] = {"code": self.code.name, "message": self.message}
        if self.leader or self.code is grpc.StatusCode.UNAVAILABLE:
            body["leader"] = self.leader
        return web.json_response(body, status=HTTP_STATUS.get(self.code, 500))


class CallContext:
    """Stands in for the ServicerContext of an RPC when the console calls a servicer: the servicers end a call
    with ``abort`` (``manager_service.rpc_errors.abort_with``, the one error map), which raises ApiError here."""

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: tuple[tuple[str, str], ...] = ()
    ) -> NoReturn:
        leader = next((value for key, value in trailing_metadata if key == LEADER_METADATA_KEY), "")
        raise ApiError(code, details, leader)


async def call(method: Callable[[M, Any], Awaitable[Message]], request: M) -> Message:
    return await method(request, cast(Any, CallContext()))


def from_query(message: M, query: Any, path: dict[str, str] | None = None) -> M:
    """``message`` filled from the query string (field names, snake_case or camelCase, repeated fields repeated)
    and the path's parameters; INVALID_ARGUMENT for a parameter that is no field or a value that does not parse."""
    descriptor = message.DESCRIPTOR
    values: dict[str, Any] = {}
    for key in set(query.keys()):
        field = descriptor.fields_by_name.get(key) or next(
            (f for f in descriptor.fields if f.json_name == key), None
        )
        if field is None or field.message_type is not None:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown query parameter {key[:80]!r}")
        found = query.getall(key)
        if field.is_repeated:
            values[field.name] = list(found)
        elif len(found) > 1:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"query parameter {key[:80]!r} given more than once")
        else:
            values[field.name] = found[0]
    values.update(path or {})
    try:
        return json_format.ParseDict(values, message)
    except json_format.ParseError as error:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None


async def json_body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object (empty when there is no body), with only the ``allowed`` keys."""
    if not request.can_read_body:
        return {}
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "the body is too large")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "the body is not JSON") from None
    if not isinstance(body, dict) or not set(body) <= allowed:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, f"the body must be a JSON object with only {sorted(allowed)}"
        )
    return body


def answer(message: Message) -> web.Response:
    return web.Response(text=json_format.MessageToJson(message), content_type="application/json")


class Api:
    """The endpoints, over the manager's current servicers."""

    def __init__(self, server: ManagerServer) -> None:
        self._server = server

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/jobs", self.list_jobs),
            web.get("/api/v1/jobs/{id}", self.get_job),
            web.post("/api/v1/jobs/{id}/cancel", self.cancel_job),
            web.get("/api/v1/workers", self.list_workers),
            web.post("/api/v1/workers/{id}/drain", self.drain_worker),
            web.get("/api/v1/schedules", self.list_schedules),
            web.get("/api/v1/schedules/{id}", self.get_schedule),
            web.get("/api/v1/schedules/{id}/firings", self.list_firings),
            web.post("/api/v1/schedules/{id}/pause", self.pause_schedule),
            web.post("/api/v1/schedules/{id}/resume", self.resume_schedule),
            web.post("/api/v1/schedules/{id}/run", self.run_schedule),
            web.get("/api/v1/manager", self.manager),
        ]

    def _servicers(self) -> RoleServicers:
        return current_servicers(self._server)

    def _writes(self) -> tuple[MaintenanceServicer, ScheduleServicer]:
        return current_writes(self._server)

    async def list_jobs(self, request: web.Request) -> web.Response:
        servicer = self._servicers().maintenance
        return answer(await call(servicer.ListJobs, from_query(pb.ListJobsRequest(), request.query)))

    async def get_job(self, request: web.Request) -> web.Response:
        servicer = self._servicers().maintenance
        message = from_query(pb.GetJobRequest(), request.query, {"id": request.match_info["id"]})
        return answer(await call(servicer.GetJob, message))

    async def cancel_job(self, request: web.Request) -> web.Response:
        body = await json_body(request, frozenset({"reason"}))
        servicer, _ = self._writes()
        message = pb.CancelJobRequest(id=request.match_info["id"], reason=str(body.get("reason", "")))
        return answer(await call(servicer.CancelJob, message))

    async def list_workers(self, request: web.Request) -> web.Response:
        servicer = self._servicers().maintenance
        return answer(await call(servicer.ListWorkers, from_query(pb.ListWorkersRequest(), request.query)))

    async def drain_worker(self, request: web.Request) -> web.Response:
        body = await json_body(request, frozenset({"reason"}))
        servicer, _ = self._writes()
        message = pb.DrainWorkerRequest(worker_id=request.match_info["id"], reason=str(body.get("reason", "")))
        return answer(await call(servicer.DrainWorker, message))

    async def list_schedules(self, request: web.Request) -> web.Response:
        servicer = self._servicers().schedules
        return answer(await call(servicer.ListSchedules, from_query(spb.ListSchedulesRequest(), request.query)))

    async def get_schedule(self, request: web.Request) -> web.Response:
        servicer = self._servicers().schedules
        message = from_query(spb.GetScheduleRequest(), request.query, {"id": request.match_info["id"]})
        return answer(await call(servicer.GetSchedule, message))

    async def list_firings(self, request: web.Request) -> web.Response:
        servicer = self._servicers().schedules
        message = from_query(spb.ListFiringsRequest(), request.query, {"schedule_id": request.match_info["id"]})
        return answer(await call(servicer.ListFirings, message))

    async def _set_paused(self, request: web.Request, paused: bool) -> web.Response:
        await json_body(request, frozenset())
        _, servicer = self._writes()
        message = spb.UpdateScheduleRequest(
            schedule=spb.Schedule(id=request.match_info["id"], paused=paused),
            update_mask=field_mask_pb2.FieldMask(paths=["paused"]),
        )
        return answer(await call(servicer.UpdateSchedule, message))

    async def pause_schedule(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, True)

    async def resume_schedule(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, False)

    async def run_schedule(self, request: web.Request) -> web.Response:
        await json_body(request, frozenset())
        _, servicer = self._writes()
        return answer(
            await call(servicer.TriggerSchedule, spb.TriggerScheduleRequest(id=request.match_info["id"]))
        )

    async def manager(self, request: web.Request) -> web.Response:
        server = self._server
        leading = server.leading
        return web.json_response(
            {
                "role": "leader" if leading else "standby",
                "managerId": server.manager_id,
                "leader": server.advertised_address if leading else server.leader_hint,
                "term": server.term,
            }
        )


def current_servicers(server: ManagerServer) -> RoleServicers:
    """The servicers of the manager's current role (the API's and the pages' one way in)."""
    servicers = server.servicers
    if servicers is None:
        raise ApiError(grpc.StatusCode.UNAVAILABLE, "the manager is starting or stopping; try again")
    return servicers


def current_writes(server: ManagerServer) -> tuple[MaintenanceServicer, ScheduleServicer]:
    """The servicers that write, on the leader; on a standby, UNAVAILABLE naming the leader."""
    writes = current_servicers(server).writes
    if writes is None:
        leader = server.leader_hint
        where = f"; act on the leader at {leader}" if leader else "; no leader is known now"
        raise ApiError(
            grpc.StatusCode.UNAVAILABLE,
            f"this manager ({server.manager_id}) is a standby: it answers reads only{where}",
            leader,
        )
    return writes
