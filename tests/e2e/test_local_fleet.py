"""``dbmaint.local``: the real-process fleet the demo, the benchmark and the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dbmaint.local import LocalFleet, ProcessExited, StartTimeout, free_port
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.polling import wait_for
from tests.support.targets import make_sqlite_target, sqlite_stats

pytestmark = pytest.mark.e2e

QUICK = ("--lease-timeout", "6", "--heartbeat-interval", "0.5")


def _targets(tmp_path: Path, *names: str) -> dict[str, str]:
    urls = {}
    for name in names:
        path = tmp_path / "targets" / f"{name}.db"
        make_sqlite_target(path, rows=2_000)
        urls[name] = f"sqlite:///{path}"
    return urls


def _state(pid: int) -> str:
    """The scheduler state of ``pid`` from /proc (R, S, T for stopped, ...)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    fleet = LocalFleet(tmp_path, log_dir=tmp_path / "logs")
    yield fleet
    fleet.kill()


def test_a_manager_and_two_workers_run_a_job_and_exit_0_on_a_graceful_stop(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    targets = _targets(tmp_path, "alpha", "beta")
    fleet.start_manager(*QUICK)
    fleet.start_worker("w1", targets=targets, wait=False)
    fleet.start_worker("w2", targets=targets, slots=2, wait=False)

    infos = fleet.wait_ready()
    assert {(info.worker_id, info.slots) for info in infos} == {("w1", 1), ("w2", 2)}
    assert (tmp_path / "jobs.db").exists(), "the default job store is a SQLite file in the workdir"
    created = fleet.stub.CreateMaintenance(
        pb.CreateMaintenanceRequest(targets=list(targets), operations=[pb.OPERATION_VACUUM]), timeout=10
    )
    wait_for(
        lambda: (
            fleet.stub.GetJob(pb.GetJobRequest(id=created.parent.id), timeout=5).job.status
            == pb.JOB_STATUS_COMPLETED
        ),
        timeout=30,
        message=fleet.logs,
    )
    assert all(sqlite_stats(Path(url.removeprefix("sqlite:///"))).freelist_count == 0 for url in targets.values())

    codes = fleet.stop()

    assert codes == {"w1": 0, "w2": 0, "manager": 0}, fleet.logs()
    assert not any(process.alive() for process in fleet.processes)
    assert {path.name for path in (tmp_path / "logs").iterdir()} == {"manager.log", "w1.log", "w2.log"}
    assert "connected to manager" in fleet.workers["w1"].log()


def test_a_worker_killed_with_sigkill_is_gone_and_the_manager_drops_it(fleet: LocalFleet, tmp_path: Path) -> None:
    targets = _targets(tmp_path, "alpha")
    fleet.start_manager(*QUICK)
    fleet.start_worker("w1", targets=targets)
    doomed = fleet.start_worker("w2", targets=targets)

    assert doomed.kill9() == -9

    assert not doomed.alive() and doomed.returncode == -9
    wait_for(lambda: fleet.worker_ids() == {"w1"}, timeout=20, message=fleet.logs)
    with pytest.raises(ProcessExited, match="w2 exited with code -9"):
        fleet.check_alive()


def test_a_restarted_manager_and_a_respawned_worker_take_the_places_of_the_old_processes(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    targets = _targets(tmp_path, "alpha")
    first_manager = fleet.start_manager(*QUICK)
    first_worker = fleet.start_worker("w1", targets=targets)

    second_manager = fleet.restart_manager(graceful=True)
    first_worker.kill9()
    second_worker = fleet.respawn(first_worker, wait=True)

    assert first_manager.returncode == 0 and second_manager.alive() and fleet.manager is second_manager
    assert fleet.workers == {"w1": second_worker} and second_worker.alive()
    assert fleet.worker_ids() == {"w1"}
    assert fleet.manager.log().count("listening on") == 2, "one log, appended to by each life"
    assert fleet.stop() == {"w1": 0, "manager": 0}, fleet.logs()


def test_a_frozen_worker_stops_running_until_thawed_and_a_stop_kills_it_when_it_cannot_exit(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    fleet.start_manager(*QUICK)
    worker = fleet.start_worker("w1", targets=_targets(tmp_path, "alpha"))

    worker.freeze()
    wait_for(lambda: _state(worker.pid) == "T", timeout=5)
    worker.thaw()
    wait_for(lambda: _state(worker.pid) != "T", timeout=5)
    worker.freeze()  # a stopped process cannot act on SIGTERM: the graceful stop has to kill it

    assert worker.stop(timeout=1) is None
    assert worker.returncode == -9


def test_a_manager_that_exits_at_start_is_named_with_its_code_and_log_tail(fleet: LocalFleet) -> None:
    with pytest.raises(ProcessExited) as raised:
        fleet.start_manager("--no-such-flag")

    error = raised.value
    assert (error.name, error.returncode) == ("manager", 2)
    assert error.headline.startswith("manager exited with code 2: ")
    assert "unrecognized arguments: --no-such-flag" in error.headline
    assert "usage:" in str(error) and str(error.log_path) in str(error)


def test_waiting_for_a_worker_that_never_connects_times_out_naming_it_with_the_logs(fleet: LocalFleet) -> None:
    fleet.start_manager(*QUICK)

    with pytest.raises(StartTimeout) as raised:
        fleet.wait_workers(["ghost"], timeout=0.5)

    assert raised.value.headline.startswith("workers ghost did not all connect within 0.5s")
    assert f"----- manager ({fleet.log_path('manager')})" in str(raised.value)


def test_waiting_for_a_frozen_manager_times_out_with_the_rpc_error_in_one_line(fleet: LocalFleet) -> None:
    fleet.start_manager(*QUICK).freeze()

    with pytest.raises(StartTimeout) as raised:
        fleet.wait_serving(timeout=1)

    headline = raised.value.headline
    assert headline.startswith(f"the manager at {fleet.address} was not SERVING within 1s (last error: ")
    assert "DEADLINE_EXCEEDED" in headline and "\n" not in headline


def test_free_port_answers_a_port_nothing_listens_on() -> None:
    port = free_port()
    fleet = LocalFleet(Path("/nonexistent"), manager_port=port)

    assert 1024 <= port <= 65535 and fleet.address == f"127.0.0.1:{port}"
    assert fleet.health() == -1, "nothing answers there"
