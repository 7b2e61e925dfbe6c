"""Tokens and mTLS with real processes: a manager that requires client certificates and bearer tokens, a worker
and the dbmaint CLI that present theirs, and what each wrong credential gets. The certificates come from
docs/make-test-ca.sh, the recipe the README gives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dbmaint.auth import TlsFiles, sync_channel
from dbmaint.local import ServiceProcess, clean_env, free_port
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.v1 import maintenance_pb2_grpc as pb_grpc
from tests.support.polling import wait_for
from tests.support.processes import REPO_ROOT
from tests.support.targets import integrity_ok, make_sqlite_target, sqlite_stats

CLIENT_TOKEN = "c-7d1f0a6b2e5c4d3a"
WORKER_TOKEN = "w-93b8e2f4c6a1d057"
SECRETS = (CLIENT_TOKEN, WORKER_TOKEN)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is needed to make the test certificates", pytrace=False)
        pytest.skip("openssl is not installed: cannot make the test certificates")
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["bash", str(REPO_ROOT / "docs" / "make-test-ca.sh"), str(where)], check=True, capture_output=True
    )
    return where


@dataclass
class Secured:
    address: str
    tls_dir: Path
    manager: ServiceProcess
    workdir: Path

    def tls(self, who: str | None) -> TlsFiles:
        """The CA, plus ``who``'s client certificate (None: no client certificate)."""
        cert = self.tls_dir / f"{who}.pem" if who else None
        key = self.tls_dir / f"{who}.key" if who else None
        return TlsFiles(self.tls_dir / "ca.pem", cert, key)

    def client_env(self, token: str | None, cert: str | None = "cli") -> dict[str, str]:
        env = {"DBMAINT_TLS_CA": str(self.tls_dir / "ca.pem")}
        if cert:
            env |= {
                "DBMAINT_TLS_CERT": str(self.tls_dir / f"{cert}.pem"),
                "DBMAINT_TLS_KEY": str(self.tls_dir / f"{cert}.key"),
            }
        if token:
            env["DBMAINT_TOKEN"] = token
        return env

    def cli(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "dbmaint"), "--manager", self.address, "--timeout", "10", *args],
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.workdir,
        )

    def stub(self, who: str | None = "cli") -> pb_grpc.MaintenanceServiceStub:
        return pb_grpc.MaintenanceServiceStub(sync_channel(self.address, self.tls(who)))


@pytest.fixture
def secured(tmp_path: Path, tls_dir: Path) -> Iterator[Secured]:
    address = f"127.0.0.1:{free_port()}"
    manager = ServiceProcess(
        "manager",
        [
            sys.executable,
            "-m",
            "manager_service",
            "--listen",
            address,
            "--database-url",
            f"sqlite:///{tmp_path / 'jobs.db'}",
            "--tls-cert",
            str(tls_dir / "manager.pem"),
            "--tls-key",
            str(tls_dir / "manager.key"),
            "--tls-client-ca",
            str(tls_dir / "ca.pem"),
        ],
        tmp_path / "manager.log",
        clean_env({"DBMAINT_CLIENT_TOKENS": f"old-token,{CLIENT_TOKEN}", "DBMAINT_WORKER_TOKENS": WORKER_TOKEN}),
    ).start()
    setup = Secured(address, tls_dir, manager, tmp_path)
    health = health_pb2_grpc.HealthStub(sync_channel(address, setup.tls("cli")))

    def serving() -> bool:
        if not manager.alive():
            raise AssertionError(f"manager exited:\n{manager.log()}")
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    try:
        wait_for(serving, timeout=30, message=lambda: manager.log())
        yield setup
    finally:
        manager.kill9()


def _worker(
    setup: Secured, target: Path, token: str, cert: str = "worker", worker_id: str = "tls-worker"
) -> ServiceProcess:
    env = {
        "DBMAINT_WORKER_TOKEN": token,
        "DBMAINT_TLS_CA": str(setup.tls_dir / "ca.pem"),
        "DBMAINT_TLS_CERT": str(setup.tls_dir / f"{cert}.pem"),
        "DBMAINT_TLS_KEY": str(setup.tls_dir / f"{cert}.key"),
    }
    args = [sys.executable, "-m", "worker_service", "--manager", setup.address, "--worker-id", worker_id]
    args += ["--target", f"demo=sqlite:///{target}"]
    return ServiceProcess(worker_id, args, setup.workdir / f"{worker_id}.log", clean_env(env)).start()


def test_mtls_and_tokens_end_to_end(secured: Secured) -> None:
    target = secured.workdir / "demo.db"
    before = make_sqlite_target(target, rows=5_000)
    worker = _worker(secured, target, WORKER_TOKEN)
    try:
        wait_for(
            lambda: [w.worker_id for w in _workers(secured)] == ["tls-worker"],
            timeout=30,
            message=lambda: worker.log(),
        )
        done = secured.cli(
            "create", "demo", "-o", "vacuum", "-o", "analyze", "--watch", env=secured.client_env(CLIENT_TOKEN)
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "completed" in done.stdout.lower()
        after = sqlite_stats(target)
        assert after.size < before.size and integrity_ok(target)
        listed = secured.cli("list", env=secured.client_env(CLIENT_TOKEN))
        assert listed.returncode == 0 and "completed" in listed.stdout.lower(), listed.stderr
    finally:
        worker.kill9()
    logs = secured.manager.log() + worker.log()
    for secret in SECRETS:
        assert secret not in logs, "a token was written to a log"


def _workers(setup: Secured) -> list[pb.WorkerInfo]:
    reply = setup.stub().ListWorkers(
        pb.ListWorkersRequest(), timeout=5, metadata=(("authorization", f"Bearer {CLIENT_TOKEN}"),)
    )
    return list(reply.workers)


def test_what_each_wrong_credential_gets(secured: Secured) -> None:
    # No client certificate: the TLS handshake fails, nothing reaches the service.
    no_cert = secured.cli("list", env=secured.client_env(CLIENT_TOKEN, cert=None))
    assert no_cert.returncode == 3, no_cert.stderr
    # Plaintext to a TLS listener: same.
    plain = secured.cli("list", env={"DBMAINT_TOKEN": CLIENT_TOKEN})
    assert plain.returncode == 3, plain.stderr
    # Certificate but no token, a wrong token, a worker token: refused with the right code, nothing created.
    for token, code in (
        (None, "UNAUTHENTICATED"),
        ("wrong", "UNAUTHENTICATED"),
        (WORKER_TOKEN, "PERMISSION_DENIED"),
    ):
        refused = secured.cli("create", "demo", "-o", "vacuum", env=secured.client_env(token))
        assert refused.returncode == 2 and code in refused.stderr, (token, refused.stderr)
        assert WORKER_TOKEN not in refused.stderr
    with pytest.raises(grpc.RpcError) as error:
        secured.stub().ListJobs(
            pb.ListJobsRequest(), timeout=5, metadata=(("authorization", f"Bearer {WORKER_TOKEN}"),)
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    jobs = secured.stub().ListJobs(
        pb.ListJobsRequest(), timeout=5, metadata=(("authorization", f"Bearer {CLIENT_TOKEN}"),)
    )
    assert list(jobs.jobs) == []
    # A worker presenting the client token is refused and never listed.
    target = secured.workdir / "demo.db"
    make_sqlite_target(target, rows=100)
    intruder = _worker(secured, target, CLIENT_TOKEN, worker_id="intruder")
    try:
        wait_for(lambda: "PERMISSION_DENIED" in intruder.log(), timeout=30, message=lambda: intruder.log())
        assert _workers(secured) == []
    finally:
        intruder.kill9()
