"""The fleet core's leases across a takeover: a new leader rebuilds a lease for every child the store has
RUNNING; the holder's Hello keeps the ones it lists and gives the others a short grace, cut short by its first
heartbeat that does not name them either; the reason a lease lapsed says which of the two happened."""

from __future__ import annotations

from datetime import UTC, datetime

from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation
from manager_service.domain import Job
from manager_service.fleet import FleetCore, FleetSettings
from manager_service.workers import HelloInfo, RunningReport

SETTINGS = FleetSettings(lease_timeout=20.0, reconnect_grace=1.0)


def running(job_id: str, worker_id: str = "w2") -> Job:
    return Job(
        id=job_id,
        seq=1,
        type=CHILD_JOB_TYPE,
        status=JobStatus.RUNNING,
        config={},
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        parent_id="p",
        target=f"target-of-{job_id}",
        operation=Operation.ANALYZE,
        attempt=1,
        worker_id=worker_id,
    )


def a_new_leader(*children: Job) -> FleetCore:
    core = FleetCore(SETTINGS)
    core.rebuild(children, 0.0)
    return core


def test_a_child_the_returning_holder_did_not_list_lapses_after_the_grace_saying_it_came_back_without_it() -> None:
    core = a_new_leader(running("listed"), running("never-delivered"))
    stream = core.open_stream()
    core.connect(stream, HelloInfo("w2", frozenset({"t"}), 2, running=(RunningReport("listed", 1),)), 5.0)
    assert core.lapsed(5.9) == []
    (lapsed,) = core.lapsed(6.1)
    assert lapsed.job_id == "never-delivered"
    assert lapsed.lapse_reason(SETTINGS) == (
        "worker w2 came back without it and sent no result for it:"
        " the assignment never reached it, or its result was lost"
    )


def test_a_holder_that_never_came_back_lapses_for_want_of_heartbeats() -> None:
    core = a_new_leader(running("silent"))
    (lapsed,) = core.lapsed(20.1)
    assert lapsed.lapse_reason(SETTINGS) == "no heartbeat from worker w2 for 20s"


def test_a_heartbeat_that_names_an_unlisted_child_keeps_it_as_an_ordinary_lease() -> None:
    core = a_new_leader(running("late"))
    stream = core.open_stream()
    core.connect(stream, HelloInfo("w2", frozenset({"t"}), 2), 5.0)
    core.heartbeat(stream, [RunningReport("late", 1)], 5.5)
    assert core.lapsed(6.1) == [], "renewed for a whole lease"
    (lapsed,) = core.lapsed(25.6)
    assert lapsed.lapse_reason(SETTINGS) == "no heartbeat from worker w2 for 20s"


def test_the_first_heartbeat_after_a_hello_that_does_not_name_an_unlisted_child_ends_its_lease_at_once() -> None:
    core = a_new_leader(running("never-delivered"), running("other", worker_id="w3"))
    stream = core.open_stream()
    core.connect(stream, HelloInfo("w2", frozenset({"t"}), 1), 5.0)
    assert core.lapsed(5.1) == []
    core.heartbeat(stream, [], 5.2)
    (lapsed,) = core.lapsed(5.2)
    assert lapsed.job_id == "never-delivered", "only the holder's unlisted leases; w3's keeps its lease"
    assert lapsed.lapse_reason(SETTINGS).startswith("worker w2 came back without it")


def test_a_heartbeat_never_ends_a_lease_the_hello_listed_or_one_assigned_since() -> None:
    core = a_new_leader(running("listed"))
    stream = core.open_stream()
    core.connect(stream, HelloInfo("w2", frozenset({"t"}), 2, running=(RunningReport("listed", 1),)), 5.0)
    core.heartbeat(stream, [], 5.2)  # sent before it saw the child? it listed it: not this rule's business
    assert core.lapsed(5.3) == []
