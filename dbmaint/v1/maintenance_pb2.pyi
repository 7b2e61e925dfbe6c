import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_UNSPECIFIED: _ClassVar[Operation]
    OPERATION_VACUUM: _ClassVar[Operation]
    OPERATION_ANALYZE: _ClassVar[Operation]
    OPERATION_REINDEX: _ClassVar[Operation]
    OPERATION_OPTIMIZE: _ClassVar[Operation]

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_PENDING: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_CANCELLED: _ClassVar[JobStatus]

class WindowEndPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_END_UNSPECIFIED: _ClassVar[WindowEndPolicy]
    WINDOW_END_FINISH: _ClassVar[WindowEndPolicy]
    WINDOW_END_CANCEL: _ClassVar[WindowEndPolicy]

class TableAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TABLE_ACTION_UNSPECIFIED: _ClassVar[TableAction]
    TABLE_ACTION_VACUUM: _ClassVar[TableAction]
    TABLE_ACTION_FREEZE: _ClassVar[TableAction]
    TABLE_ACTION_ANALYZE: _ClassVar[TableAction]
    TABLE_ACTION_REINDEX: _ClassVar[TableAction]
    TABLE_ACTION_DROP_INVALID_INDEX: _ClassVar[TableAction]
    TABLE_ACTION_OPTIMIZE: _ClassVar[TableAction]
    TABLE_ACTION_SKIP: _ClassVar[TableAction]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_ALL: _ClassVar[Mode]
    MODE_PLAN: _ClassVar[Mode]
    MODE_AUTO: _ClassVar[Mode]
OPERATION_UNSPECIFIED: Operation
OPERATION_VACUUM: Operation
OPERATION_ANALYZE: Operation
OPERATION_REINDEX: Operation
OPERATION_OPTIMIZE: Operation
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_PENDING: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_CANCELLED: JobStatus
WINDOW_END_UNSPECIFIED: WindowEndPolicy
WINDOW_END_FINISH: WindowEndPolicy
WINDOW_END_CANCEL: WindowEndPolicy
TABLE_ACTION_UNSPECIFIED: TableAction
TABLE_ACTION_VACUUM: TableAction
TABLE_ACTION_FREEZE: TableAction
TABLE_ACTION_ANALYZE: TableAction
TABLE_ACTION_REINDEX: TableAction
TABLE_ACTION_DROP_INVALID_INDEX: TableAction
TABLE_ACTION_OPTIMIZE: TableAction
TABLE_ACTION_SKIP: TableAction
MODE_UNSPECIFIED: Mode
MODE_ALL: Mode
MODE_PLAN: Mode
MODE_AUTO: Mode

class MaintenanceWindow(_message.Message):
    __slots__ = ("start", "end", "cron", "duration", "time_zone", "cutoff", "on_end")
    class OnEndEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: WindowEndPolicy
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[WindowEndPolicy, str]] = ...) -> None: ...
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    CUTOFF_FIELD_NUMBER: _ClassVar[int]
    ON_END_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    cron: str
    duration: _duration_pb2.Duration
    time_zone: str
    cutoff: _duration_pb2.Duration
    on_end: _containers.ScalarMap[str, WindowEndPolicy]
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cron: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., time_zone: _Optional[str] = ..., cutoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., on_end: _Optional[_Mapping[str, WindowEndPolicy]] = ...) -> None: ...

