"""ScheduleService: translates protobuf <-> the domain and validates; the Orchestrator's ``schedules`` shell acts.

Validation of a schedule (each rule raises RequestInvalid naming the field):

- ``id`` follows the target-name rule (1-64 characters of [A-Za-z0-9_.-], starting with a letter or digit);
- exactly one of ``cron`` and ``every``; ``every`` at least 1 s; the cron expression and ``time_zone`` as the
  schedule rules accept them;
- ``maintenance`` exactly as CreateMaintenance validates it (targets, operations, scope, and the limits
  ``--max-targets``/``--max-children``, which every firing must fit), except that ``request_id`` must be empty
  (each firing has its own) and its ``window`` must be unset (the schedule's ``window`` is every firing's);
- ``jitter`` not negative; ``catchup_window`` positive when set; ``end_at`` after ``start_at`` when both are set.

UpdateSchedule changes exactly the fields its ``update_mask`` names (Schedule's field names); "id", the output-only
fields, unknown names and an empty mask are INVALID_ARGUMENT. The merged schedule is validated as a new one.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from datetime import timedelta
from typing import Any

import grpc

from dbmaint import wire
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from manager_service import window_rules
from manager_service.convert import (
    OVERLAP_TO_PROTO,
    firing_to_proto,
    job_to_proto,
    schedule_to_proto,
    window_from_proto,
    window_to_proto,
)
from manager_service.domain import MaintenanceSpec, Schedule, ScheduleSpec, utcnow
from manager_service.errors import RequestInvalid
from manager_service.fleet import stored_window
from manager_service.orchestrator import Orchestrator
from manager_service.reads import ScheduleReads
from manager_service.rpc_errors import translate_errors
from manager_service.schedule_rules import MIN_EVERY, ScheduleRuleError, cadence, check_cron, zone_named
from manager_service.scheduling import next_fire_time
from manager_service.servicers import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, _operations, run_mode
from manager_service.validation import TARGET_NAME, Limits, validate_maintenance, validate_parallel

Context = grpc.aio.ServicerContext[Any, Any]

OVERLAP_FROM_PROTO = {value: name for name, value in OVERLAP_TO_PROTO.items()}
# The fields UpdateSchedule may change; the others of Schedule are "id" and the output-only ones.
UPDATABLE_FIELDS = frozenset(
    {
        "cron",
        "every",
        "time_zone",
        "maintenance",
        "overlap",
        "catchup_window",
        "jitter",
        "paused",
        "start_at",
        "end_at",
        "window",
    }
)
OUTPUT_ONLY_FIELDS = frozenset({"next_fire_time", "created_at", "updated_at", "last_parent_id"})


def validate_schedule(message: spb.Schedule, limits: Limits) -> ScheduleSpec:
    """A ScheduleSpec from a requested Schedule (see the module rules)."""
    if not TARGET_NAME.fullmatch(message.id):
        raise RequestInvalid(
            "schedule.id",
            f"invalid schedule id {message.id[:80]!r}: use 1-64 characters of [A-Za-z0-9_.-], "
            "starting with a letter or digit",
        )
    cron, every = _cadence_fields(message)
    start_at = wire.from_timestamp(message.start_at) if message.HasField("start_at") else None
    end_at = wire.from_timestamp(message.end_at) if message.HasField("end_at") else None
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise RequestInvalid("schedule.end_at", "must be after start_at")
    overlap = OVERLAP_FROM_PROTO.get(message.overlap or spb.OVERLAP_POLICY_SKIP)
    if overlap is None:
        raise RequestInvalid("schedule.overlap", f"unknown overlap policy {message.overlap}")
    return ScheduleSpec(
        id=message.id,
        maintenance=_maintenance(message, limits),
        cron=cron,
        every_seconds=every.total_seconds() if every is not None else None,
        time_zone=message.time_zone,
        overlap=overlap,
        catchup_seconds=_catchup_seconds(message),
        jitter_seconds=_jitter_seconds(message),
        start_at=start_at,
        end_at=end_at,
        window=window_rules.to_dict(window_from_proto(message.window, "schedule.window"))
        if message.HasField("window")
        else None,
    )


def _cadence_fields(message: spb.Schedule) -> tuple[str | None, timedelta | None]:
    """The normalized cron (or None) and the interval (or None): exactly one is set, and the rules accept it."""
    has_cron, has_every = bool(message.cron.strip()), message.HasField("every")
    if has_cron == has_every:
        raise RequestInvalid("schedule.cron", "set exactly one of cron and every")
    try:
        zone_named(message.time_zone)
    except ScheduleRuleError as error:
        raise RequestInvalid("schedule.time_zone", str(error)) from None
    every = message.every.ToTimedelta() if has_every else None
    if every is not None and every < MIN_EVERY:
        raise RequestInvalid("schedule.every", f"must be at least {MIN_EVERY.total_seconds():g}s")
    try:
        cron = check_cron(message.cron) if has_cron else None
        cadence(cron or "", every, message.time_zone, utcnow())
    except ScheduleRuleError as error:
        raise RequestInvalid("schedule.cron" if has_cron else "schedule.every", str(error)) from None
    return cron, every


def _maintenance(message: spb.Schedule, limits: Limits) -> MaintenanceSpec:
    request = message.maintenance
    if request.request_id:
        raise RequestInvalid("schedule.maintenance.request_id", "must be empty: each firing has its own")
    if request.HasField("window"):
        raise RequestInvalid("schedule.maintenance.window", "must be unset: set the schedule's window instead")
    try:
        spec = validate_maintenance(
            list(request.targets),
            _operations(request.operations),
            "",
            limits,
            schemas=list(request.schemas),
            tables=list(request.tables),
            mode=run_mode(request),
            thresholds=dict(request.thresholds),
        )
        return replace(spec, parallel=validate_parallel(request.parallel))
    except RequestInvalid as error:
        raise RequestInvalid(f"schedule.maintenance.{error.field}", error.problem) from None


def _catchup_seconds(message: spb.Schedule) -> float | None:
    if not message.HasField("catchup_window"):
        return None
    seconds = message.catchup_window.ToTimedelta().total_seconds()
    if seconds <= 0:
        raise RequestInvalid("schedule.catchup_window", "must be positive (use a small value, not zero)")
    return seconds


def _jitter_seconds(message: spb.Schedule) -> float:
    seconds = message.jitter.ToTimedelta().total_seconds() if message.HasField("jitter") else 0.0
    if seconds < 0:
        raise RequestInvalid("schedule.jitter", "must not be negative")
    return seconds


def _page_size(value: int) -> int:
    if value < 0:
        raise RequestInvalid("page_size", "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode_token(kind: str, value: str | int | None) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode() if value is not None else ""


def _decode_token(kind: str, token: str, method: str) -> str | None:
    if not token:
        return None
    try:
        found, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if found == kind and value:
            return value
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise RequestInvalid("page_token", f"not a token returned by {method}")


def _firings_token(token: str) -> int | None:
    value = _decode_token("f1", token, "ListFirings")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and int(value) < 2**63):
        raise RequestInvalid("page_token", "not a token returned by ListFirings")
    return int(value)


def _schedule_id(value: str, field: str = "id") -> str:
    if not TARGET_NAME.fullmatch(value):
        raise RequestInvalid(field, f"not a schedule id: {value[:80]!r}")
    return value


def _check_mask(paths: list[str]) -> None:
    if not paths:
        raise RequestInvalid("update_mask", "name the fields to change (an empty mask changes nothing)")
    for path in paths:
        if path == "id":
            raise RequestInvalid("update_mask", "id cannot be changed (delete and create the schedule instead)")
        if path in OUTPUT_ONLY_FIELDS:
            raise RequestInvalid("update_mask", f"{path} is output only")
        if path not in UPDATABLE_FIELDS:
            raise RequestInvalid("update_mask", f"unknown field {path[:80]!r} of Schedule")


class ScheduleReadServicer(spb_grpc.ScheduleServiceServicer):
    """The read methods (GetSchedule, ListSchedules, ListFirings) over any ``ScheduleReads``: what a standby
    serves."""

    def __init__(self, reads: ScheduleReads) -> None:
        self._reads = reads

    def _schedule(self, schedule: Schedule) -> spb.Schedule:
        message = schedule_to_proto(schedule, next_fire_time(schedule, utcnow()))
        if schedule.spec.window is not None:
            message.window.CopyFrom(window_to_proto(stored_window(schedule.spec.window)))
        return message

    @translate_errors
    async def GetSchedule(self, request: spb.GetScheduleRequest, context: Context) -> spb.GetScheduleResponse:
        schedule = await self._reads.get(_schedule_id(request.id))
        return spb.GetScheduleResponse(schedule=self._schedule(schedule))

    @translate_errors
    async def ListSchedules(
        self, request: spb.ListSchedulesRequest, context: Context
    ) -> spb.ListSchedulesResponse:
        limit = _page_size(request.page_size)
        after = _decode_token("s1", request.page_token, "ListSchedules")
        # One more than the page tells whether another page follows.
        found = await self._reads.list_schedules(limit + 1, after)
        page = found[:limit]
        token = _encode_token("s1", page[-1].id if len(found) > limit else None)
        return spb.ListSchedulesResponse(schedules=[self._schedule(s) for s in page], next_page_token=token)

    @translate_errors
    async def ListFirings(self, request: spb.ListFiringsRequest, context: Context) -> spb.ListFiringsResponse:
        schedule_id = _schedule_id(request.schedule_id, "schedule_id")
        firings, next_seq = await self._reads.firings(
            schedule_id, _page_size(request.page_size), _firings_token(request.page_token)
        )
        return spb.ListFiringsResponse(
            firings=[firing_to_proto(f) for f in firings], next_page_token=_encode_token("f1", next_seq)
        )


class ScheduleServicer(ScheduleReadServicer):
    """The leader's ScheduleService: the reads over its schedule shell, and the writes."""

    def __init__(self, orchestrator: Orchestrator, limits: Limits) -> None:
        super().__init__(orchestrator.schedules)
        self._orchestrator = orchestrator
        self._schedules = orchestrator.schedules
        self._limits = limits

    @translate_errors
    async def CreateSchedule(
        self, request: spb.CreateScheduleRequest, context: Context
    ) -> spb.CreateScheduleResponse:
        spec = validate_schedule(request.schedule, self._limits)
        schedule = await self._schedules.create(spec, request.schedule.paused)
        return spb.CreateScheduleResponse(schedule=self._schedule(schedule))

    @translate_errors
    async def UpdateSchedule(
        self, request: spb.UpdateScheduleRequest, context: Context
    ) -> spb.UpdateScheduleResponse:
        paths = list(request.update_mask.paths)
        _check_mask(paths)
        schedule_id = _schedule_id(request.schedule.id, "schedule.id")
        current = await self._schedules.get(schedule_id)
        merged = self._schedule(current)
        request.update_mask.MergeMessage(
            request.schedule, merged, replace_message_field=True, replace_repeated_field=True
        )
        spec = validate_schedule(merged, self._limits)
        schedule = await self._schedules.update(schedule_id, spec, merged.paused)
        return spb.UpdateScheduleResponse(schedule=self._schedule(schedule))

    @translate_errors
    async def DeleteSchedule(
        self, request: spb.DeleteScheduleRequest, context: Context
    ) -> spb.DeleteScheduleResponse:
        await self._schedules.delete(_schedule_id(request.id))
        return spb.DeleteScheduleResponse()

    @translate_errors
    async def TriggerSchedule(
        self, request: spb.TriggerScheduleRequest, context: Context
    ) -> spb.TriggerScheduleResponse:
        triggered = await self._schedules.trigger(_schedule_id(request.id))
        parent = triggered.created.parent
        return spb.TriggerScheduleResponse(
            firing=firing_to_proto(triggered.firing),
            parent=job_to_proto(parent, self._orchestrator.waiting_reason(parent)),
        )
