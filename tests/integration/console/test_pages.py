"""The console's pages on a real manager (SQLite store), through its real port: each page renders for a client
and for a read-only login (which sees no action at all), carries the ids the browser tests rely on, keeps to the
CSP (no inline script, no style attribute), and the confirmations change state only by a POST with CSRF."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from dbmaint.auth import bearer_metadata
from dbmaint.cron_words import describe
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from manager_service.console.security import CSRF_FIELD
from tests.integration.console.support import (
    CLIENT_TOKEN,
    READONLY_TOKEN,
    TOKENS,
    WORKER_TOKEN,
    Console,
    console,
)
from tests.support.manager import FakeWorker
from tests.support.polling import eventually
from tests.support.servers import fresh_postgres_database

GRPC = bearer_metadata(CLIENT_TOKEN)
PAGES = ("/", "/jobs", "/workers", "/schedules")
ACTION_IDS = ('id="cancel"', 'id="drain"', 'id="pause"', 'id="resume"', 'id="run"')
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)


class AuthorizedWorker(FakeWorker):
    """A fake worker that presents the worker token (the manager under test has tokens configured)."""

    async def open(self, first: pb.WorkerMessage | None = None) -> None:
        self.call = self.stub.Connect(metadata=bearer_metadata(WORKER_TOKEN))
        await self.write(first if first is not None else self.hello())
        self._reader = asyncio.create_task(self._read())


@asynccontextmanager
async def logged_in(c: Console, token: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with c.client() as http:
        async with http.post("/login", data={"token": token}, allow_redirects=False) as response:
            assert response.status == 303
        yield http


async def page(http: aiohttp.ClientSession, path: str, status: int = 200) -> str:
    async with http.get(path, allow_redirects=False) as response:
        text = await response.text()
        assert response.status == status, (path, response.status, text[:500])
        return text


def csrf_of(html: str) -> str:
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', html) or re.search(
        r'<meta name="csrf-token" content="([^"]+)">', html
    )
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def assert_csp_safe(path: str, html: str) -> None:
    assert INLINE_SCRIPT.search(html) is None, f"{path} has an inline <script>"
    assert ' style="' not in html, f"{path} has a style attribute"
    assert EVENT_HANDLER.search(html) is None, f"{path} has an on*= handler"
    assert '<script src="/static/console.js" defer></script>' in html


def assert_nav(path: str, html: str, role: str = "leader") -> None:
    for link in ('href="/"', 'href="/jobs"', 'href="/workers"', 'href="/schedules"'):
        assert link in html, (path, link)
    assert f'id="role">{role}<' in html, path


async def fleet(c: Console) -> tuple[pb.CreateMaintenanceResponse, FakeWorker]:
    """A parent over two targets (analyze and vacuum each), a schedule, and a connected worker."""
    created = await c.manager.api.CreateMaintenance(
        pb.CreateMaintenanceRequest(
            targets=["db1", "db2"], operations=[pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE]
        ),
        metadata=GRPC,
    )
    await spb_grpc.ScheduleServiceStub(c.manager.channel).CreateSchedule(
        spb.CreateScheduleRequest(
            schedule=spb.Schedule(
                id="nightly",
                cron="0 3 * * *",
                time_zone="Europe/Paris",
                maintenance=pb.CreateMaintenanceRequest(targets=["db1"]),
            )
        ),
        metadata=GRPC,
    )
    worker = AuthorizedWorker(c.manager.channel, "w1", ["elsewhere"], slots=2)
    c.manager.workers.append(worker)
    await worker.connect()
    return created, worker


async def test_every_page_renders_for_a_client_with_the_contract_ids_and_no_inline_code(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, logged_in(c, CLIENT_TOKEN) as http:
        created, _ = await fleet(c)
        parent_id = created.parent.id
        for path in (*PAGES, f"/jobs/{parent_id}", "/schedules/nightly"):
            html = await page(http, path)
            assert_csp_safe(path, html)
            assert_nav(path, html)

        parent = await page(http, f"/jobs/{parent_id}")
        assert f'data-page="parent" data-job-id="{parent_id}"' in parent
        assert 'id="parent-status" class="status" data-status="pending">pending<' in parent
        assert '<table id="grid"' in parent
        assert len(created.children) == 4
        for child in created.children:
            assert f'<td data-child="{child.id}" data-status="pending">pending</td>' in parent
        assert re.search(r"<th scope=\"col\">vacuum</th>", parent) and '<th scope="row">db2</th>' in parent
        assert f'id="cancel" href="/jobs/{parent_id}/cancel"' in parent
        assert 'id="reclaimed" data-bytes="0"' in parent

        jobs = await page(http, "/jobs")
        assert '<table id="jobs">' in jobs and f'<tr data-job="{parent_id}">' in jobs

        workers = await page(http, "/workers")
        assert '<table id="workers">' in workers and '<tr data-worker="w1">' in workers
        assert 'id="drain" href="/workers/w1/drain"' in workers
        assert "0/2" in workers

        overview = await page(http, "/")
        assert '<svg class="chart"' in overview and 'class="bar s-pending"' in overview
        assert '<tr data-worker="w1">' in overview
        assert "<strong>db1</strong>" in overview  # waiting: no connected worker serves it
        assert 'href="/schedules/nightly"' in overview and "Europe/Paris" in overview

        schedules = await page(http, "/schedules")
        assert '<tr data-schedule="nightly">' in schedules and "<code>0 3 * * *</code>" in schedules
        assert describe("0 3 * * *") in schedules and describe("0 3 * * *") != "0 3 * * *"  # the cron in words
        assert re.search(r"\d{4}-\d\d-\d\d 03:00:00 Europe/Paris", schedules)
        assert "UTC" in schedules
        schedule = await page(http, "/schedules/nightly")
        assert 'id="pause"' in schedule and 'id="run"' in schedule and 'id="resume"' not in schedule


async def test_a_readonly_login_reads_every_page_but_sees_no_action(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, logged_in(c, READONLY_TOKEN) as http:
        created, _ = await fleet(c)
        parent_id = created.parent.id
        for path in (*PAGES, f"/jobs/{parent_id}", "/schedules/nightly"):
            html = await page(http, path)
            assert_csp_safe(path, html)
            assert_nav(path, html)
            assert "read-only" in html
            for action in ACTION_IDS:
                assert action not in html, (path, action)
        assert f'<td data-child="{created.children[0].id}"' in await page(http, f"/jobs/{parent_id}")
        assert '<tr data-worker="w1">' in await page(http, "/workers")
        confirm = await page(http, f"/jobs/{parent_id}/cancel")
        assert 'id="confirm-cancel"' not in confirm
        csrf = csrf_of(confirm)  # the logout form's: a read-only session's token still cannot cancel
        async with http.post(f"/jobs/{parent_id}/cancel", data={CSRF_FIELD: csrf}, allow_redirects=False) as r:
            assert r.status == 403
        job = await c.manager.api.GetJob(pb.GetJobRequest(id=parent_id), metadata=GRPC)
        assert not job.job.cancel_requested and job.job.status == pb.JOB_STATUS_PENDING


async def test_a_page_without_a_login_sends_to_the_login_form(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        for path in PAGES:
            async with http.get(path, allow_redirects=False) as response:
                assert response.status == 303 and response.headers["Location"] == "/login"


async def test_cancel_asks_for_confirmation_then_cancels_by_a_post_with_the_csrf_token(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, logged_in(c, CLIENT_TOKEN) as http:
        created = await c.manager.api.CreateMaintenance(
            pb.CreateMaintenanceRequest(targets=["db1", "db2"]), metadata=GRPC
        )
        parent_id = created.parent.id

        async def waiting() -> bool:  # the dispatcher says why the children wait: no worker serves db1, db2
            got = await c.manager.api.GetJob(pb.GetJobRequest(id=parent_id), metadata=GRPC)
            return all(child.waiting_reason for child in got.children)

        await eventually(waiting, message="the children have a waiting reason")
        assert "Waiting:" in await page(http, f"/jobs/{parent_id}")
        confirm = await page(http, f"/jobs/{parent_id}/cancel")
        assert_csp_safe("confirm", confirm)
        assert f'<form method="post" action="/jobs/{parent_id}/cancel"' in confirm
        assert 'id="confirm-cancel"' in confirm
        still = await c.manager.api.GetJob(pb.GetJobRequest(id=parent_id), metadata=GRPC)
        assert (
            still.job.status == pb.JOB_STATUS_PENDING and not still.job.cancel_requested
        )  # a GET changes nothing

        async with http.post(f"/jobs/{parent_id}/cancel", data={"reason": "x"}, allow_redirects=False) as r:
            assert r.status == 403  # no CSRF token
        async with http.post(
            f"/jobs/{parent_id}/cancel", data={CSRF_FIELD: "wrong"}, allow_redirects=False
        ) as response:
            assert response.status == 403
        still = await c.manager.api.GetJob(pb.GetJobRequest(id=parent_id), metadata=GRPC)
        assert not still.job.cancel_requested

        async with http.get(f"/jobs/{parent_id}/cancel") as response:
            # A browser sends "Origin: null" on a form POST under "no-referrer", and the console refuses that
            assert response.headers["Referrer-Policy"] == "same-origin"
        async with http.post(
            f"/jobs/{parent_id}/cancel", data={CSRF_FIELD: csrf_of(confirm)}, headers={"Origin": "null"}
        ) as response:
            assert response.status == 403  # an opaque origin is not this console
        async with http.post(
            f"/jobs/{parent_id}/cancel",
            data={CSRF_FIELD: csrf_of(confirm), "reason": "wrong day"},
            headers={"Origin": c.url},
            allow_redirects=False,
        ) as response:
            assert response.status == 303 and response.headers["Location"] == f"/jobs/{parent_id}"
        done = await c.manager.api.GetJob(pb.GetJobRequest(id=parent_id), metadata=GRPC)
        assert done.job.status == pb.JOB_STATUS_CANCELLED
        after = await page(http, f"/jobs/{parent_id}")
        assert 'id="parent-status" class="status" data-status="cancelled"' in after
        assert 'id="cancel"' not in after  # a finished parent has nothing to cancel
        assert "Waiting:" not in after  # a finished child waits for nothing, whatever reason it last had
        for child in done.children:
            assert f'<td data-child="{child.id}" data-status="cancelled">cancelled</td>' in after


async def test_drain_asks_for_confirmation_then_drains_the_worker_by_a_post(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, logged_in(c, CLIENT_TOKEN) as http:
        worker = AuthorizedWorker(c.manager.channel, "w1", ["db1"], slots=1)
        c.manager.workers.append(worker)
        await worker.connect()
        confirm = await page(http, "/workers/w1/drain")
        assert 'id="confirm-drain"' in confirm and '<form method="post" action="/workers/w1/drain"' in confirm
        await page(http, "/workers/nobody/drain", status=404)
        async with http.post(
            "/workers/w1/drain", data={CSRF_FIELD: csrf_of(confirm)}, allow_redirects=False
        ) as response:
            assert response.status == 303 and response.headers["Location"] == "/workers"
        listed = await c.manager.api.ListWorkers(pb.ListWorkersRequest(), metadata=GRPC)
        assert [w.draining for w in listed.workers if w.worker_id == "w1"] == [True]
        after = await page(http, "/workers")
        assert '<span class="badge draining">draining</span>' in after and 'id="drain"' not in after


async def test_schedule_forms_pause_resume_and_run_now(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, logged_in(c, CLIENT_TOKEN) as http:
        await fleet(c)
        schedules = spb_grpc.ScheduleServiceStub(c.manager.channel)
        html = await page(http, "/schedules/nightly")
        csrf = csrf_of(html)
        async with http.post("/schedules/nightly/pause", data={CSRF_FIELD: csrf}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/schedules/nightly"
        got = await schedules.GetSchedule(spb.GetScheduleRequest(id="nightly"), metadata=GRPC)
        assert got.schedule.paused
        paused = await page(http, "/schedules/nightly")
        assert 'id="resume"' in paused and 'id="pause"' not in paused
        async with http.post("/schedules/nightly/resume", data={CSRF_FIELD: csrf}, allow_redirects=False) as r:
            assert r.status == 303
        got = await schedules.GetSchedule(spb.GetScheduleRequest(id="nightly"), metadata=GRPC)
        assert not got.schedule.paused
        async with http.post("/schedules/nightly/run", data={CSRF_FIELD: csrf}, allow_redirects=False) as r:
            assert r.status == 303
        history = await page(http, "/schedules/nightly")
        fired = await c.manager.api.ListJobs(pb.ListJobsRequest(schedule_id="nightly"), metadata=GRPC)
        parents = [job.id for job in fired.jobs if not job.parent_id]
        assert len(parents) == 1 and f'href="/jobs/{parents[0]}"' in history
        assert ">fired<" in history


async def test_the_jobs_page_filters_and_pages_by_page_token(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, logged_in(c, CLIENT_TOKEN) as http:
        ids = []
        for target in ("alpha", "beta", "gamma"):
            created = await c.manager.api.CreateMaintenance(
                pb.CreateMaintenanceRequest(targets=[target]), metadata=GRPC
            )
            ids.append(created.parent.id)
        first = await page(http, "/jobs?page_size=2")
        rows = re.findall(r'<tr data-job="([^"]+)">', first)
        assert len(rows) == 2
        link = re.search(r'<a href="([^"]+)" rel="next" id="next-page">Next page</a>', first)
        assert link is not None and "page_token=" in link.group(1)
        second = await page(http, link.group(1).replace("&amp;", "&"))
        rest = re.findall(r'<tr data-job="([^"]+)">', second)
        assert sorted(rows + rest) == sorted(ids) and "Next page" not in second

        assert re.findall(r'<tr data-job="([^"]+)">', await page(http, "/jobs?target=beta")) == [ids[1]]
        assert re.findall(r'<tr data-job="([^"]+)">', await page(http, "/jobs?status=running")) == []
        assert len(re.findall(r'<tr data-job="', await page(http, "/jobs?status=pending"))) == 3
        assert re.findall(r'<tr data-job="', await page(http, "/jobs?created_after=2999-01-01T00:00")) == []
        await page(http, "/jobs?status=sleeping", status=400)


async def test_static_files_are_served_without_a_login(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        async with http.get("/static/console.css") as response:
            assert response.status == 200 and response.content_type == "text/css"
            assert "prefers-color-scheme: dark" in await response.text()
        async with http.get("/static/console.js") as response:
            assert response.status == 200 and response.content_type in (
                "application/javascript",
                "text/javascript",
            )
            script = await response.text()
        assert 'new EventSource("/api/v1/events"' in script
        assert "parent-status" in script and "data-child" in script and '"reset"' in script
        async with http.get("/static/app.py", allow_redirects=False) as response:
            assert response.status == 404  # only the static folder is served
        login = await page(http, "/login")
        assert '<link rel="stylesheet" href="/static/console.css">' in login


async def test_a_missing_job_is_a_404_page(tmp_path: Path) -> None:
    async with console(tmp_path) as c, c.client() as http:
        html = await page(http, "/jobs/00000000-0000-0000-0000-000000000000", status=404)
        assert 'class="error"' in html and "<nav" in html  # the servicer's NOT_FOUND, as a page
        assert 'action="/logout"' not in html  # with auth off there is nobody to log out


async def test_the_parent_page_shows_each_childs_worker_attempt_bytes_reports_and_errors(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, logged_in(c, CLIENT_TOKEN) as http:
        worker = AuthorizedWorker(c.manager.channel, "w1", ["db1", "db2"], slots=2)
        c.manager.workers.append(worker)
        await worker.connect()
        created = await c.manager.api.CreateMaintenance(
            pb.CreateMaintenanceRequest(targets=["db1", "db2"], operations=[pb.OPERATION_VACUUM]), metadata=GRPC
        )
        first, second = await worker.wait_assignments(2)
        running = await page(http, f"/jobs/{created.parent.id}")
        assert 'id="parent-status" class="status" data-status="running"' in running
        assert f'<td data-child="{first.job_id}" data-status="running">running</td>' in running
        worker.outstanding.pop(first.job_id, None)
        await worker.write(
            pb.WorkerMessage(
                result=pb.Result(
                    job_id=first.job_id,
                    attempt=first.attempt,
                    status=pb.JOB_STATUS_COMPLETED,
                    result=pb.OperationResult(
                        engine="postgres",
                        bytes_before=3 * 1024 * 1024,
                        bytes_after=1024 * 1024,
                        tables=[
                            pb.TableReport(
                                schema="public",
                                table="orders",
                                action=pb.TABLE_ACTION_VACUUM,
                                reasons=["dead tuples 40% > 20%"],
                                evidence={"dead_ratio": 0.4},
                            )
                        ],
                    ),
                )
            )
        )
        await worker.send_result(second.job_id, second.attempt, "failed", error="lock timeout on <orders>")

        async def parent_failed() -> bool:
            job = await c.manager.api.GetJob(pb.GetJobRequest(id=created.parent.id), metadata=GRPC)
            return bool(job.job.status == pb.JOB_STATUS_FAILED)

        await eventually(parent_failed, message="the parent fails")
        html = await page(http, f"/jobs/{created.parent.id}")
        assert 'id="parent-status" class="status" data-status="failed"' in html
        assert f'<td data-child="{first.job_id}" data-status="completed">completed</td>' in html
        assert f'<td data-child="{second.job_id}" data-status="failed">failed</td>' in html
        assert 'id="reclaimed" data-bytes="2097152">2.0 MiB<' in html
        assert "3.0 MiB" in html and "1.0 MiB" in html
        assert "lock timeout on &lt;orders&gt;" in html  # autoescaped
        assert "<td>w1</td>" in html and "<td>1/" in html
        assert 'id="cancel"' not in html
        assert f'href="/jobs/{first.job_id}"' in html
        child = await page(http, f"/jobs/{first.job_id}")  # the per-table reports: GetJob of the child has them
        assert_csp_safe("child", child)
        assert 'id="parent-status" class="status" data-status="completed"' in child
        assert "public.orders" in child and "dead tuples 40% &gt; 20%" in child and "dead_ratio=0.4" in child
        assert "<td>vacuum</td>" in child and "<dd>postgres</dd>" in child


async def test_a_standby_shows_its_role_and_links_every_action_to_the_leader(tmp_path: Path) -> None:
    with fresh_postgres_database("dbmaint_pages_standby") as url:
        database_url = url.render_as_string(hide_password=False)
        async with (
            console(tmp_path / "a", database_url=database_url, store_lease=3.0) as leader,
            console(tmp_path / "b", database_url=database_url, store_lease=3.0) as standby,
            standby.client() as http,
        ):
            assert leader.manager.server.leading and not standby.manager.server.leading
            created = await leader.manager.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["db1"]))
            parent_id = created.parent.id
            await spb_grpc.ScheduleServiceStub(leader.manager.channel).CreateSchedule(
                spb.CreateScheduleRequest(
                    schedule=spb.Schedule(
                        id="nightly", cron="0 3 * * *", maintenance=pb.CreateMaintenanceRequest(targets=["db1"])
                    )
                )
            )
            leader_address = leader.manager.server.advertised_address
            leader_host = leader_address.rpartition(":")[0]
            for path in (*PAGES, f"/jobs/{parent_id}", "/schedules/nightly", f"/jobs/{parent_id}/cancel"):
                html = await page(http, path)
                assert_csp_safe(path, html)
                assert_nav(path, html, role="standby")
                assert (
                    f'act on the leader at <a href="http://{leader_host}:{standby.manager.server.http_port}{path}">{leader_address}</a>'
                    in html
                ), path
                for action in (*ACTION_IDS, 'id="confirm-cancel"'):
                    assert action not in html, (path, action)
            parent = await page(http, f"/jobs/{parent_id}")
            assert f'<td data-child="{created.children[0].id}" data-status="pending">' in parent
            async with http.post(
                f"/jobs/{parent_id}/cancel", data={CSRF_FIELD: csrf_of(parent)}, allow_redirects=False
            ) as response:
                assert response.status == 503
                assert f"act on the leader at {leader_address}" in await response.text()
            job = await leader.manager.api.GetJob(pb.GetJobRequest(id=parent_id))
            assert not job.job.cancel_requested


async def test_a_parent_of_10000_children_shows_every_child_in_its_grid(tmp_path: Path) -> None:
    async with console(tmp_path, max_targets=2500) as c, c.client() as http:
        created = await c.manager.api.CreateMaintenance(
            pb.CreateMaintenanceRequest(
                targets=[f"db{index:04}" for index in range(2500)],
                operations=[
                    pb.OPERATION_VACUUM,
                    pb.OPERATION_ANALYZE,
                    pb.OPERATION_REINDEX,
                    pb.OPERATION_OPTIMIZE,
                ],
            )
        )
        started = time.perf_counter()
        html = await page(http, f"/jobs/{created.parent.id}")
        print(f"10,000-child parent page: {len(html) / 1e6:.1f} MB in {time.perf_counter() - started:.2f} s")
        cells = re.findall(r'<td data-child="([^"]+)" data-status="pending">pending</td>', html)
        assert len(cells) == len(set(cells)) == 10_000  # more than one page of children (5000 a page)
        assert '<th scope="row">db2499</th>' in html
