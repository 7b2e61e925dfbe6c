"""The console's pages, rendered on the server (readable without JavaScript) from Jinja2 templates, over the same
servicers as the JSON API (``api.call``): no second source of truth. ``static/console.js`` only makes the parent
page live. Actions (Cancel, Drain, the schedule forms) are shown to the client role on the leader; a read-only
principal sees none, and a standby links to the leader's console instead."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
import jinja2
from aiohttp import web
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from dbmaint.cli.render_schedules import cadence_words
from dbmaint.operations import PARENT_JOB_TYPE
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from manager_service.auth import Role
from manager_service.console import security
from manager_service.console.api import ApiError, call, current_servicers, current_writes

if TYPE_CHECKING:
    from manager_service.console.app import Console
    from manager_service.schedule_servicer import ScheduleServicer
    from manager_service.server import RoleServicers
    from manager_service.servicers import MaintenanceServicer

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
CHILDREN_PAGE = 5000  # the servicer's largest children page
JOBS_PAGE = 50
MAX_JOBS_PAGE = 500
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
CHART_BUCKETS = 12
CHART_HOURS = 1

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_word(status: int) -> str:
    return pb.JobStatus.Name(status).removeprefix("JOB_STATUS_").lower()


def operation_word(operation: int) -> str:
    return pb.Operation.Name(operation).removeprefix("OPERATION_").lower()


def when(ts: Timestamp | None) -> datetime | None:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=UTC)


def utc_text(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else ""


def in_zone(moment: datetime | None, zone: str) -> str:
    if moment is None:
        return ""
    try:
        local = moment.astimezone(ZoneInfo(zone or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return utc_text(moment)
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (zone or "UTC")


def size_text(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover - the loop always returns


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"


@dataclass(frozen=True, slots=True)
class Child:
    job: pb.Job
    status: str
    operation: str
    duration: str
    bytes_before: int | None
    bytes_after: int | None

    @property
    def reclaimed(self) -> int:
        if self.bytes_before is None or self.bytes_after is None:
            return 0
        return max(0, self.bytes_before - self.bytes_after)


def child_view(job: pb.Job) -> Child:
    duration = ""
    if job.HasField("result") and job.result.HasField("duration"):
        duration = seconds_text(job.result.duration.ToTimedelta().total_seconds())
    else:
        started, finished = when(job.started_at), when(job.finished_at)
        if started is not None and finished is not None:
            duration = seconds_text((finished - started).total_seconds())
    has_result = job.HasField("result")
    return Child(
        job,
        status_word(job.status),
        operation_word(job.operation),
        duration,
        job.result.bytes_before if has_result else None,
        job.result.bytes_after if has_result else None,
    )


def grid(children: list[Child]) -> tuple[list[str], list[str], dict[tuple[str, str], Child]]:
    """Rows (targets) and columns (operations) in first-seen order, and each cell's child."""
    targets = list(dict.fromkeys(child.job.target for child in children))
    operations = list(dict.fromkeys(child.operation for child in children))
    cells = {(child.job.target, child.operation): child for child in children}
    return targets, operations, cells


def config_mentions(config: str, key: str, wanted: str) -> bool:
    """Whether a parent's stored request (its config) names ``wanted`` under ``key`` (targets, operations)."""
    try:
        data = json.loads(config) if config else {}
    except ValueError:
        return wanted.lower() in config.lower()
    values = data.get(key) if isinstance(data, dict) else None
    if isinstance(values, list):
        return any(wanted.lower() in str(value).lower() for value in values)
    return wanted.lower() in config.lower()


