"""Domain -> protobuf for jobs, workers, schedules and firings (the other direction lives in the servicers,
field by field)."""

from __future__ import annotations

import json
from datetime import datetime

from dbmaint import wire
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from manager_service.domain import Firing, FiringOutcome, Job, Schedule
from manager_service.workers import WorkerSession


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
        schedule_id=job.schedule_id or "",
        scheduled_time=wire.timestamp(job.scheduled_time),
    )
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
