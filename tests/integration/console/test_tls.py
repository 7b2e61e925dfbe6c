"""The console over HTTPS with the manager's own certificate (docs/make-test-ca.sh), and its cookie marked
Secure there."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.integration.console.support import CLIENT_TOKEN, TOKENS, console
from tests.support.processes import REPO_ROOT


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates", pytrace=False)
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["bash", str(REPO_ROOT / "docs" / "make-test-ca.sh"), str(where)], check=True, capture_output=True
    )
    return where


async def test_the_console_speaks_https_with_the_manager_s_certificate_and_a_secure_cookie(
    tmp_path: Path, tls_dir: Path
) -> None:
    trust = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    files = {"tls_cert": str(tls_dir / "manager.pem"), "tls_key": str(tls_dir / "manager.key")}
    async with console(tmp_path, auth=TOKENS, **files) as c:
        assert c.url.startswith("https://")
        async with c.client() as http:
            async with http.post("/login", data={"token": CLIENT_TOKEN}, allow_redirects=False, ssl=trust) as r:
                assert r.status == 303
                assert r.cookies["dbmaint_session"]["secure"]
            async with http.get("/api/v1/manager", ssl=trust) as response:
                assert response.status == 200
        plain = c.url.replace("https://", "http://")
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the TLS port
                async with http.get(f"{plain}/api/v1/manager") as answer:
                    await answer.read()