def parse_day(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"not a date or time: {text[:40]!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def chart(jobs: Iterable[pb.Job], now: datetime) -> dict[str, Any]:
    """A stacked bar per hour of the last CHART_BUCKETS hours: the parents created in it, by status."""
    width, height, gap = 24, 80, 4
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=CHART_BUCKETS - 1)
    counts: list[Counter[str]] = [Counter() for _ in range(CHART_BUCKETS)]
    for job in jobs:
        created = when(job.created_at)
        if created is None or created < start:
            continue
        index = min(int((created - start).total_seconds() // 3600), CHART_BUCKETS - 1)
        counts[index][status_word(job.status)] += 1
    peak = max((sum(c.values()) for c in counts), default=0) or 1
    bars = []
    for index, counted in enumerate(counts):
        y = float(height)
        for status in STATUSES:
            if counted[status]:
                h = counted[status] * height / peak
                y -= h
                bars.append(
                    {
                        "x": index * (width + gap),
                        "y": round(y, 2),
                        "w": width,
                        "h": round(h, 2),
                        "status": status,
                        "label": f"{(start + timedelta(hours=index)):%H}:00 {status}: {counted[status]}",
                    }
                )
    total = Counter[str]()
    for counted in counts:
        total.update(counted)
    return {"width": CHART_BUCKETS * (width + gap), "height": height, "bars": bars, "total": total}


class Pages:
    """The page handlers of one console."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._server = console.server
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters.update(
            utc=lambda ts: utc_text(when(ts)),
            size=size_text,
            cadence=cadence_words,  # the cron in words, as the CLI says it
            status=status_word,
            operation=operation_word,
            action=lambda a: pb.TableAction.Name(a).removeprefix("TABLE_ACTION_").lower(),
        )

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/", self._page(self.overview)),
            web.get("/jobs", self._page(self.jobs)),
            web.get("/jobs/{id}", self._page(self.parent)),
            web.get("/jobs/{id}/cancel", self._page(self.cancel_form)),
            web.post("/jobs/{id}/cancel", self._page(self.cancel)),
            web.get("/workers", self._page(self.workers)),
            web.get("/workers/{id}/drain", self._page(self.drain_form)),
            web.post("/workers/{id}/drain", self._page(self.drain)),
            web.get("/schedules", self._page(self.schedules)),
            web.get("/schedules/{id}", self._page(self.schedule)),
            web.post("/schedules/{id}/{action:pause|resume|run}", self._page(self.schedule_action)),
            web.static("/static", STATIC_DIR, append_version=False),
        ]

    def _page(self, handler: Page) -> Page:
        async def page(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ApiError as error:
                status = {
                    grpc.StatusCode.NOT_FOUND: 404,
                    grpc.StatusCode.INVALID_ARGUMENT: 400,
                    grpc.StatusCode.FAILED_PRECONDITION: 409,
                }.get(error.code, 503)
                return self.render(request, "error.html", http_status=status, title="Error", error=error)

        return page

    # -- shared

    def _servicers(self) -> RoleServicers:
        return current_servicers(self._server)

    def _writes(self) -> tuple[MaintenanceServicer, ScheduleServicer]:
        return current_writes(self._server)

    def leader_url(self, request: web.Request) -> str:
        """The same path on the leader's console (its advertised host, this console's port and scheme)."""
        leader = self._server.leader_hint
        if not leader:
            return ""
        host = leader.rpartition(":")[0] or leader
        return f"{self._console.scheme}://{host}:{self._console.port}{request.path_qs}"

    def render(self, request: web.Request, template: str, http_status: int = 200, **context: Any) -> web.Response:
        who = self._console.principal(request)
        session, opened = self._console.page_session(who)
        leading = self._server.leading
        context.setdefault("title", "dbmaint")
        text = self._env.get_template(template).render(
            role="leader" if leading else "standby",
            leading=leading,
            readonly=who.role is not Role.CLIENT,
            can_act=leading and who.role is Role.CLIENT,
            leader=self._server.leader_hint,
            leader_url=self.leader_url(request) if not leading else "",
            csrf=session.csrf_token if session is not None else "",
            csrf_field=security.CSRF_FIELD,
            path=request.path,
            auth_enabled=self._server.config.auth.enabled,
            **context,
        )
        response = web.Response(text=text, status=http_status, content_type="text/html")
        if opened and session is not None:
            self._console.set_session_cookie(response, session)
        return response

    async def _all_children(self, job_id: str) -> tuple[pb.Job, list[pb.Job]]:
        servicer = self._servicers().maintenance
        token, children = "", list[pb.Job]()
        while True:
            answer = await call(
                servicer.GetJob,
                pb.GetJobRequest(id=job_id, children_page_size=CHILDREN_PAGE, children_page_token=token),
            )
            assert isinstance(answer, pb.GetJobResponse)
            children += answer.children
            token = answer.next_children_page_token
            if not token:
                return answer.job, children

    async def _job(self, job_id: str) -> pb.Job:
        servicer = self._servicers().maintenance
        answer = await call(servicer.GetJob, pb.GetJobRequest(id=job_id, children_page_size=1))
        assert isinstance(answer, pb.GetJobResponse)
        return answer.job

    async def _workers(self) -> pb.ListWorkersResponse:
        answer = await call(self._servicers().maintenance.ListWorkers, pb.ListWorkersRequest())
        assert isinstance(answer, pb.ListWorkersResponse)
        return answer

    async def _list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        answer = await call(self._servicers().maintenance.ListJobs, request)
        assert isinstance(answer, pb.ListJobsResponse)
        return answer

    async def _schedules(self) -> list[spb.Schedule]:
        servicer = self._servicers().schedules
        token, found = "", list[spb.Schedule]()
        while True:
            answer = await call(servicer.ListSchedules, spb.ListSchedulesRequest(page_size=100, page_token=token))
            assert isinstance(answer, spb.ListSchedulesResponse)
            found += answer.schedules
            token = answer.next_page_token
            if not token:
                return found

    def _worker_rows(self, listed: pb.ListWorkersResponse) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = []
        for worker in listed.workers:
            beat = when(worker.last_heartbeat)
            rows.append(
                {
                    "worker": worker,
                    "busy": len(worker.running_job_ids),
                    "age": seconds_text((now - beat).total_seconds()) if beat is not None else "never",
                }
            )
        return rows

    # -- pages

    async def overview(self, request: web.Request) -> web.StreamResponse:
        running = await self._list_jobs(
            pb.ListJobsRequest(type=PARENT_JOB_TYPE, status=pb.JOB_STATUS_RUNNING, page_size=JOBS_PAGE)
        )
        recent = await self._list_jobs(pb.ListJobsRequest(type=PARENT_JOB_TYPE, page_size=1000))
        pending = await self._list_jobs(pb.ListJobsRequest(status=pb.JOB_STATUS_PENDING, page_size=1000))
        waiting: dict[str, set[str]] = {}
        for job in pending.jobs:
            if job.type != PARENT_JOB_TYPE and job.target:
                waiting.setdefault(job.target, set()).add(job.waiting_reason or "waiting for a free worker slot")
        listed = await self._workers()
        for target in listed.unserved_targets:
            if target not in waiting:  # a waiting child already says why, in the words of the dispatcher
                waiting[target] = {"unserved: no connected worker serves it"}
        schedules = [s for s in await self._schedules() if not s.paused and when(s.next_fire_time) is not None]
        schedules.sort(key=lambda s: s.next_fire_time.ToNanoseconds())
        return self.render(
            request,
            "overview.html",
            title="Overview",
            running=running.jobs,
            workers=self._worker_rows(listed),
            waiting=sorted((target, sorted(reasons)) for target, reasons in waiting.items()),
            firings=[
                {"schedule": s, "zone": in_zone(when(s.next_fire_time), s.time_zone)} for s in schedules[:10]
            ],
            chart=chart(recent.jobs, datetime.now(UTC)),
            statuses=STATUSES,
        )

    async def jobs(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        filters = {
            key: query.get(key, "").strip()
            for key in ("status", "target", "operation", "schedule", "created_after", "created_before")
        }
        status = filters["status"]
        if status and status not in STATUSES:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"no such status: {status[:20]!r}")
        after, before = parse_day(filters["created_after"]), parse_day(filters["created_before"])
        size_text_ = query.get("page_size", "")
        page_size = min(int(size_text_), MAX_JOBS_PAGE) if size_text_.isdigit() and int(size_text_) else JOBS_PAGE
        listed = await self._list_jobs(
            pb.ListJobsRequest(
                type=PARENT_JOB_TYPE,
                status=f"JOB_STATUS_{status.upper()}" if status else None,
                schedule_id=filters["schedule"],
                page_size=page_size,
                page_token=query.get("page_token", ""),
            )
        )
        rows = []
        for job in listed.jobs:
            created = when(job.created_at)
            if filters["target"] and not (
                config_mentions(job.config, "targets", filters["target"]) or filters["target"] in job.target
            ):
                continue
            if filters["operation"] and not config_mentions(job.config, "operations", filters["operation"]):
                continue
            if after is not None and (created is None or created < after):
                continue
            if before is not None and (created is None or created >= before):
                continue
            rows.append(job)
        next_page = ""
        if listed.next_page_token:
            kept = {key: value for key, value in filters.items() if value}
            if page_size != JOBS_PAGE:
                kept["page_size"] = str(page_size)
            next_page = str(request.url.with_query({**kept, "page_token": listed.next_page_token}).relative())
        return self.render(
            request, "jobs.html", title="Jobs", jobs=rows, filters=filters, statuses=STATUSES, next_page=next_page
        )

    async def parent(self, request: web.Request) -> web.StreamResponse:
        # Where the page's live updates begin, read BEFORE the job: a change committed between the two is sent
        # again (the script keeps the newest version), never lost.
        servicers = self._server.servicers
        since = await servicers.changes.last_change_seq() if servicers is not None else 0
        job, children = await self._all_children(request.match_info["id"])
        views = [child_view(child) for child in children]
        targets, operations, cells = grid(views)
        progress = job.progress
        done = progress.succeeded + progress.failed + progress.cancelled
        return self.render(
            request,
            "parent.html",
            title=f"Job {job.id}",
            job=job,
            status=status_word(job.status),
            terminal=status_word(job.status) in TERMINAL,
            children=views,
            targets=targets,
            operations=operations,
            cells=cells,
            done=done,
            reclaimed=sum(view.reclaimed for view in views),
            page_attrs={"page": "parent", "job-id": job.id, "since": since},
        )

    async def cancel_form(self, request: web.Request) -> web.StreamResponse:
        job = await self._job(request.match_info["id"])
        return self.render(
            request,
            "confirm.html",
            title=f"Cancel {job.id}",
            question=f"Cancel job {job.id} and every child not finished yet?",
            action=f"/jobs/{job.id}/cancel",
            button_id="confirm-cancel",
            button="Cancel the job",
            back=f"/jobs/{job.id}",
        )

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        maintenance, _ = self._writes()
        job_id = request.match_info["id"]
        reason = str(form.get("reason", "")).strip() or "cancelled from the web console"
        await call(maintenance.CancelJob, pb.CancelJobRequest(id=job_id, reason=reason[:500]))
        raise web.HTTPSeeOther(f"/jobs/{job_id}")

    async def workers(self, request: web.Request) -> web.StreamResponse:
        listed = await self._workers()
        return self.render(
            request,
            "workers.html",
            title="Workers",
            workers=self._worker_rows(listed),
            unserved=list(listed.unserved_targets),
        )

    async def drain_form(self, request: web.Request) -> web.StreamResponse:
        worker_id = request.match_info["id"]
        listed = await self._workers()
        if not any(worker.worker_id == worker_id for worker in listed.workers):
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no connected worker {worker_id[:80]!r}")
        return self.render(
            request,
            "confirm.html",
            title=f"Drain {worker_id}",
            question=f"Drain worker {worker_id}? It finishes what it runs and takes nothing new.",
            action=f"/workers/{worker_id}/drain",
            button_id="confirm-drain",
            button="Drain the worker",
            back="/workers",
        )

    async def drain(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        maintenance, _ = self._writes()
        reason = str(form.get("reason", "")).strip() or "drained from the web console"
        await call(
            maintenance.DrainWorker, pb.DrainWorkerRequest(worker_id=request.match_info["id"], reason=reason[:500])
        )
        raise web.HTTPSeeOther("/workers")

    async def schedules(self, request: web.Request) -> web.StreamResponse:
        rows = [
            {
                "schedule": s,
                "zone": in_zone(when(s.next_fire_time), s.time_zone),
                "utc": utc_text(when(s.next_fire_time)),
            }
            for s in await self._schedules()
        ]
        return self.render(request, "schedules.html", title="Schedules", schedules=rows)

    async def schedule(self, request: web.Request) -> web.StreamResponse:
        servicer = self._servicers().schedules
        schedule_id = request.match_info["id"]
        got = await call(servicer.GetSchedule, spb.GetScheduleRequest(id=schedule_id))
        assert isinstance(got, spb.GetScheduleResponse)
        firings = await call(
            servicer.ListFirings,
            spb.ListFiringsRequest(
                schedule_id=schedule_id, page_size=100, page_token=request.query.get("page_token", "")
            ),
        )
        assert isinstance(firings, spb.ListFiringsResponse)
        s = got.schedule
        return self.render(
            request,
            "schedule.html",
            title=f"Schedule {s.id}",
            schedule=s,
            zone=in_zone(when(s.next_fire_time), s.time_zone),
            utc=utc_text(when(s.next_fire_time)),
            firings=[
                {"firing": f, "outcome": spb.FiringOutcome.Name(f.outcome).removeprefix("FIRING_OUTCOME_").lower()}
                for f in firings.firings
            ],
            next_page=f"?page_token={firings.next_page_token}" if firings.next_page_token else "",
        )

    async def schedule_action(self, request: web.Request) -> web.StreamResponse:
        await request.post()
        _, servicer = self._writes()
        schedule_id, action = request.match_info["id"], request.match_info["action"]
        if action == "run":
            await call(servicer.TriggerSchedule, spb.TriggerScheduleRequest(id=schedule_id))
        else:
            await call(
                servicer.UpdateSchedule,
                spb.UpdateScheduleRequest(
                    schedule=spb.Schedule(id=schedule_id, paused=action == "pause"),
                    update_mask=field_mask_pb2.FieldMask(paths=["paused"]),
                ),
            )
        raise web.HTTPSeeOther(f"/schedules/{schedule_id}")
