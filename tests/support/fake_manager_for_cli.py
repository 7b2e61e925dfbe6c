"""An in-process fake of the manager's MaintenanceService, ScheduleService and grpc.health.v1 for the CLI tests.

It keeps jobs (and schedules with their firings: :class:`FakeSchedules`) in memory, validates requests the way
the real manager does (same status codes, similar messages) and, when asked, plays each parent's children
through PENDING → RUNNING → terminal in a thread, so that WatchJob streams real changes. The outcome of a
child is chosen by its target's name:

* ``broken*``: the child FAILS with an error;
* ``flaky*``: the first attempt's worker is lost (back to PENDING, attempt 2), then it COMPLETES;
* anything else COMPLETES. VACUUM reports 4 MiB → 2.5 MiB; other operations leave the size alone.

A MODE_PLAN parent's children complete with the table reports of ``plan_reports[target]`` (default: one
SKIP of ``main.t``), a MODE_AUTO parent's with those of ``auto_reports[target]`` (default: none); like the real
manager, only GetJob of a child returns them. Parents and children carry ``"mode"`` in their config as the real
manager writes it (absent for MODE_ALL).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dbmaint import wire
from dbmaint.operations import CHILD_JOB_TYPE, DEFAULT_OPERATIONS, JOB_TYPES, PARENT_JOB_TYPE, Operation
from dbmaint.transport import LEADER_METADATA_KEY, NOT_RUN_METADATA_KEY
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc

TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_CHILDREN_PAGE_SIZE = 500  # as the real manager: GetJob, CreateMaintenance and the WatchJob snapshot page
MAX_CHILDREN_PAGE_SIZE = 5000
TERMINAL = (pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED)
MIB = 1024 * 1024


def _now() -> Any:
    return wire.timestamp(datetime.now(UTC))


class FakeMaintenance(pb_grpc.MaintenanceServiceServicer):
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: dict[str, pb.Job] = {}
        self.order: list[str] = []  # creation order
        self.children: dict[str, list[str]] = {}
        self.events: list[pb.Job] = []  # every change, in order
        self.requests: list[Any] = []
        self.autorun = False
        self.step = 0.03  # seconds between the steps of a played child
        self.workers: list[pb.WorkerInfo] = []
        self.unserved_targets: list[str] = []
        self.drop_watches = 0  # this many WatchJob streams end with UNAVAILABLE right after their snapshot
        self.hang = 0.0  # GetJob sleeps this long first (to exceed the client's deadline)
        self.plan_reports: dict[str, list[pb.TableReport]] = {}  # what a MODE_PLAN child of a target reports
        self.plan_parents: set[str] = set()
        self.auto_reports: dict[str, list[pb.TableReport]] = {}  # what a MODE_AUTO child of a target reports
        # ... or, when set for its (target, operation), what that child reports
        self.auto_reports_by_operation: dict[tuple[str, int], list[pb.TableReport]] = {}
        self.auto_parents: set[str] = set()
        self.hang_create = 0.0  # CreateMaintenance sleeps this long after storing the parent (a lost answer)
        # Method name -> how many of its next calls do their work, then end UNAVAILABLE as a broken link would
        # (the answer lost, not the work; not a standby's refusal).
        self.lose_answers: dict[str, int] = {}

    # -- state ----------------------------------------------------------------------------------------------

    def _publish(self, job: pb.Job) -> None:
        """Stores a copy of ``job`` and appends it to the event log. Caller holds ``cond``."""
        stored = pb.Job()
        stored.CopyFrom(job)
        self.jobs[job.id] = stored
        self.events.append(stored)
        self.cond.notify_all()

    def _refresh_parent(self, parent_id: str) -> None:
        parent = pb.Job()
        parent.CopyFrom(self.jobs[parent_id])
        if parent.status in TERMINAL:
            return
        kids = [self.jobs[child_id] for child_id in self.children[parent_id]]
        statuses = [kid.status for kid in kids]
        progress = parent.progress
        progress.total = len(kids)
        progress.pending = statuses.count(pb.JOB_STATUS_PENDING)
        progress.running = statuses.count(pb.JOB_STATUS_RUNNING)
        progress.succeeded = statuses.count(pb.JOB_STATUS_COMPLETED)
        progress.failed = statuses.count(pb.JOB_STATUS_FAILED)
        progress.cancelled = statuses.count(pb.JOB_STATUS_CANCELLED)
        if all(status in TERMINAL for status in statuses):
            failed = [
                f"{kid.target}/{wire.operation_label(kid.operation)}"
                for kid in kids
                if kid.status == pb.JOB_STATUS_FAILED
            ]
            if parent.cancel_requested:
                parent.status = pb.JOB_STATUS_CANCELLED
            elif failed:
                parent.status = pb.JOB_STATUS_FAILED
                parent.error = f"{len(failed)} child job(s) failed: {', '.join(failed)}"
            elif progress.cancelled:
                parent.status = pb.JOB_STATUS_CANCELLED
            else:
                parent.status = pb.JOB_STATUS_COMPLETED
            parent.finished_at.CopyFrom(_now())
        elif progress.running or progress.succeeded or progress.failed:
            if parent.status == pb.JOB_STATUS_PENDING:
                parent.started_at.CopyFrom(_now())
            parent.status = pb.JOB_STATUS_RUNNING
        self._publish(parent)

    def _set_child(self, child_id: str, **changes: Any) -> bool:
        """Applies ``changes`` to a non-terminal child, refreshes its parent; False if the child was terminal."""
        with self.cond:
            child = pb.Job()
            child.CopyFrom(self.jobs[child_id])
            if child.status in TERMINAL:
                return False
            for name, value in changes.items():
                if isinstance(value, pb.OperationResult):
                    child.result.CopyFrom(value)
                elif name in ("started_at", "finished_at"):
                    getattr(child, name).CopyFrom(value)
                else:
                    setattr(child, name, value)
            if "status" in changes and changes["status"] in TERMINAL:
                child.finished_at.CopyFrom(_now())
            self._publish(child)
            self._refresh_parent(child.parent_id)
            return True

    def play(self, parent_id: str) -> None:
        """Plays the parent's children in a background thread (one target at a time, like the real dispatch)."""
        threading.Thread(target=self._play, args=(parent_id,), daemon=True).start()

    def _play(self, parent_id: str) -> None:
        for child_id in list(self.children[parent_id]):
            child = self.jobs[child_id]
            time.sleep(self.step)
            if child.target.startswith("flaky"):
                first = {
                    "status": pb.JOB_STATUS_RUNNING,
                    "worker_id": "fake-worker-1",
                    "attempt": 1,
                    "waiting_reason": "",
                }
                if not self._set_child(child_id, **first):
                    continue
                time.sleep(self.step)
                self._set_child(child_id, status=pb.JOB_STATUS_PENDING, attempt=2, waiting_reason="worker lost")
                time.sleep(self.step)
            attempt = 2 if child.target.startswith("flaky") else 1
            worker = "fake-worker-2" if attempt == 2 else "fake-worker-1"
            if not self._set_child(
                child_id,
                status=pb.JOB_STATUS_RUNNING,
                worker_id=worker,
                attempt=attempt,
                waiting_reason="",
                started_at=_now(),
            ):
                continue
            time.sleep(self.step)
            vacuum = child.operation == pb.OPERATION_VACUUM
            result = pb.OperationResult(
                duration=wire.duration(0.25),
                bytes_before=4 * MIB,
                bytes_after=(5 * MIB) // 2 if vacuum else 4 * MIB,
                objects_processed=3,
                engine="sqlite",
                notes=[f"{wire.operation_label(child.operation).upper()}", "page_count 1024 -> 640"],
            )
            if parent_id in self.plan_parents:
                result = pb.OperationResult(engine="sqlite", tables=self._plan_reports(child.target))
                result.notes.append(f"plan: {len(result.tables)} table(s) observed, nothing changed")
            if parent_id in self.auto_parents:
                by_target = self.auto_reports.get(child.target, [])
                result.tables.extend(
                    self.auto_reports_by_operation.get((child.target, child.operation), by_target)
                )
            if child.target.startswith("broken"):
                self._set_child(child_id, status=pb.JOB_STATUS_FAILED, error="database disk image is malformed")
            else:
                self._set_child(child_id, status=pb.JOB_STATUS_COMPLETED, result=result)

    def _plan_reports(self, target: str) -> list[pb.TableReport]:
        skip = pb.TableReport(schema="main", table="t", action=pb.TABLE_ACTION_SKIP, reasons=["below_threshold"])
        return self.plan_reports.get(target, [skip])

    def _maybe_lose_answer(self, method: str, context: Any) -> None:
        if self.lose_answers.get(method, 0) > 0:
            self.lose_answers[method] -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")

    # -- MaintenanceService ---------------------------------------------------------------------------------

    def CreateMaintenance(
        self, request: pb.CreateMaintenanceRequest, context: Any
    ) -> pb.CreateMaintenanceResponse:
        self.requests.append(request)
        if not request.targets:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "targets: at least one target is required")
        for index, name in enumerate(request.targets):
            if not TARGET_NAME.fullmatch(name):
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"targets[{index}]: invalid target name {name!r}: use 1-64 characters [A-Za-z0-9_.-]",
                )
        operations = []
        for index, value in enumerate(request.operations):
            operation = wire.operation_from_proto(value)
            if operation is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"operations[{index}]: unknown operation {value}")
            operations.append(operation)
        mode = {pb.MODE_PLAN: "plan", pb.MODE_AUTO: "auto"}.get(request.mode)
        with self.cond:
            if request.request_id:
                for job in self.jobs.values():
                    if job.type == PARENT_JOB_TYPE and job.request_id == request.request_id:
                        page = self._page(job.id, pb.GetJobRequest(id=job.id), context)
                        return pb.CreateMaintenanceResponse(
                            parent=job,
                            children=page.children,
                            created=False,
                            next_children_page_token=page.next_children_page_token,
                        )
            chosen: tuple[Operation, ...] = tuple(operations) or DEFAULT_OPERATIONS
            parent = pb.Job(
                id=str(uuid.uuid4()),
                type=PARENT_JOB_TYPE,
                status=pb.JOB_STATUS_PENDING,
                request_id=request.request_id,
                created_at=_now(),
                progress=pb.Progress(total=len(request.targets) * len(chosen)),
            )
            parent.progress.pending = parent.progress.total
            mode_config = {"mode": mode} if mode else {}
            parent.config = json.dumps(mode_config) if mode_config else ""
            if request.mode == pb.MODE_PLAN:
                self.plan_parents.add(parent.id)
            if request.mode == pb.MODE_AUTO:
                self.auto_parents.add(parent.id)
            self.order.append(parent.id)
            self._publish(parent)
            self.children[parent.id] = []
            for target in request.targets:
                for operation in chosen:
                    child = pb.Job(
                        id=str(uuid.uuid4()),
                        type=CHILD_JOB_TYPE,
                        parent_id=parent.id,
                        status=pb.JOB_STATUS_PENDING,
                        target=target,
                        operation=wire.operation_to_proto(operation),
                        max_attempts=3,
                        position=len(self.children[parent.id]),
                        created_at=_now(),
                        waiting_reason=f"no connected worker serves target {target!r}",
                        config=json.dumps({"operation": operation.value, "target": target, **mode_config}),
                    )
                    self.order.append(child.id)
                    self.children[parent.id].append(child.id)
                    self._publish(child)
            page = self._page(parent.id, pb.GetJobRequest(id=parent.id), context)
        if self.autorun:
            self.play(parent.id)
        time.sleep(self.hang_create)
        self._maybe_lose_answer("CreateMaintenance", context)
        return pb.CreateMaintenanceResponse(
            parent=parent,
            children=page.children,
            created=True,
            next_children_page_token=page.next_children_page_token,
        )

    def _page(self, job_id: str, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        """One page of the children of ``job_id`` as ``request`` asks (no job). Caller holds ``cond``."""
        size = request.children_page_size
        if size < 0 or size > MAX_CHILDREN_PAGE_SIZE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "children_page_size: must be between 1 and 5000")
        after = -1
        if request.children_page_token:
            if not request.children_page_token.startswith("after:"):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "children_page_token: not a token from GetJob")
            after = int(request.children_page_token.removeprefix("after:"))
        statuses = set(request.children_status)
        kids = [
            kid
            for kid in (self.jobs[child_id] for child_id in self.children.get(job_id, []))
            if kid.position > after and (not statuses or kid.status in statuses)
        ]
        page = [_without_tables(kid) for kid in kids[: size or DEFAULT_CHILDREN_PAGE_SIZE]]
        more = len(kids) > len(page)
        return pb.GetJobResponse(
            children=page, next_children_page_token=f"after:{page[-1].position}" if more else ""
        )

    def _get(self, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        with self.cond:
            job = self.jobs.get(request.id)
            if job is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.id!r} not found")
            page = self._page(request.id, request, context)
            page.job.CopyFrom(job)
            return page

    def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        self.requests.append(request)
        time.sleep(self.hang)
        return self._get(request, context)

    def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        self.requests.append(request)
        if request.type and request.type not in JOB_TYPES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"type: unknown job type {request.type!r}")
        with self.cond:
            jobs = [self.jobs[job_id] for job_id in reversed(self.order)]
        jobs = [
            job
            for job in jobs
            if (not request.status or job.status == request.status)
            and (not request.type or job.type == request.type)
            and (not request.parent_id or job.parent_id == request.parent_id)
            and (not request.schedule_id or job.schedule_id == request.schedule_id)
        ]
        start = int(request.page_token) if request.page_token else 0
        size = request.page_size or 50
        page = jobs[start : start + size]
        more = start + size < len(jobs)
        return pb.ListJobsResponse(jobs=page, next_page_token=str(start + size) if more else "")

    def WatchJob(self, request: pb.WatchJobRequest, context: Any) -> Iterator[pb.WatchJobResponse]:
        self.requests.append(request)
        with self.cond:
            snapshot = self._get(pb.GetJobRequest(id=request.id), context)
            snapshot.job.CopyFrom(_without_tables(snapshot.job))
            if request.job_only:
                del snapshot.children[:]
            seen = len(self.events)
        yield pb.WatchJobResponse(snapshot=snapshot)
        if self.drop_watches > 0:
            self.drop_watches -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "the fake dropped this stream")
        watched = {request.id} if request.job_only else {request.id, *self.children.get(request.id, [])}
        if snapshot.job.status in TERMINAL:
            return
        while context.is_active():
            with self.cond:
                self.cond.wait_for(lambda seen=seen: len(self.events) > seen, timeout=0.2)  # type: ignore[misc]
                fresh, seen = self.events[seen:], len(self.events)
            for job in fresh:
                if job.id in watched:
                    yield pb.WatchJobResponse(changed=_without_tables(job))
                    if job.id == request.id and job.status in TERMINAL:
                        return

    def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.CancelJobResponse:
        self.requests.append(request)
        reason = request.reason or "cancelled by request"
        with self.cond:
            job = self.jobs.get(request.id)
            if job is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.id!r} not found")
            if job.status in TERMINAL:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"job {job.id!r} is already {wire.status_label(job.status)}",
                )
            parent_id = job.id if job.type == PARENT_JOB_TYPE else job.parent_id
            if job.type == PARENT_JOB_TYPE:
                marked = pb.Job()
                marked.CopyFrom(job)
                marked.cancel_requested = True
                self._publish(marked)
            targets = self.children[job.id] if job.type == PARENT_JOB_TYPE else [job.id]
            for child_id in targets:
                child = pb.Job()
                child.CopyFrom(self.jobs[child_id])
                if child.status in TERMINAL:
                    continue
                child.cancel_requested = True
                if child.status == pb.JOB_STATUS_RUNNING:  # its worker is asked to stop; it reports later
                    self._publish(child)
                    continue
                child.status = pb.JOB_STATUS_CANCELLED
                child.error = reason
                child.waiting_reason = ""
                child.finished_at.CopyFrom(_now())
                self._publish(child)
            self._refresh_parent(parent_id)
            answer = pb.CancelJobResponse(job=self.jobs[job.id])
        self._maybe_lose_answer("CancelJob", context)
        return answer

    def ListWorkers(self, request: pb.ListWorkersRequest, context: Any) -> pb.ListWorkersResponse:
        self.requests.append(request)
        return pb.ListWorkersResponse(workers=self.workers, unserved_targets=self.unserved_targets)


