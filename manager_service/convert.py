"""Domain -> protobuf for jobs, workers, schedules and firings (the other direction lives in the servicers,
field by field), and maintenance windows both ways (CreateMaintenance and schedules take one; jobs show it)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from dbmaint import wire
from dbmaint.operations import RunMode
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from manager_service import window_rules
from manager_service.domain import Firing, FiringOutcome, Job, Schedule
from manager_service.errors import RequestInvalid
from manager_service.fleet import stored_window
from manager_service.schedule_rules import ScheduleRuleError
from manager_service.workers import WorkerView

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


def job_to_proto(job: Job, waiting_reason: str = "", with_tables: bool = False) -> pb.Job:
    """The job as the API shows it. The result's per-table reports only ``with_tables`` (GetJob of a child):
    lists, snapshots, pages of children and WatchJob events leave them out to stay small."""
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
        schedule_id=job.schedule_id or "",
        scheduled_time=wire.timestamp(job.scheduled_time),
    )
    if job.window is not None:
        message.window.CopyFrom(window_to_proto(stored_window(job.window)))
    if job.report is not None:
        report = job.report if with_tables else replace(job.report, tables=())
        message.result.CopyFrom(wire.report_to_proto(report))
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


def worker_to_proto(worker: WorkerView) -> pb.WorkerInfo:
    return pb.WorkerInfo(
        worker_id=worker.worker_id,
        targets=sorted(worker.targets),
        slots=worker.slots,
        running_job_ids=list(worker.running_job_ids),
        last_heartbeat=wire.timestamp(worker.last_heartbeat),
        draining=worker.draining,
        connected_at=wire.timestamp(worker.connected_at),
        peer=worker.peer,
        faults_active=worker.faults_active,
    )


MODE_TO_PROTO = {
    RunMode.ALL: pb.MODE_UNSPECIFIED,
    RunMode.PLAN: pb.MODE_PLAN,
    RunMode.AUTO: pb.MODE_AUTO,
}
OVERLAP_TO_PROTO = {
    "skip": spb.OVERLAP_POLICY_SKIP,
    "buffer_one": spb.OVERLAP_POLICY_BUFFER_ONE,
    "cancel_other": spb.OVERLAP_POLICY_CANCEL_OTHER,
}
FIRING_OUTCOME_TO_PROTO = {
    FiringOutcome.FIRED: spb.FIRING_OUTCOME_FIRED,
    FiringOutcome.SKIPPED_OVERLAP: spb.FIRING_OUTCOME_SKIPPED_OVERLAP,
    FiringOutcome.SKIPPED_PAUSED: spb.FIRING_OUTCOME_SKIPPED_PAUSED,
    FiringOutcome.MISSED: spb.FIRING_OUTCOME_MISSED,
    FiringOutcome.OUTSIDE_RANGE: spb.FIRING_OUTCOME_OUTSIDE_RANGE,
}


def schedule_to_proto(schedule: Schedule, next_fire_time: datetime | None) -> spb.Schedule:
    """The stored schedule as the client wrote it, with its output-only fields. The window is not set here
    (the servicer converts it: it needs the window rules)."""
    spec = schedule.spec
    maintenance = spec.maintenance
    message = spb.Schedule(
        id=spec.id,
        cron=spec.cron or "",
        time_zone=spec.time_zone,
        maintenance=pb.CreateMaintenanceRequest(
            targets=list(maintenance.targets),
            operations=[wire.operation_to_proto(operation) for operation in maintenance.operations],
            schemas=list(maintenance.scope.schemas),
            tables=list(maintenance.scope.tables),
            mode=MODE_TO_PROTO[maintenance.mode],
            thresholds=dict(maintenance.thresholds),
            parallel=maintenance.parallel if maintenance.parallel > 1 else 0,
        ),
        overlap=OVERLAP_TO_PROTO[spec.overlap],
        paused=schedule.paused,
        start_at=wire.timestamp(spec.start_at),
        end_at=wire.timestamp(spec.end_at),
        next_fire_time=wire.timestamp(next_fire_time),
        created_at=wire.timestamp(schedule.created_at),
        updated_at=wire.timestamp(schedule.updated_at),
        last_parent_id=schedule.last_parent_id or "",
    )
    if spec.every_seconds is not None:
        message.every.CopyFrom(wire.duration(spec.every_seconds))
    if spec.catchup_seconds is not None:
        message.catchup_window.CopyFrom(wire.duration(spec.catchup_seconds))
    if spec.jitter_seconds:
        message.jitter.CopyFrom(wire.duration(spec.jitter_seconds))
    return message


def firing_to_proto(firing: Firing) -> spb.Firing:
    return spb.Firing(
        schedule_id=firing.schedule_id,
        scheduled_time=wire.timestamp(firing.scheduled_time),
        outcome=FIRING_OUTCOME_TO_PROTO[firing.outcome],
        parent_id=firing.parent_id or "",
        reason=firing.reason or "",
        missed_count=firing.missed_count,
        recorded_at=wire.timestamp(firing.recorded_at),
    )
