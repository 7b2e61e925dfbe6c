"""The CLI given several managers (``--manager a,b``): which calls move to the next address, which never do, and
``dbmaint health`` over several addresses. Fake managers in-process; two FakeManagers given one FakeMaintenance
are two managers of one store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dbmaint.cli.main import main
from dbmaint.operations import PARENT_JOB_TYPE
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.cli import Run
from tests.support.fake_manager_for_cli import FakeMaintenance, FakeManager, FakeStandby


@pytest.fixture
def leader() -> Iterator[FakeManager]:
    manager = FakeManager().start()
    yield manager
    manager.stop()


@pytest.fixture
def standby(leader: FakeManager) -> Iterator[FakeStandby]:
    """A standby that names ``leader`` in its refusals."""
    manager = FakeStandby(leader=leader.address).start()
    yield manager
    manager.stop()


@pytest.fixture
def silent_standby() -> Iterator[FakeStandby]:
    """A standby that knows no leader: its refusals carry no hint."""
    manager = FakeStandby().start()
    yield manager
    manager.stop()


@pytest.fixture
def twins() -> Iterator[tuple[FakeManager, FakeManager]]:
    """Two managers that answer from the same store."""
    store = FakeMaintenance()
    first, second = FakeManager(store).start(), FakeManager(store).start()
    yield first, second
    first.stop()
    second.stop()


def dbmaint(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return Run(code, out, err)


def requests_of(manager: FakeManager, kind: type) -> list:  # type: ignore[type-arg]
    return [request for request in manager.service.requests if isinstance(request, kind)]


def test_create_refused_by_a_standby_is_sent_to_the_leader_it_names_with_the_same_request_id(
    capsys: pytest.CaptureFixture[str], leader: FakeManager, standby: FakeStandby
) -> None:
    result = dbmaint(capsys, "--manager", f"{standby.address},{leader.address}", "create", "orders")
    assert result.code == 0, result.err
    assert "created parent" in result.out
    refused = pb.CreateMaintenanceRequest.FromString(standby.requests("CreateMaintenance")[0])
    (sent,) = requests_of(leader, pb.CreateMaintenanceRequest)
    assert refused.request_id.startswith("cli-") and sent.request_id == refused.request_id


def test_create_whose_answer_was_lost_is_resent_to_the_next_manager_and_finds_its_parent(
    capsys: pytest.CaptureFixture[str], twins: tuple[FakeManager, FakeManager]
) -> None:
    first, second = twins
    first.service.lose_answers["CreateMaintenance"] = 1
    result = dbmaint(capsys, "--manager", f"{first.address},{second.address}", "create", "orders")
    assert result.code == 0, result.err
    assert "matches existing parent" in result.out and "nothing new was created" in result.out
    creates = requests_of(first, pb.CreateMaintenanceRequest)  # one store: both managers' requests
    assert len(creates) == 2 and creates[0].request_id == creates[1].request_id
    parents = [job for job in first.service.jobs.values() if job.type == PARENT_JOB_TYPE]
    assert len(parents) == 1


def test_a_cancel_whose_answer_was_lost_is_never_sent_again(
    capsys: pytest.CaptureFixture[str], twins: tuple[FakeManager, FakeManager]
) -> None:
    first, second = twins
    parent = first.create("orders").parent
    first.service.lose_answers["CancelJob"] = 1
    result = dbmaint(capsys, "--manager", f"{first.address},{second.address}", "cancel", parent.id)
    assert result.code == 3
    assert f"cannot reach the dbmaint manager at {first.address}" in result.err
    assert len(requests_of(first, pb.CancelJobRequest)) == 1


def test_a_cancel_whose_commit_was_cut_is_not_resent_even_with_a_leader_hint(
    capsys: pytest.CaptureFixture[str], leader: FakeManager
) -> None:
    parent = leader.create("orders").parent
    # Worded as a standby's refusal, but without the not-run mark: the wording is for people, never read.
    cut = "this manager (m-1, term 3) is a standby: no longer holds the lease; a write's COMMIT was cut"
    stepped_down = FakeStandby(leader=leader.address, message=cut, not_run=False).start()
    try:
        result = dbmaint(capsys, "--manager", f"{stepped_down.address},{leader.address}", "cancel", parent.id)
    finally:
        stepped_down.stop()
    assert result.code == 3
    assert f"(it names {leader.address} as the leader)" in result.err
    assert requests_of(leader, pb.CancelJobRequest) == []


def test_a_cancel_refused_by_a_standby_without_a_hint_goes_to_the_next_manager(
    capsys: pytest.CaptureFixture[str], leader: FakeManager, silent_standby: FakeStandby
) -> None:
    parent = leader.create("orders").parent
    result = dbmaint(capsys, "--manager", f"{silent_standby.address},{leader.address}", "cancel", parent.id)
    assert result.code == 0, result.err
    assert f"cancelled parent {parent.id}" in result.out
    assert len(silent_standby.requests("CancelJob")) == 1


def test_a_cancel_moves_past_a_manager_it_cannot_connect_to(
    capsys: pytest.CaptureFixture[str], leader: FakeManager, closed_port: int
) -> None:
    parent = leader.create("orders").parent
    result = dbmaint(capsys, "--manager", f"127.0.0.1:{closed_port},{leader.address}", "cancel", parent.id)
    assert result.code == 0, result.err
    assert len(requests_of(leader, pb.CancelJobRequest)) == 1


def test_a_read_follows_to_the_next_address_when_the_first_cannot_be_reached(
    capsys: pytest.CaptureFixture[str], leader: FakeManager, closed_port: int
) -> None:
    parent = leader.create("orders").parent
    result = dbmaint(capsys, "--manager", f"127.0.0.1:{closed_port},{leader.address}", "get", parent.id)
    assert result.code == 0, result.err
    assert parent.id in result.out


def test_a_hint_to_an_unconfigured_address_is_not_followed(
    capsys: pytest.CaptureFixture[str], leader: FakeManager, closed_port: int
) -> None:
    lying = FakeStandby(leader=leader.address).start()  # names a manager the client was not given
    try:
        result = dbmaint(capsys, "--manager", f"{lying.address},127.0.0.1:{closed_port}", "--timeout", "1", "list")
    finally:
        lying.stop()
    assert result.code == 3
    assert requests_of(leader, pb.ListJobsRequest) == []
    assert (
        f"dbmaint manager at {lying.address} does not lead: this manager (fake-standby) is a standby" in result.err
    )
    assert f"(it names {leader.address} as the leader) (also tried 127.0.0.1:{closed_port})" in result.err


def test_every_manager_refusing_reports_the_last_with_the_others_tried(
    capsys: pytest.CaptureFixture[str], silent_standby: FakeStandby, closed_port: int
) -> None:
    managers = f"{silent_standby.address},127.0.0.1:{closed_port}"
    result = dbmaint(capsys, "--manager", managers, "--timeout", "1", "workers")
    assert result.code == 3
    assert f"dbmaint: error: the dbmaint manager at {silent_standby.address} does not lead: " in result.err
    assert f"(also tried 127.0.0.1:{closed_port})" in result.err
    # the first round (each once, one more), then rounds until --timeout passed
    assert len(silent_standby.requests("ListWorkers")) >= 2


def test_a_watch_broken_mid_stream_reopens_on_the_next_manager(
    capsys: pytest.CaptureFixture[str], twins: tuple[FakeManager, FakeManager]
) -> None:
    first, second = twins
    first.service.step = 0.2
    parent = first.create("orders", autorun=True).parent
    first.service.drop_watches = 1  # the first stream breaks after its snapshot
    result = dbmaint(capsys, "--manager", f"{first.address},{second.address}", "watch", parent.id)
    assert result.code == 0, result.err
    assert f"lost the watch stream ({first.address}); reconnecting to {second.address}" in result.out
    assert f"reconnected to the manager ({second.address})" in result.out


def test_a_watch_refused_by_a_standby_opens_on_the_leader(
    capsys: pytest.CaptureFixture[str], leader: FakeManager, standby: FakeStandby
) -> None:
    parent = leader.create("orders", autorun=True).parent
    result = dbmaint(capsys, "--manager", f"{standby.address},{leader.address}", "watch", parent.id)
    assert result.code == 0, result.err
    assert len(standby.requests("WatchJob")) == 1


def test_health_over_two_addresses_reports_each_and_passes_when_one_serves(
    capsys: pytest.CaptureFixture[str], leader: FakeManager, standby: FakeStandby
) -> None:
    addresses = f"{standby.address},{leader.address}"
    result = dbmaint(capsys, "health", addresses, "--service", "dbmaint.v1.MaintenanceService")
    assert result.code == 0, result.err
    assert f"{standby.address} NOT_SERVING" in result.out and f"{leader.address} SERVING" in result.out
    # The server as a whole: both SERVING; through --manager as well.
    both = dbmaint(capsys, "--manager", addresses, "health")
    assert both.code == 0 and both.out.count("SERVING") == 2


def test_health_over_two_addresses_none_serving_fails_and_says_which_is_unreachable(
    capsys: pytest.CaptureFixture[str], standby: FakeStandby, closed_port: int
) -> None:
    unreachable = f"127.0.0.1:{closed_port}"
    result = dbmaint(
        capsys, "health", f"{unreachable},{standby.address}", "--service", "dbmaint.v1.MaintenanceService"
    )
    assert result.code == 1
    assert f"{unreachable} unreachable: cannot reach" in result.out
    assert f"{standby.address} NOT_SERVING" in result.out
    nobody = dbmaint(capsys, "health", f"{unreachable},127.0.0.1:1")
    assert nobody.code == 3
