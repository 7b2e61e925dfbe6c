"""Domain -> protobuf for jobs and workers (the other direction lives in the servicers, field by field)."""

from __future__ import annotations

import json

from dbmaint import wire
from dbmaint.v1 import maintenance_pb2 as pb
from manager_service.domain import Job
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