def _without_tables(job: pb.Job) -> pb.Job:
    """A copy of ``job`` without its table reports (what every answer but GetJob of a child carries)."""
    copy = pb.Job()
    copy.CopyFrom(job)
    del copy.result.tables[:]
    if not job.HasField("result"):
        copy.ClearField("result")
    return copy


# Every fake schedule that is not paused reports this as its next fire time (the fake does not evaluate crons).
NEXT_FIRE = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
SCHEDULE_FIELDS = frozenset(spb.Schedule.DESCRIPTOR.fields_by_name) - {
    "id",
    "next_fire_time",
    "created_at",
    "updated_at",
    "last_parent_id",
}


class FakeSchedules(spb_grpc.ScheduleServiceServicer):
    """Schedules and firings in memory; TriggerSchedule creates its parent through the fake MaintenanceService.

    It checks what the CLI can get wrong (exactly one of cron and every, a known zone, names, masks, pages) with
    the real manager's status codes; it never fires on its own: tests add firings with :meth:`record`."""

    def __init__(self, maintenance: FakeMaintenance) -> None:
        self.maintenance = maintenance
        self.lock = threading.Lock()
        self.schedules: dict[str, spb.Schedule] = {}
        self.firings: dict[str, list[spb.Firing]] = {}  # newest first
        self.requests: list[Any] = []
        self.page_size = 50

    def _found(self, schedule_id: str, context: Any) -> spb.Schedule:
        schedule = self.schedules.get(schedule_id)
        if schedule is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"schedule {schedule_id!r} not found")
        return schedule

    @staticmethod
    def _check(schedule: spb.Schedule, context: Any) -> None:
        if bool(schedule.cron) == schedule.HasField("every"):
            message = "schedule.cron: set exactly one of cron and every"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        try:
            ZoneInfo(schedule.time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"schedule.time_zone: unknown time zone {schedule.time_zone!r} "
                "(use an IANA name such as Europe/Berlin)",
            )
        if not schedule.maintenance.targets:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "schedule.maintenance.targets: at least one target is required"
            )

    @staticmethod
    def _with_next_fire(schedule: spb.Schedule) -> spb.Schedule:
        answer = spb.Schedule()
        answer.CopyFrom(schedule)
        answer.ClearField("next_fire_time")
        if not schedule.paused:
            answer.next_fire_time.FromDatetime(NEXT_FIRE)
        return answer

    def record(self, schedule_id: str, *firings: spb.Firing) -> None:
        """Adds firings to a schedule's history (each is newer than the ones before)."""
        with self.lock:
            for firing in firings:
                self.firings[schedule_id].insert(0, firing)

    @staticmethod
    def _page(items: list[Any], token: str, size: int, context: Any) -> tuple[list[Any], str]:
        if token and not token.isdigit():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token from this list")
        start = int(token or 0)
        more = start + size < len(items)
        return items[start : start + size], str(start + size) if more else ""

    def CreateSchedule(self, request: spb.CreateScheduleRequest, context: Any) -> spb.CreateScheduleResponse:
        self.requests.append(request)
        schedule = request.schedule
        if not TARGET_NAME.fullmatch(schedule.id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"schedule.id: invalid schedule id {schedule.id!r}")
        self._check(schedule, context)
        with self.lock:
            if schedule.id in self.schedules:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"schedule {schedule.id!r} already exists")
            stored = spb.Schedule()
            stored.CopyFrom(schedule)
            stored.created_at.CopyFrom(_now())
            stored.updated_at.CopyFrom(stored.created_at)
            self.schedules[schedule.id] = stored
            self.firings[schedule.id] = []
            return spb.CreateScheduleResponse(schedule=self._with_next_fire(stored))

    def GetSchedule(self, request: spb.GetScheduleRequest, context: Any) -> spb.GetScheduleResponse:
        self.requests.append(request)
        with self.lock:
            return spb.GetScheduleResponse(schedule=self._with_next_fire(self._found(request.id, context)))

    def ListSchedules(self, request: spb.ListSchedulesRequest, context: Any) -> spb.ListSchedulesResponse:
        self.requests.append(request)
        with self.lock:
            ordered = [self._with_next_fire(self.schedules[key]) for key in sorted(self.schedules)]
        page, token = self._page(ordered, request.page_token, request.page_size or self.page_size, context)
        return spb.ListSchedulesResponse(schedules=page, next_page_token=token)

    def UpdateSchedule(self, request: spb.UpdateScheduleRequest, context: Any) -> spb.UpdateScheduleResponse:
        self.requests.append(request)
        paths = list(request.update_mask.paths)
        unknown = [path for path in paths if path not in SCHEDULE_FIELDS]
        if not paths or unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"update_mask: cannot change {unknown or 'nothing'}")
        with self.lock:
            stored = self._found(request.schedule.id, context)
            changed = spb.Schedule()
            changed.CopyFrom(stored)
            request.update_mask.MergeMessage(request.schedule, changed, replace_message_field=True)
            self._check(changed, context)
            changed.updated_at.CopyFrom(_now())
            self.schedules[changed.id] = changed
            return spb.UpdateScheduleResponse(schedule=self._with_next_fire(changed))

    def DeleteSchedule(self, request: spb.DeleteScheduleRequest, context: Any) -> spb.DeleteScheduleResponse:
        self.requests.append(request)
        with self.lock:
            self._found(request.id, context)
            del self.schedules[request.id]
            del self.firings[request.id]
        return spb.DeleteScheduleResponse()

    def TriggerSchedule(self, request: spb.TriggerScheduleRequest, context: Any) -> spb.TriggerScheduleResponse:
        self.requests.append(request)
        with self.lock:
            schedule = self._found(request.id, context)
        created = self.maintenance.CreateMaintenance(schedule.maintenance, context)
        firing = spb.Firing(
            schedule_id=schedule.id,
            scheduled_time=_now(),
            outcome=spb.FIRING_OUTCOME_FIRED,
            parent_id=created.parent.id,
            reason="triggered by hand",
            missed_count=1,
            recorded_at=_now(),
        )
        with self.maintenance.cond:
            parent = self.maintenance.jobs[created.parent.id]
            parent.schedule_id = schedule.id
            parent.scheduled_time.CopyFrom(firing.scheduled_time)
            if schedule.HasField("window"):
                parent.window.CopyFrom(schedule.window)
        with self.lock:
            self.firings[schedule.id].insert(0, firing)
            schedule.last_parent_id = parent.id
        return spb.TriggerScheduleResponse(firing=firing, parent=parent)

    def ListFirings(self, request: spb.ListFiringsRequest, context: Any) -> spb.ListFiringsResponse:
        self.requests.append(request)
        with self.lock:
            self._found(request.schedule_id, context)
            firings = list(self.firings[request.schedule_id])
        page, token = self._page(firings, request.page_token, request.page_size or self.page_size, context)
        return spb.ListFiringsResponse(firings=page, next_page_token=token)


