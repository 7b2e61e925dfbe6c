"""``python -m worker_service`` as a real process: start line, signals, drain, exit code."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.fake_manager_for_workers import fake_manager
from tests.support.worker import eventually, within


async def spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker_service",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigterm_drains_finishes_the_running_vacuum_and_exits_0(sample_db: Path) -> None:
    async with fake_manager(heartbeat_interval=0.1) as server:
        process = await spawn(
            "--manager", server.address, "--worker-id", "proc-1", "--grace", "20",
            env={
                "DBMAINT_TARGETS": f"orders=sqlite:///{sample_db}",
                "DBMAINT_FAULTS": "slow:vacuum=1",
                "DBMAINT_ALLOW_FAULT_INJECTION": "1",
            },
        )  # fmt: skip
        try:
            stream = await eventually(lambda: server.manager.latest, timeout=10, message="Hello")
            assert stream.hello.worker_id == "proc-1" and list(stream.hello.targets) == ["orders"]
            assert stream.hello.faults_active, "a worker that injects faults says so in its Hello"
            await stream.assign("job-1", "orders")
            await eventually(lambda: any(h.running for h in stream.heartbeats), message="heartbeat")
            process.send_signal(signal.SIGTERM)
            assert await within(process.wait(), 10, "the worker exiting") == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert [d.reason for d in stream.drainings] == ["SIGTERM"]
        result = stream.result_for("job-1")
        assert result is not None and result.status == pb.JOB_STATUS_COMPLETED  # finished within the grace
        assert stream.half_closed.is_set()
        assert process.stderr is not None
        err = (await process.stderr.read()).decode()
        assert "dbmaint-worker proc-1 serving targets orders (slots=1) -> manager " + server.address in err
        assert "fault injection active" in err
        assert "[worker=proc-1 job=job-1 attempt=1 target=orders] started vacuum" in err


async def test_a_target_without_engine_exits_2_with_the_password_masked(tmp_path: Path) -> None:
    process = await spawn(env={"DBMAINT_TARGETS": "ora=oracle://app:t0psecret@db/app"})
    assert await within(process.wait(), 10, "the worker exiting") == 2
    assert process.stderr is not None
    err = (await process.stderr.read()).decode()
    assert "no engine for database dialect 'oracle'" in err
    assert "t0psecret" not in err and "app:***@db" in err
