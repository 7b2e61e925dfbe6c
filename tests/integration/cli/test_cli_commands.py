"""create / get / list / cancel / workers / health against the in-process fake manager."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from grpc_health.v1 import health_pb2

from dbmaint.cli.main import main
from dbmaint.operations import CHILD_JOB_TYPE, PARENT_JOB_TYPE
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.cli import Run
from tests.support.fake_manager_for_cli import FakeManager

Cli = Callable[..., Run]


def first_column(out: str) -> list[str]:
    """The first cell of every body row of a rich table."""
    return [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]


def last_request(fake: FakeManager, kind: type) -> object:
    return next(request for request in reversed(fake.service.requests) if isinstance(request, kind))


def test_create_prints_the_parent_and_its_children(cli: Cli, fake: FakeManager) -> None:
    result = cli("create", "alpha", "beta", "-o", "vacuum", "--operation", "optimize", "--request-id", "r-1")

    assert result.code == 0, result.err
    request = last_request(fake, pb.CreateMaintenanceRequest)
    assert isinstance(request, pb.CreateMaintenanceRequest)
    assert list(request.targets) == ["alpha", "beta"]
    assert list(request.operations) == [pb.OPERATION_VACUUM, pb.OPERATION_OPTIMIZE]
    assert request.request_id == "r-1"
    parent_id = fake.service.order[0]
    assert f"created parent {parent_id} with 4 children" in result.out
    for child_id in fake.service.children[parent_id]:
        assert child_id in result.out
    assert result.out.count("pending") == 4
    assert "no connected worker serves target 'alpha'" in result.out


def test_create_without_operations_sends_none_and_the_manager_picks_the_defaults(
    cli: Cli, fake: FakeManager
) -> None:
    result = cli("create", "alpha")

    assert result.code == 0
    request = last_request(fake, pb.CreateMaintenanceRequest)
    assert isinstance(request, pb.CreateMaintenanceRequest)
    assert list(request.operations) == []
    assert "with 3 children" in result.out


def test_create_narrows_to_schemas_and_tables(cli: Cli, fake: FakeManager) -> None:
    result = cli("create", "alpha", "--schema", "sales", "--table", "sales.orders", "--table", "users")

    assert result.code == 0, result.err
    request = last_request(fake, pb.CreateMaintenanceRequest)
    assert isinstance(request, pb.CreateMaintenanceRequest)
    assert list(request.schemas) == ["sales"]
    assert list(request.tables) == ["sales.orders", "users"]


def test_a_repeated_request_id_reports_the_existing_parent(cli: Cli, fake: FakeManager) -> None:
    first = cli("create", "alpha", "--request-id", "same")
    second = cli("create", "alpha", "--request-id", "same")

    assert first.code == second.code == 0
    parent_id = fake.service.order[0]
    assert f"request id same matches existing parent {parent_id} (pending); nothing new was created" in second.out
    assert len([job for job in fake.service.jobs.values() if job.type == PARENT_JOB_TYPE]) == 1


def test_create_json_is_the_response(cli: Cli, fake: FakeManager) -> None:
    result = cli("create", "alpha", "--json")

    assert result.code == 0
    data = json.loads(result.out)
    assert data["created"] is True
    assert data["parent"]["id"] == fake.service.order[0]
    assert [child["target"] for child in data["children"]] == ["alpha"] * 3


def test_a_rejected_create_prints_the_servers_message_without_traceback(cli: Cli) -> None:
    result = cli("create", "bad name!")

    assert result.code == 2
    assert result.out == ""
    assert result.err.strip() == (
        "dbmaint: error: request rejected (INVALID_ARGUMENT): targets[0]: invalid target name 'bad name!': "
        "use 1-64 characters [A-Za-z0-9_.-]"
    )


def test_get_a_parent_shows_progress_and_children(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha", "beta")

    result = cli("get", created.parent.id)

    assert result.code == 0
    assert created.parent.id in result.out
    assert PARENT_JOB_TYPE in result.out
    assert "0/6 done: 0 succeeded, 0 failed, 0 cancelled, 0 running, 6 pending" in result.out
    for child in created.children:
        assert child.id in result.out


def test_get_a_finished_child_shows_its_result_and_notes(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha", autorun=True)
    fake.wait_terminal(created.parent.id)
    vacuum = created.children[0]

    result = cli("get", vacuum.id)

    assert result.code == 0
    assert CHILD_JOB_TYPE in result.out
    assert created.parent.id in result.out
    assert "fake-worker-1" in result.out
    assert "4.0 MiB → 2.5 MiB" in result.out
    assert "1.5 MiB (1572864 bytes) (37.5%)" in result.out
    assert "page_count 1024 -> 640" in result.out


def test_get_json(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha")

    result = cli("get", created.parent.id, "--json")

    data = json.loads(result.out)
    assert data["job"]["id"] == created.parent.id
    assert data["job"]["status"] == "JOB_STATUS_PENDING"
    assert len(data["children"]) == 3


def test_get_reads_a_response_larger_than_the_grpc_default_of_4_mib(cli: Cli, fake: FakeManager) -> None:
    # The manager sends messages up to 16 MiB (a parent with many children, long reports); the CLI's channel
    # must take them, not fail with RESOURCE_EXHAUSTED at gRPC's default 4 MiB receive limit.
    created = fake.create("alpha", "beta")
    with fake.service.cond:
        for child_id in fake.service.children[created.parent.id]:
            child = fake.service.jobs[child_id]
            child.result.notes.extend(f"table t{i}: " + "x" * 1000 for i in range(1000))
    result = cli("get", created.parent.id, "--json")
    assert result.code == 0, result.err
    assert len(result.out) > 5 * 1024 * 1024
    assert json.loads(result.out)["job"]["id"] == created.parent.id


def test_get_a_parent_shows_its_counters_and_only_the_children_that_did_not_complete(
    cli: Cli, fake: FakeManager
) -> None:
    created = fake.create("alpha", "broken1", autorun=True)
    fake.wait_terminal(created.parent.id)

    result = cli("get", created.parent.id)

    assert result.code == 0, result.err
    assert "6/6 done: 3 succeeded, 3 failed, 0 cancelled, 0 running, 0 pending" in result.out
    by_target = {child.id: child.target for child in created.children}
    shown = [child_id for child_id in by_target if child_id in result.out]
    assert sorted(by_target[child_id] for child_id in shown) == ["broken1"] * 3, "only the failed children"
    assert f"3 completed children not shown: `dbmaint get {created.parent.id} --children` lists every child" in (
        result.out
    )
    request = last_request(fake, pb.GetJobRequest)
    assert isinstance(request, pb.GetJobRequest)
    assert set(request.children_status) == {
        pb.JOB_STATUS_PENDING,
        pb.JOB_STATUS_RUNNING,
        pb.JOB_STATUS_FAILED,
        pb.JOB_STATUS_CANCELLED,
    }


def test_get_a_large_parent_shows_the_first_page_and_how_many_more_did_not_complete(
    cli: Cli, fake: FakeManager
) -> None:
    created = fake.create(*(f"db{i}" for i in range(300)))  # 900 pending children

    result = cli("get", created.parent.id)

    assert result.code == 0, result.err
    children = fake.service.children[created.parent.id]
    assert [child_id in result.out for child_id in children[:51]] == [True] * 50 + [False]
    assert f"850 more children not completed: `dbmaint get {created.parent.id} --children`" in result.out


def test_get_children_lists_every_child_page_by_page(cli: Cli, fake: FakeManager) -> None:
    created = fake.create(*(f"db{i}" for i in range(300)))  # 900 children: two pages of the default 500
    fake.service.requests.clear()

    result = cli("get", created.parent.id, "--children")

    assert result.code == 0, result.err
    ids = fake.service.children[created.parent.id]
    assert all(child_id in result.out for child_id in ids)
    lines = result.out.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("#  "))
    assert lines[header].split()[:5] == ["#", "id", "target", "operation", "status"]
    rows = [line.split() for line in lines[header + 1 :]]
    assert [row[0] for row in rows] == [str(position) for position in range(900)], "every child, in order"
    assert rows[0][1:5] == [ids[0], "db0", "vacuum", "pending"]
    requests = [r for r in fake.service.requests if isinstance(r, pb.GetJobRequest)]
    assert [r.children_page_token for r in requests] == ["", "after:499"]
    assert all(not r.children_status for r in requests)


def test_get_children_json_prints_one_document_per_page(cli: Cli, fake: FakeManager) -> None:
    created = fake.create(*(f"db{i}" for i in range(200)))  # 600 children

    result = cli("get", created.parent.id, "--children", "--json")

    assert result.code == 0, result.err
    pages = [json.loads(chunk) for chunk in result.out.replace("}\n{", "}\n\x00{").split("\x00")]
    assert [len(page["children"]) for page in pages] == [500, 100]
    assert pages[0]["next_children_page_token"] and not pages[1]["next_children_page_token"]


def test_create_of_a_large_parent_says_the_answer_holds_the_first_page(cli: Cli, fake: FakeManager) -> None:
    result = cli("create", *(f"db{i}" for i in range(200)))  # 600 children

    assert result.code == 0, result.err
    parent_id = fake.service.order[0]
    assert f"created parent {parent_id} with 600 children" in result.out
    assert f"the first 500 of 600 children: `dbmaint get {parent_id} --children` lists every child" in result.out


def test_get_an_unknown_job_is_not_found(cli: Cli) -> None:
    result = cli("get", "no-such-job")

    assert result.code == 4
    assert result.err.strip() == "dbmaint: error: job 'no-such-job' not found"


def test_list_shows_jobs_and_passes_the_filters(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha")

    everything = cli("list")
    parents = cli("list", "--type", "parent", "--status", "pending")
    children = cli("list", "--parent", created.parent.id, "--type", "child")

    assert everything.code == parents.code == children.code == 0
    for job_id in [created.parent.id, *(child.id for child in created.children)]:
        assert job_id in everything.out
    assert first_column(parents.out) == [created.parent.id]
    request = last_request(fake, pb.ListJobsRequest)
    assert isinstance(request, pb.ListJobsRequest)
    assert request.type == CHILD_JOB_TYPE
    assert request.parent_id == created.parent.id
    parents_request = [r for r in fake.service.requests if isinstance(r, pb.ListJobsRequest)][1]
    assert parents_request.type == PARENT_JOB_TYPE
    assert parents_request.status == pb.JOB_STATUS_PENDING


def test_list_pages(cli: Cli, fake: FakeManager) -> None:
    fake.create("alpha")

    first = cli("list", "--limit", "3")
    second = cli("list", "--limit", "3", "--page-token", "3")

    assert "more jobs: --page-token 3" in first.out
    assert "--page-token" not in second.out
    assert len(second.out.strip().splitlines()) > 2
    oldest = fake.service.order[0]
    assert oldest in first_column(second.out)
    assert oldest not in first_column(first.out)
    assert len(first_column(first.out)) == 3


def test_list_json_and_empty(cli: Cli, fake: FakeManager) -> None:
    assert "no jobs" in cli("list").out
    fake.create("alpha")

    data = json.loads(cli("list", "--json").out)

    assert len(data["jobs"]) == 4
    assert data["next_page_token"] == ""


def test_list_rejects_an_unknown_status_before_calling(cli: Cli, fake: FakeManager) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("list", "--status", "sleeping")
    assert exit_info.value.code == 2
    assert not fake.service.requests


def test_cancel_a_pending_parent(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha")

    result = cli("cancel", created.parent.id, "--reason", "not today")

    assert result.code == 0
    assert result.out.strip() == f"cancelled parent {created.parent.id}"
    request = last_request(fake, pb.CancelJobRequest)
    assert isinstance(request, pb.CancelJobRequest)
    assert request.reason == "not today"
    assert all(fake.service.jobs[child.id].error == "not today" for child in created.children)


def test_cancel_a_running_parent_reports_the_request(cli: Cli, fake: FakeManager) -> None:
    fake.service.step = 0.3
    created = fake.create("alpha", autorun=True)
    with fake.service.cond:
        assert fake.service.cond.wait_for(
            lambda: fake.service.jobs[created.children[0].id].status == pb.JOB_STATUS_RUNNING, timeout=10
        )

    result = cli("cancel", created.parent.id)
    watched = cli("watch", created.parent.id)

    assert result.code == 0
    assert result.out.strip() == (
        f"cancel requested for parent {created.parent.id}: its running work is being interrupted (running for now)"
    )
    assert watched.code == 1
    assert f"parent {created.parent.id} cancelled" in watched.out


def test_cancel_a_finished_job_is_rejected_and_an_unknown_one_not_found(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha")
    cli("cancel", created.parent.id)

    again = cli("cancel", created.parent.id)
    unknown = cli("cancel", "nope")

    assert again.code == 2
    assert again.err.strip() == (
        f"dbmaint: error: request rejected (FAILED_PRECONDITION): job '{created.parent.id}' is already cancelled"
    )
    assert unknown.code == 4
    assert "job 'nope' not found" in unknown.err


def test_workers_table_and_unserved_targets(cli: Cli, fake: FakeManager) -> None:
    assert "no workers connected" in cli("workers").out
    fake.service.workers = [
        pb.WorkerInfo(worker_id="w-1", targets=["alpha", "beta"], slots=2, running_job_ids=["job-9"], peer="p1"),
        pb.WorkerInfo(worker_id="w-2", targets=["beta"], slots=1, draining=True),
    ]
    fake.service.unserved_targets = ["gamma"]

    result = cli("workers")
    data = json.loads(cli("workers", "--json").out)

    assert result.code == 0
    rows = {line.split("│")[1].strip(): line for line in result.out.splitlines() if line.startswith("│")}
    assert "alpha, beta" in rows["w-1"] and "1: job-9" in rows["w-1"] and "active" in rows["w-1"]
    assert "draining" in rows["w-2"]
    assert "unserved targets: gamma" in result.out
    assert [worker["worker_id"] for worker in data["workers"]] == ["w-1", "w-2"]
    assert data["unserved_targets"] == ["gamma"]


def test_workers_marks_a_worker_that_injects_faults(cli: Cli, fake: FakeManager) -> None:
    fake.service.workers = [
        pb.WorkerInfo(worker_id="w-faulty", targets=["alpha"], slots=1, faults_active=True),
        pb.WorkerInfo(worker_id="w-plain", targets=["alpha"], slots=1),
    ]

    result = cli("workers")
    data = json.loads(cli("workers", "--json").out)

    rows = {line.split("│")[1].strip(): line for line in result.out.splitlines() if line.startswith("│")}
    assert "FAULTS" in rows["w-faulty"] and "FAULTS" not in rows["w-plain"]
    assert [worker.get("faults_active", False) for worker in data["workers"]] == [True, False]


def test_health_follows_the_serving_status(cli: Cli, fake: FakeManager) -> None:
    serving = cli("health")
    named = cli("health", fake.address, "--service", "dbmaint.v1.MaintenanceService")
    fake.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    not_serving = cli("health")
    unknown = cli("health", "--service", "no.such.Service")

    assert (serving.code, serving.out.strip()) == (0, "SERVING")
    assert (named.code, named.out.strip()) == (0, "SERVING")
    assert (not_serving.code, not_serving.out.strip()) == (1, "NOT_SERVING")
    assert unknown.code == 4
    assert "has no health status for service 'no.such.Service'" in unknown.err


def test_connection_options_are_accepted_after_the_command(
    fake: FakeManager, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["health", "--manager", fake.address, "--timeout", "2"])

    assert code == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_a_slow_manager_hits_the_deadline(cli: Cli, fake: FakeManager) -> None:
    fake.service.hang = 1.5

    result = cli("--timeout", "0.3", "get", "anything")

    assert result.code == 3
    assert (
        result.err.strip()
        == f"dbmaint: error: the dbmaint manager at {fake.address} did not answer within 0.3s (deadline exceeded)"
    )