class FakeManager:
    """A gRPC server on 127.0.0.1:<free port> with the fake MaintenanceService and ScheduleService and a health
    service. Two of them given the same ``service`` are two managers of one store."""

    def __init__(self, service: FakeMaintenance | None = None) -> None:
        self.service = service or FakeMaintenance()
        self.schedules = FakeSchedules(self.service)
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_MaintenanceServiceServicer_to_server(self.service, self.server)
        spb_grpc.add_ScheduleServiceServicer_to_server(self.schedules, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> FakeManager:
        self.server.start()
        for service in ("", "dbmaint.v1.MaintenanceService", "dbmaint.v1.ScheduleService"):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self) -> None:
        self.server.stop(grace=None)

    def create(self, *targets: str, autorun: bool = False) -> pb.CreateMaintenanceResponse:
        """Creates a parent directly (as another client would)."""
        previous, self.service.autorun = self.service.autorun, autorun
        try:
            return self.service.CreateMaintenance(pb.CreateMaintenanceRequest(targets=list(targets)), _NoContext())
        finally:
            self.service.autorun = previous

    def wait_terminal(self, job_id: str, timeout: float = 10.0) -> pb.Job:
        with self.service.cond:
            self.service.cond.wait_for(lambda: self.service.jobs[job_id].status in TERMINAL, timeout=timeout)
            return self.service.jobs[job_id]


