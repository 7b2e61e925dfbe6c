"""Conversions between the plain vocabulary of ``dbmaint.operations`` and the protobuf messages.

Only the edges (servicers, the worker's stream client, the CLI) import this module.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from dbmaint.operations import JobStatus, Operation, OperationReport, TableAction, TableReport
from dbmaint.v1 import maintenance_pb2 as pb

_OPERATION_TO_PROTO: dict[Operation, pb.Operation] = {
    Operation.VACUUM: pb.OPERATION_VACUUM,
    Operation.ANALYZE: pb.OPERATION_ANALYZE,
    Operation.REINDEX: pb.OPERATION_REINDEX,
    Operation.OPTIMIZE: pb.OPERATION_OPTIMIZE,
}
_OPERATION_FROM_PROTO: dict[int, Operation] = {v: k for k, v in _OPERATION_TO_PROTO.items()}

_ACTION_TO_PROTO: dict[TableAction, pb.TableAction] = {
    TableAction.VACUUM: pb.TABLE_ACTION_VACUUM,
    TableAction.FREEZE: pb.TABLE_ACTION_FREEZE,
    TableAction.ANALYZE: pb.TABLE_ACTION_ANALYZE,
    TableAction.REINDEX: pb.TABLE_ACTION_REINDEX,
    TableAction.DROP_INVALID_INDEX: pb.TABLE_ACTION_DROP_INVALID_INDEX,
    TableAction.OPTIMIZE: pb.TABLE_ACTION_OPTIMIZE,
    TableAction.SKIP: pb.TABLE_ACTION_SKIP,
}
_ACTION_FROM_PROTO: dict[int, TableAction] = {v: k for k, v in _ACTION_TO_PROTO.items()}

_STATUS_TO_PROTO: dict[JobStatus, pb.JobStatus] = {
    JobStatus.PENDING: pb.JOB_STATUS_PENDING,
    JobStatus.RUNNING: pb.JOB_STATUS_RUNNING,
    JobStatus.COMPLETED: pb.JOB_STATUS_COMPLETED,
    JobStatus.FAILED: pb.JOB_STATUS_FAILED,
    JobStatus.CANCELLED: pb.JOB_STATUS_CANCELLED,
}
_STATUS_FROM_PROTO: dict[int, JobStatus] = {v: k for k, v in _STATUS_TO_PROTO.items()}


def operation_to_proto(operation: Operation) -> pb.Operation:
    return _OPERATION_TO_PROTO[operation]


def operation_from_proto(value: int) -> Operation | None:
    """The operation for a proto enum value; None for UNSPECIFIED or a value this version does not know."""
    return _OPERATION_FROM_PROTO.get(value)


def status_to_proto(status: JobStatus) -> pb.JobStatus:
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: int) -> JobStatus | None:
    """The status for a proto enum value; None for UNSPECIFIED or an unknown value."""
    return _STATUS_FROM_PROTO.get(value)


def status_label(value: int) -> str:
    """A short lower-case label for a proto status value ("completed"), for humans."""
    status = status_from_proto(value)
    return status.value if status else "unspecified"


def operation_label(value: int) -> str:
    operation = operation_from_proto(value)
    return operation.value if operation else "unspecified"


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for an aware datetime (naive ones are taken as UTC); None stays None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def duration(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def report_to_proto(report: OperationReport) -> pb.OperationResult:
    return pb.OperationResult(
        duration=duration(report.duration_seconds),
        bytes_before=report.bytes_before,
        bytes_after=report.bytes_after,
        objects_processed=report.objects_processed,
        objects_skipped=report.objects_skipped,
        engine=report.engine,
        notes=list(report.notes),
        tables=[table_report_to_proto(table) for table in report.tables],
    )


def table_report_to_proto(report: TableReport) -> pb.TableReport:
    return pb.TableReport(
        schema=report.schema,
        table=report.table,
        action=_ACTION_TO_PROTO[report.action] if report.action else pb.TABLE_ACTION_UNSPECIFIED,
        reasons=list(report.reasons),
        evidence=dict(report.evidence),
        before=dict(report.before),
        after=dict(report.after),
        duration=duration(report.duration_seconds),
    )


def table_report_from_proto(message: pb.TableReport) -> TableReport:
    """The domain report; an action this version does not know (or UNSPECIFIED) reads as None."""
    return TableReport(
        schema=message.schema,
        table=message.table,
        action=_ACTION_FROM_PROTO.get(message.action),
        reasons=tuple(message.reasons),
        evidence=dict(message.evidence),
        before=dict(message.before),
        after=dict(message.after),
        duration_seconds=message.duration.ToNanoseconds() / 1e9,
    )


def report_from_proto(message: pb.OperationResult) -> OperationReport:
    return OperationReport(
        engine=message.engine,
        duration_seconds=message.duration.ToNanoseconds() / 1e9,
        bytes_before=message.bytes_before,
        bytes_after=message.bytes_after,
        objects_processed=message.objects_processed,
        objects_skipped=message.objects_skipped,
        notes=tuple(message.notes),
        tables=tuple(table_report_from_proto(table) for table in message.tables),
    )
