"""The console's security on a real manager: who may read and write (401, 403), the login form and its session
cookie, CSRF tokens, the response headers, and the Host check against DNS rebinding."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from dbmaint.auth import bearer_metadata
from dbmaint.v1 import maintenance_pb2 as pb
from manager_service.console.security import SECURITY_HEADERS, Role, Sessions
from tests.integration.console.support import (
    CLIENT_TOKEN,
    READONLY_TOKEN,
    TOKENS,
    WORKER_TOKEN,
    Console,
    bearer,
    console,
)

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


async def parent(c: Console) -> str:
    created = await c.manager.api.CreateMaintenance(
        pb.CreateMaintenanceRequest(targets=["db1"]), metadata=bearer_metadata(CLIENT_TOKEN)
    )
    return str(created.parent.id)


async def login(http: aiohttp.ClientSession, token: str) -> aiohttp.ClientResponse:
    async with http.post("/login", data={"token": token}, allow_redirects=False) as response:
        await response.read()
        return response


async def csrf_token(http: aiohttp.ClientSession) -> str:
    async with http.get("/", allow_redirects=False) as response:
        assert response.status == 200
        found = CSRF_META.search(await response.text())
    assert found is not None and found.group(1)
    return found.group(1)


async def test_without_credentials_the_api_answers_401_and_pages_send_to_the_login_form(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        for path in ("/api/v1/jobs", "/api/v1/workers", "/api/v1/manager", "/api/v1/schedules"):
            async with http.get(path) as response:
                assert response.status == 401
                assert (await response.json())["code"] == "UNAUTHENTICATED"
        async with http.get("/api/v1/jobs", headers=bearer("not-a-token")) as response:
            assert response.status == 401
        async with http.get("/", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/login"


async def test_a_readonly_token_reads_but_may_not_write_and_a_worker_token_may_not_even_read(
    tmp_path: Path,
) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        parent_id = await parent(c)
        async with http.get(f"/api/v1/jobs/{parent_id}", headers=bearer(READONLY_TOKEN)) as response:
            assert response.status == 200
        async with http.post(f"/api/v1/jobs/{parent_id}/cancel", headers=bearer(READONLY_TOKEN)) as response:
            assert response.status == 403 and (await response.json())["code"] == "PERMISSION_DENIED"
        async with http.get("/api/v1/jobs", headers=bearer(WORKER_TOKEN)) as response:
            assert response.status == 403
        job = await c.manager.api.GetJob(pb.GetJobRequest(id=parent_id), metadata=bearer_metadata(CLIENT_TOKEN))
        assert not job.job.cancel_requested and job.job.status == pb.JOB_STATUS_PENDING
        async with http.post(f"/api/v1/jobs/{parent_id}/cancel", headers=bearer(CLIENT_TOKEN)) as response:
            assert response.status == 200  # a script's bearer token needs no CSRF token


async def test_the_login_form_asks_for_a_password_type_field(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http, http.get("/login") as response:
        assert response.status == 200
        page = await response.text()
        assert 'type="password"' in page and 'action="/login"' in page and "<script" not in page


async def test_a_login_sets_a_strict_http_only_session_cookie_and_a_logout_ends_the_session(
    tmp_path: Path,
) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        refused = await login(http, "not-a-token")
        assert refused.status == 401 and "dbmaint_session" not in refused.cookies
        assert (await login(http, WORKER_TOKEN)).status == 401  # a worker token is no console login
        response = await login(http, CLIENT_TOKEN)
        assert response.status == 303 and response.headers["Location"] == "/"
        cookie = response.cookies["dbmaint_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert not cookie["secure"]  # plain HTTP here; see the TLS test
        async with http.get("/api/v1/jobs") as answer:
            assert answer.status == 200
        token = await csrf_token(http)
        async with http.post("/logout", data={"csrf_token": token}, allow_redirects=False) as out:
            assert out.status == 303
        async with http.get("/api/v1/jobs") as answer:
            assert answer.status == 401


async def test_a_session_write_needs_the_session_s_csrf_token(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        parent_id = await parent(c)
        await login(http, CLIENT_TOKEN)
        cancel = f"/api/v1/jobs/{parent_id}/cancel"
        async with http.post(cancel) as response:
            assert response.status == 403 and "CSRF" in (await response.json())["message"]
        async with http.post(cancel, headers={"X-CSRF-Token": "guessed"}) as response:
            assert response.status == 403
        job = await c.manager.api.GetJob(pb.GetJobRequest(id=parent_id), metadata=bearer_metadata(CLIENT_TOKEN))
        assert job.job.status == pb.JOB_STATUS_PENDING
        async with http.post(cancel, headers={"X-CSRF-Token": await csrf_token(http)}) as response:
            assert response.status == 200


async def test_a_readonly_session_reads_but_may_not_write_even_with_its_csrf_token(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        parent_id = await parent(c)
        await login(http, READONLY_TOKEN)
        async with http.get(f"/api/v1/jobs/{parent_id}") as response:
            assert response.status == 200
        headers = {"X-CSRF-Token": await csrf_token(http)}
        async with http.post(f"/api/v1/jobs/{parent_id}/cancel", headers=headers) as response:
            assert response.status == 403 and (await response.json())["code"] == "PERMISSION_DENIED"


async def test_with_auth_off_reads_are_open_and_writes_still_need_a_csrf_token(tmp_path: Path) -> None:
    async with console(tmp_path) as c, c.client() as http:
        parent_id = await parent(c)
        async with http.get("/api/v1/jobs") as response:
            assert response.status == 200
        async with http.get("/login", allow_redirects=False) as response:
            assert response.status == 303
        cancel = f"/api/v1/jobs/{parent_id}/cancel"
        async with http.post(cancel) as response:
            assert response.status == 403  # what a page of another site posting to loopback would get
        async with http.post(cancel, headers={"X-CSRF-Token": await csrf_token(http)}) as response:
            assert response.status == 200


async def test_every_response_carries_the_security_headers(tmp_path: Path) -> None:
    async with console(tmp_path, auth=TOKENS) as c, c.client() as http:
        for method, path, headers in [
            ("GET", "/login", {}),
            ("GET", "/api/v1/jobs", {}),
            ("GET", "/api/v1/jobs", bearer(CLIENT_TOKEN)),
            ("GET", "/api/v1/jobs/0123456789abcdef0123456789abcdef", bearer(CLIENT_TOKEN)),
            ("GET", "/nothing-here", bearer(CLIENT_TOKEN)),
            ("GET", "/", {"Host": "evil.example"}),
        ]:
            async with http.request(method, path, headers=headers, allow_redirects=False) as response:
                for name, value in SECURITY_HEADERS.items():
                    assert response.headers.get(name) == value, (path, name)
        assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]
        assert "'unsafe-inline'" not in SECURITY_HEADERS["Content-Security-Policy"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "192.168.1.10", "localhost.evil.example"])
async def test_a_host_header_of_another_name_is_refused_against_dns_rebinding(tmp_path: Path, host: str) -> None:
    async with console(tmp_path) as c, c.client() as http:
        async with http.get("/api/v1/jobs", headers={"Host": host}) as response:
            assert response.status == 421
        async with http.get("/api/v1/jobs", headers={"Host": f"localhost:{c.manager.server.http_port}"}) as ok:
            assert ok.status == 200


async def test_a_post_from_another_origin_is_refused(tmp_path: Path) -> None:
    async with (
        console(tmp_path, auth=TOKENS) as c,
        c.client() as http,
        http.post("/login", data={"token": CLIENT_TOKEN}, headers={"Origin": "https://evil.example"}) as r,
    ):
        assert r.status == 403 and "dbmaint_session" not in r.cookies


def test_sessions_end_after_their_lifetime() -> None:
    now = [0.0]
    sessions = Sessions(clock=lambda: now[0], lifetime=10.0)
    session = sessions.open(Role.READONLY)
    assert sessions.get(session.id) is session
    now[0] = 9.9
    assert sessions.get(session.id) is session
    now[0] = 10.0
    assert sessions.get(session.id) is None
    assert sessions.get("made-up") is None


def test_the_session_table_is_bounded_and_drops_the_oldest_session() -> None:
    sessions = Sessions(max_sessions=3)
    opened = [sessions.open(Role.CLIENT) for _ in range(4)]
    assert len(sessions) == 3
    assert sessions.get(opened[0].id) is None
    assert all(sessions.get(session.id) is session for session in opened[1:])