class _NoContext:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"{code}: {details}")


class FakeStandby:
    """A manager that does not lead, on 127.0.0.1:<free port>: every call to dbmaint's services ends UNAVAILABLE
    with ``message`` (by default as the manager's gate words a standby's refusal), with ``leader`` in the
    ``dbmaint-leader`` trailing metadata when set, and the ``dbmaint-not-run`` mark unless ``not_run`` is False
    (a manager whose COMMIT was cut: the call may have been carried out).
    Health: the server SERVING, dbmaint's services NOT_SERVING. ``calls`` records (method, request bytes)."""

    STANDBY = "this manager (fake-standby) is a standby: held by another"

    def __init__(self, leader: str = "", message: str = STANDBY, not_run: bool = True) -> None:
        self.leader = leader
        self.message = message
        self.not_run = not_run
        self.calls: list[tuple[str, bytes]] = []
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([_Refusing(self)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> FakeStandby:
        self.server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for service in ("dbmaint.v1.MaintenanceService", "dbmaint.v1.ScheduleService"):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        return self

    def stop(self) -> None:
        self.server.stop(grace=None)

    def requests(self, method: str) -> list[bytes]:
        return [request for called, request in self.calls if called == method]

    def refuse(self, method: str, request: bytes, context: Any) -> None:
        self.calls.append((method, request))
        hint = ((LEADER_METADATA_KEY, self.leader),) if self.leader else ()
        context.set_trailing_metadata(hint + (((NOT_RUN_METADATA_KEY, "1"),) if self.not_run else ()))
        context.abort(grpc.StatusCode.UNAVAILABLE, self.message)


class _Refusing(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    _STREAMING = frozenset({"WatchJob"})

    def __init__(self, standby: FakeStandby) -> None:
        self.standby = standby

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        path: str = details.method  # type: ignore[attr-defined]
        if not path.startswith("/dbmaint.v1."):
            return None
        method = path.rsplit("/", 1)[-1]
        if method in self._STREAMING:

            def stream(request: bytes, context: Any) -> Iterator[bytes]:
                self.standby.refuse(method, request, context)
                yield b""  # pragma: no cover - refuse aborts

            return grpc.unary_stream_rpc_method_handler(stream)
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: self.standby.refuse(method, request, context)
        )
