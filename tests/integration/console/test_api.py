"""The JSON API on a real manager (SQLite store), through its real port: every endpoint answers what its RPC
answers, in the protobuf JSON mapping, pages through page_token, and errors as {"code", "message"}."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from google.protobuf import json_format

from dbmaint.auth import bearer_metadata
from dbmaint.operations import PARENT_JOB_TYPE
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import schedules_pb2 as spb
from dbmaint.v1 import schedules_pb2_grpc as spb_grpc
from tests.integration.console.support import CLIENT_TOKEN, TOKENS, Console, bearer, console
from tests.support.manager import running_manager

SCRIPT = bearer(CLIENT_TOKEN)
GRPC = bearer_metadata(CLIENT_TOKEN)


async def get(http: aiohttp.ClientSession, path: str, **params: Any) -> tuple[int, Any]:
    async with http.get(path, params=params, headers=SCRIPT) as response:
        return response.status, await response.json()


async def post(http: aiohttp.ClientSession, path: str, body: Any = None) -> tuple[int, Any]:
    async with http.post(path, json=body, headers=SCRIPT) as response:
        return response.status, await response.json()


async def parents(c: Console, count: int) -> list[str]:
    ids = []
    for index in range(count):
        created = await c.manager.api.CreateMaintenance(
            pb.CreateMaintenanceRequest(targets=[f"db{index}"]), metadata=GRPC
        )
        ids.append(created.parent.id)
    return ids


def as_json(message: Any) -> Any:
    return json_format.MessageToDict(message)


async def test_jobs_are_listed_as_list_jobs_answers_them_and_paged_by_page_token(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        ids = await parents(c, 3)
        status, first = await get(http, "/api/v1/jobs", type=PARENT_JOB_TYPE, page_size="2")
        assert status == 200
        rpc = await c.manager.api.ListJobs(pb.ListJobsRequest(type=PARENT_JOB_TYPE, page_size=2), metadata=GRPC)
        assert first == as_json(rpc)
        assert len(first["jobs"]) == 2 and first["nextPageToken"]
        status, second = await get(http, "/api/v1/jobs", type=PARENT_JOB_TYPE, pageToken=first["nextPageToken"])
        assert status == 200
        assert "nextPageToken" not in second
        seen = [job["id"] for job in first["jobs"] + second["jobs"]]
        assert sorted(seen) == sorted(ids)
        status, running = await get(http, "/api/v1/jobs", status="JOB_STATUS_RUNNING")
        assert status == 200 and running == {}


async def test_a_job_is_answered_as_get_job_answers_it_with_its_children_paged(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        created = await c.manager.api.CreateMaintenance(
            pb.CreateMaintenanceRequest(targets=["db1", "db2", "db3"]), metadata=GRPC
        )
        path = f"/api/v1/jobs/{created.parent.id}"
        status, first = await get(http, path, children_page_size="2")
        assert status == 200
        rpc = await c.manager.api.GetJob(
            pb.GetJobRequest(id=created.parent.id, children_page_size=2), metadata=GRPC
        )
        assert first == as_json(rpc)
        assert first["job"]["id"] == created.parent.id and len(first["children"]) == 2
        children = [child["id"] for child in first["children"]]
        page = first
        while "nextChildrenPageToken" in page:
            status, page = await get(
                http, path, children_page_size="2", children_page_token=page["nextChildrenPageToken"]
            )
            assert status == 200 and 1 <= len(page["children"]) <= 2
            children += [child["id"] for child in page["children"]]
        assert len(created.children) > 4  # three pages at least
        assert sorted(children) == sorted(child.id for child in created.children)


async def test_errors_carry_the_grpc_code_and_its_http_status(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        status, body = await get(http, "/api/v1/jobs/0123456789abcdef0123456789abcdef")
        assert (status, body["code"]) == (404, "NOT_FOUND") and body["message"]
        status, body = await get(http, "/api/v1/jobs", page_size="-1")
        assert (status, body["code"]) == (400, "INVALID_ARGUMENT") and "page_size" in body["message"]
        status, body = await get(http, "/api/v1/jobs", colour="red")
        assert (status, body["code"]) == (400, "INVALID_ARGUMENT") and "colour" in body["message"]
        status, body = await get(http, "/api/v1/jobs", page_size="many")
        assert (status, body["code"]) == (400, "INVALID_ARGUMENT")
        status, body = await post(http, "/api/v1/jobs/0123456789abcdef0123456789abcdef/cancel")
        assert (status, body["code"]) == (404, "NOT_FOUND")
        status, body = await post(http, "/api/v1/jobs/x/cancel", {"why": "no such field"})
        assert (status, body["code"]) == (400, "INVALID_ARGUMENT")


async def test_a_cancel_through_the_api_cancels_the_job_with_its_reason(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        [parent_id] = await parents(c, 1)
        status, body = await post(http, f"/api/v1/jobs/{parent_id}/cancel", {"reason": "from the console"})
        assert status == 200
        assert body["job"]["id"] == parent_id and body["job"]["status"] == "JOB_STATUS_CANCELLED"
        job = await c.manager.api.GetJob(pb.GetJobRequest(id=parent_id), metadata=GRPC)
        assert job.job.status == pb.JOB_STATUS_CANCELLED
        status, body = await post(http, f"/api/v1/jobs/{parent_id}/cancel")
        assert status == 409 and body["code"] == "FAILED_PRECONDITION"


async def test_workers_are_listed_and_a_drain_drains_one(tmp_path: Path) -> None:
    async with console(tmp_path) as c, c.client() as http:
        await c.manager.connected_worker("w1", ["db1"], slots=2)
        status, body = await get(http, "/api/v1/workers")
        assert status == 200
        assert body == as_json(await c.manager.api.ListWorkers(pb.ListWorkersRequest()))
        assert [worker["workerId"] for worker in body["workers"]] == ["w1"]
        assert not body["workers"][0].get("draining", False)
        status, body = await post(http, "/api/v1/workers/w1/drain", {"reason": "maintenance window"})
        assert status == 200 and body["worker"]["draining"] is True
        status, body = await post(http, "/api/v1/workers/nobody/drain")
        assert (status, body["code"]) == (404, "NOT_FOUND")


async def test_schedules_are_read_paused_resumed_and_run(tmp_path: Path) -> None:
    async with console(tmp_path) as c, c.client() as http:
        await spb_grpc.ScheduleServiceStub(c.manager.channel).CreateSchedule(
            spb.CreateScheduleRequest(
                schedule=spb.Schedule(
                    id="nightly", cron="0 3 * * *", maintenance=pb.CreateMaintenanceRequest(targets=["db1"])
                )
            )
        )
        status, listed = await get(http, "/api/v1/schedules")
        assert status == 200 and [s["id"] for s in listed["schedules"]] == ["nightly"]
        status, one = await get(http, "/api/v1/schedules/nightly")
        assert status == 200 and one["schedule"]["cron"] == "0 3 * * *"
        status, paused = await post(http, "/api/v1/schedules/nightly/pause")
        assert status == 200 and paused["schedule"]["paused"] is True
        status, resumed = await post(http, "/api/v1/schedules/nightly/resume")
        assert status == 200 and not resumed["schedule"].get("paused", False)
        status, ran = await post(http, "/api/v1/schedules/nightly/run")
        assert status == 200 and ran["parent"]["scheduleId"] == "nightly"
        status, firings = await get(http, "/api/v1/schedules/nightly/firings")
        assert status == 200 and [f["parentId"] for f in firings["firings"]] == [ran["parent"]["id"]]
        status, body = await get(http, "/api/v1/schedules/weekly")
        assert (status, body["code"]) == (404, "NOT_FOUND")
        status, body = await post(http, "/api/v1/schedules/weekly/pause")
        assert (status, body["code"]) == (404, "NOT_FOUND")


async def test_the_manager_endpoint_names_the_role_the_leader_and_the_term(tmp_path: Path) -> None:
    async with console(tmp_path) as c, c.client() as http:
        status, body = await get(http, "/api/v1/manager")
        assert status == 200
        assert body["role"] == "leader"
        assert body["leader"] == c.manager.server.advertised_address
        assert body["term"] >= 1 and body["managerId"] == c.manager.server.manager_id


async def test_the_console_starts_and_stops_with_the_manager_and_is_off_unless_asked_for(tmp_path: Path) -> None:
    async with console(tmp_path / "on") as c:
        url = c.url
        async with c.client() as http, http.get("/api/v1/manager") as response:
            assert response.status == 200
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(f"{url}/api/v1/manager") as response:
                raise AssertionError(f"still serving after the manager stopped: {response.status}")
        except aiohttp.ClientConnectionError:
            pass
    async with running_manager(tmp_path / "off") as manager:
        assert manager.server.http_port == 0
