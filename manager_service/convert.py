"""Domain -> protobuf for jobs and workers (the other direction lives in the servicers, field by field), and
maintenance windows both ways (CreateMaintenance and schedules take one; jobs show it)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from dbmaint import wire
from dbmaint.v1 import maintenance_pb2 as pb
from manager_service import window_rules
from manager_service.domain import Job
from manager_service.errors import RequestInvalid
from manager_service.fleet import stored_window
from manager_service.schedule_rules import ScheduleRuleError
from manager_service.workers import WorkerSession

_END_POLICY_FROM_PROTO = {
    pb.WINDOW_END_FINISH: window_rules.EndPolicy.FINISH,
    pb.WINDOW_END_CANCEL: window_rules.EndPolicy.CANCEL,
}
_END_POLICY_TO_PROTO = {policy: value for value, policy in _END_POLICY_FROM_PROTO.items()}


def _instant(message: pb.MaintenanceWindow, field: str) -> datetime | None:
    return wire.from_timestamp(getattr(message, field)) if message.HasField(field) else None


def _span(message: pb.MaintenanceWindow, field: str) -> timedelta | None:
    if not message.HasField(field):
        return None
    span: Duration = getattr(message, field)
    return timedelta(microseconds=span.ToNanoseconds() // 1000)


def window_from_proto(message: pb.MaintenanceWindow, field: str = "window") -> window_rules.Window:
    """A validated window, or RequestInvalid naming ``field`` and what is wrong with it. An on_end entry of
    WINDOW_END_UNSPECIFIED means the operation's default (as if absent)."""
    on_end: dict[str, window_rules.EndPolicy] = {}
    for name, value in sorted(message.on_end.items()):
        if value == pb.WINDOW_END_UNSPECIFIED:
            continue
        if value not in _END_POLICY_FROM_PROTO:
            raise RequestInvalid(f"{field}.on_end[{name[:40]!r}]", f"unknown end policy {value}")
        on_end[name] = _END_POLICY_FROM_PROTO[value]
    try:
        return window_rules.window(
            _instant(message, "start"),
            _instant(message, "end"),
            message.cron,
            _span(message, "duration"),
            message.time_zone,
            _span(message, "cutoff") or timedelta(0),
            on_end,
        )
    except ScheduleRuleError as error:
        raise RequestInvalid(field, str(error)) from error


def window_to_proto(window: window_rules.Window) -> pb.MaintenanceWindow:
    """The window as the client gave it (on_end: only its explicit entries)."""
    message = pb.MaintenanceWindow(
        start=wire.timestamp(window.start),
        end=wire.timestamp(window.end),
        cron=window.cron or "",
        time_zone=window.zone.key if window.zone.key != "UTC" else "",
        cutoff=wire.duration(window.cutoff.total_seconds()),
        on_end={operation.value: _END_POLICY_TO_PROTO[policy] for operation, policy in window.on_end.items()},
    )
    if window.duration is not None:
        message.duration.CopyFrom(wire.duration(window.duration.total_seconds()))
    return message


def job_to_proto(job: Job, waiting_reason: str = "") -> pb.Job:
    message = pb.Job(
        id=job.id,
        type=job.type,
        parent_id=job.parent_id or "",
        status=wire.status_to_proto(job.status),
        target=job.target or "",
        operation=wire.operation_to_proto(job.operation) if job.operation else pb.OPERATION_UNSPECIFIED,
        config=json.dumps(job.config, separators=(",", ":")),
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        worker_id=job.worker_id or "",
        error=job.error or "",
        request_id=job.request_id or "",
        cancel_requested=job.cancel_requested,
        position=job.position,
        waiting_reason=waiting_reason,
        created_at=wire.timestamp(job.created_at),
        started_at=wire.timestamp(job.started_at),
        finished_at=wire.timestamp(job.finished_at),
    )
    if job.window is not None:
        message.window.CopyFrom(window_to_proto(stored_window(job.window)))
    if job.report is not None:
        message.result.CopyFrom(wire.report_to_proto(job.report))
    if job.progress is not None:
        p = job.progress
        message.progress.CopyFrom(
            pb.Progress(
                total=p.total,
                pending=p.pending,
                running=p.running,
                succeeded=p.succeeded,
                failed=p.failed,
                cancelled=p.cancelled,
            )
        )
    return message


def worker_to_proto(session: WorkerSession, running_job_ids: list[str]) -> pb.WorkerInfo:
    return pb.WorkerInfo(
        worker_id=session.worker_id,
        targets=sorted(session.targets),
        slots=session.slots,
        running_job_ids=sorted(running_job_ids),
        last_heartbeat=wire.timestamp(session.last_seen_at),
        draining=session.draining,
        connected_at=wire.timestamp(session.connected_at),
        peer=session.peer,
        faults_active=session.faults_active,
    )