class TableReport(_message.Message):
    __slots__ = ("schema", "table", "action", "reasons", "evidence", "before", "after", "duration")
    class EvidenceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BeforeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class AfterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    schema: str
    table: str
    action: TableAction
    reasons: _containers.RepeatedScalarFieldContainer[str]
    evidence: _containers.ScalarMap[str, float]
    before: _containers.ScalarMap[str, float]
    after: _containers.ScalarMap[str, float]
    duration: _duration_pb2.Duration
    def __init__(self, schema: _Optional[str] = ..., table: _Optional[str] = ..., action: _Optional[_Union[TableAction, str]] = ..., reasons: _Optional[_Iterable[str]] = ..., evidence: _Optional[_Mapping[str, float]] = ..., before: _Optional[_Mapping[str, float]] = ..., after: _Optional[_Mapping[str, float]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class OperationResult(_message.Message):
    __slots__ = ("duration", "bytes_before", "bytes_after", "objects_processed", "objects_skipped", "engine", "notes", "tables")
    DURATION_FIELD_NUMBER: _ClassVar[int]
    BYTES_BEFORE_FIELD_NUMBER: _ClassVar[int]
    BYTES_AFTER_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    duration: _duration_pb2.Duration
    bytes_before: int
    bytes_after: int
    objects_processed: int
    objects_skipped: int
    engine: str
    notes: _containers.RepeatedScalarFieldContainer[str]
    tables: _containers.RepeatedCompositeFieldContainer[TableReport]
    def __init__(self, duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., bytes_before: _Optional[int] = ..., bytes_after: _Optional[int] = ..., objects_processed: _Optional[int] = ..., objects_skipped: _Optional[int] = ..., engine: _Optional[str] = ..., notes: _Optional[_Iterable[str]] = ..., tables: _Optional[_Iterable[_Union[TableReport, _Mapping]]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("total", "pending", "running", "succeeded", "failed", "cancelled")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    def __init__(self, total: _Optional[int] = ..., pending: _Optional[int] = ..., running: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "type", "parent_id", "status", "target", "operation", "config", "attempt", "max_attempts", "worker_id", "error", "result", "progress", "created_at", "started_at", "finished_at", "request_id", "cancel_requested", "position", "waiting_reason", "schedule_id", "scheduled_time", "window")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    parent_id: str
    status: JobStatus
    target: str
    operation: Operation
    config: str
    attempt: int
    max_attempts: int
    worker_id: str
    error: str
    result: OperationResult
    progress: Progress
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    request_id: str
    cancel_requested: bool
    position: int
    waiting_reason: str
    schedule_id: str
    scheduled_time: _timestamp_pb2.Timestamp
    window: MaintenanceWindow
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., parent_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., target: _Optional[str] = ..., operation: _Optional[_Union[Operation, str]] = ..., config: _Optional[str] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., worker_id: _Optional[str] = ..., error: _Optional[str] = ..., result: _Optional[_Union[OperationResult, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., position: _Optional[int] = ..., waiting_reason: _Optional[str] = ..., schedule_id: _Optional[str] = ..., scheduled_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window: _Optional[_Union[MaintenanceWindow, _Mapping]] = ...) -> None: ...

class CreateMaintenanceRequest(_message.Message):
    __slots__ = ("targets", "operations", "request_id", "schemas", "tables", "window", "mode", "parallel", "thresholds")
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedScalarFieldContainer[str]
    operations: _containers.RepeatedScalarFieldContainer[Operation]
    request_id: str
    schemas: _containers.RepeatedScalarFieldContainer[str]
    tables: _containers.RepeatedScalarFieldContainer[str]
    window: MaintenanceWindow
    mode: Mode
    parallel: int
    thresholds: _containers.ScalarMap[str, float]
    def __init__(self, targets: _Optional[_Iterable[str]] = ..., operations: _Optional[_Iterable[_Union[Operation, str]]] = ..., request_id: _Optional[str] = ..., schemas: _Optional[_Iterable[str]] = ..., tables: _Optional[_Iterable[str]] = ..., window: _Optional[_Union[MaintenanceWindow, _Mapping]] = ..., mode: _Optional[_Union[Mode, str]] = ..., parallel: _Optional[int] = ..., thresholds: _Optional[_Mapping[str, float]] = ...) -> None: ...

class CreateMaintenanceResponse(_message.Message):
    __slots__ = ("parent", "children", "created", "next_children_page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHILDREN_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: Job
    children: _containers.RepeatedCompositeFieldContainer[Job]
    created: bool
    next_children_page_token: str
    def __init__(self, parent: _Optional[_Union[Job, _Mapping]] = ..., children: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., created: _Optional[bool] = ..., next_children_page_token: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id", "children_page_size", "children_page_token", "children_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    children_page_size: int
    children_page_token: str
    children_status: _containers.RepeatedScalarFieldContainer[JobStatus]
    def __init__(self, id: _Optional[str] = ..., children_page_size: _Optional[int] = ..., children_page_token: _Optional[str] = ..., children_status: _Optional[_Iterable[_Union[JobStatus, str]]] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job", "children", "next_children_page_token")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHILDREN_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job: Job
    children: _containers.RepeatedCompositeFieldContainer[Job]
    next_children_page_token: str
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., children: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_children_page_token: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("status", "type", "parent_id", "page_size", "page_token", "schedule_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    status: JobStatus
    type: str
    parent_id: str
    page_size: int
    page_token: str
    schedule_id: str
    def __init__(self, status: _Optional[_Union[JobStatus, str]] = ..., type: _Optional[str] = ..., parent_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., schedule_id: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id", "job_only")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ONLY_FIELD_NUMBER: _ClassVar[int]
    id: str
    job_only: bool
    def __init__(self, id: _Optional[str] = ..., job_only: _Optional[bool] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("snapshot", "changed")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    snapshot: GetJobResponse
    changed: Job
    def __init__(self, snapshot: _Optional[_Union[GetJobResponse, _Mapping]] = ..., changed: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "targets", "slots", "running_job_ids", "last_heartbeat", "draining", "connected_at", "peer", "faults_active")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    FAULTS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    running_job_ids: _containers.RepeatedScalarFieldContainer[str]
    last_heartbeat: _timestamp_pb2.Timestamp
    draining: bool
    connected_at: _timestamp_pb2.Timestamp
    peer: str
    faults_active: bool
    def __init__(self, worker_id: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., running_job_ids: _Optional[_Iterable[str]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., draining: _Optional[bool] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., peer: _Optional[str] = ..., faults_active: _Optional[bool] = ...) -> None: ...

class DrainWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "reason")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    reason: str
    def __init__(self, worker_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DrainWorkerResponse(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerInfo
    def __init__(self, worker: _Optional[_Union[WorkerInfo, _Mapping]] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "unserved_targets")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    UNSERVED_TARGETS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    unserved_targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ..., unserved_targets: _Optional[_Iterable[str]] = ...) -> None: ...

class RunningChild(_message.Message):
    __slots__ = ("job_id", "attempt", "waiting_reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    waiting_reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., waiting_reason: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("worker_id", "targets", "slots", "running", "version", "accepts_batches", "accepts_acks", "faults_active")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_BATCHES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_ACKS_FIELD_NUMBER: _ClassVar[int]
    FAULTS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    running: _containers.RepeatedCompositeFieldContainer[RunningChild]
    version: str
    accepts_batches: bool
    accepts_acks: bool
    faults_active: bool
    def __init__(self, worker_id: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., running: _Optional[_Iterable[_Union[RunningChild, _Mapping]]] = ..., version: _Optional[str] = ..., accepts_batches: _Optional[bool] = ..., accepts_acks: _Optional[bool] = ..., faults_active: _Optional[bool] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("job_id", "attempt", "status", "error", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    status: JobStatus
    error: str
    result: OperationResult
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., status: _Optional[_Union[JobStatus, str]] = ..., error: _Optional[str] = ..., result: _Optional[_Union[OperationResult, _Mapping]] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("running",)
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    running: _containers.RepeatedCompositeFieldContainer[RunningChild]
    def __init__(self, running: _Optional[_Iterable[_Union[RunningChild, _Mapping]]] = ...) -> None: ...

class Draining(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("hello", "result", "heartbeat", "draining", "results")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    result: Result
    heartbeat: Heartbeat
    draining: Draining
    results: ResultBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., draining: _Optional[_Union[Draining, _Mapping]] = ..., results: _Optional[_Union[ResultBatch, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("lease_timeout", "heartbeat_interval", "manager_id", "sends_acks")
    LEASE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDS_ACKS_FIELD_NUMBER: _ClassVar[int]
    lease_timeout: _duration_pb2.Duration
    heartbeat_interval: _duration_pb2.Duration
    manager_id: str
    sends_acks: bool
    def __init__(self, lease_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., manager_id: _Optional[str] = ..., sends_acks: _Optional[bool] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("job_id", "attempt", "target", "operation", "job_type", "config", "deadline", "parent_id", "window_end")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    target: str
    operation: Operation
    job_type: str
    config: str
    deadline: _timestamp_pb2.Timestamp
    parent_id: str
    window_end: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., target: _Optional[str] = ..., operation: _Optional[_Union[Operation, str]] = ..., job_type: _Optional[str] = ..., config: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parent_id: _Optional[str] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AssignmentBatch(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("job_id", "attempt", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ResultAckBatch(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[ResultAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[ResultAck, _Mapping]]] = ...) -> None: ...

class ManagerMessage(_message.Message):
    __slots__ = ("welcome", "assignment", "cancel", "assignments", "drain", "result_ack", "result_acks")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACK_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACKS_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assignment: Assignment
    cancel: Cancel
    assignments: AssignmentBatch
    drain: Drain
    result_ack: ResultAck
    result_acks: ResultAckBatch
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., assignments: _Optional[_Union[AssignmentBatch, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., result_ack: _Optional[_Union[ResultAck, _Mapping]] = ..., result_acks: _Optional[_Union[ResultAckBatch, _Mapping]] = ...) -> None: ...
