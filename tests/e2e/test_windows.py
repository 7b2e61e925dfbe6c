"""Maintenance windows with real processes: a one-off window holds its children back until it opens, interrupts
a slowed VACUUM at its end (policy CANCEL), lets a REINDEX that started inside it finish (policy FINISH), and
cancels the child that never got to start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dbmaint import wire
from dbmaint.v1 import maintenance_pb2 as pb
from dbmaint.windows import WINDOW_ENDED_BEFORE_START, window_ended
from tests.support.processes import Cluster
from tests.support.targets import integrity_ok, make_sqlite_target

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("store_backend", ["sqlite", "postgresql"], indirect=True)]

# Long enough for both parents to be created and looked at before it opens; the REINDEX outlasts it.
OPENS_IN = timedelta(seconds=4)
LENGTH = timedelta(seconds=4)
FAULTS = "slow:vacuum=60,slow:reindex=7"


def create_in_window(
    fleet: Cluster, target: str, operations: list[int], window: pb.MaintenanceWindow
) -> pb.CreateMaintenanceResponse:
    request = pb.CreateMaintenanceRequest(targets=[target], operations=operations, window=window)
    return fleet.stub.CreateMaintenance(request, timeout=10)


def started(child: pb.Job) -> datetime:
    return wire.from_timestamp(child.started_at)


def test_a_one_off_window_bounds_starts_and_ends_what_its_policy_cancels(fleet: Cluster, tmp_path: Path) -> None:
    targets = {name: tmp_path / f"{name}.db" for name in ("alpha", "beta")}
    for path in targets.values():
        make_sqlite_target(path, rows=2_000)
    fleet.start_manager()
    fleet.start_worker("w1", targets, faults=FAULTS, slots=2)
    opens = (datetime.now(UTC) + OPENS_IN).replace(microsecond=0)
    closes = opens + LENGTH
    window = pb.MaintenanceWindow(start=wire.timestamp(opens), end=wire.timestamp(closes))

    vacuum_first = create_in_window(fleet, "alpha", [pb.OPERATION_VACUUM, pb.OPERATION_ANALYZE], window)
    reindex = create_in_window(fleet, "beta", [pb.OPERATION_REINDEX], window)

    before = fleet.get(vacuum_first.parent.id)
    assert datetime.now(UTC) < opens, "the test machine was too slow to look before the window opened"
    assert before.job.window.end == window.end
    assert all(c.status == pb.JOB_STATUS_PENDING for c in before.children)
    assert all("maintenance window" in c.waiting_reason and "opens" in c.waiting_reason for c in before.children)

    reindexed = fleet.wait_status(reindex.parent.id, pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, timeout=30)
    [reindex_child] = reindexed.children
    assert reindex_child.status == pb.JOB_STATUS_COMPLETED, fleet.describe(reindex.parent.id)
    assert started(reindex_child) >= opens
    assert wire.from_timestamp(reindex_child.finished_at) > closes  # it ran past the end: FINISH

    ended = fleet.wait_status(vacuum_first.parent.id, pb.JOB_STATUS_CANCELLED, pb.JOB_STATUS_FAILED, timeout=30)
    by_operation = {c.operation: c for c in ended.children}
    vacuum, analyze = by_operation[pb.OPERATION_VACUUM], by_operation[pb.OPERATION_ANALYZE]
    assert ended.job.status == pb.JOB_STATUS_CANCELLED, fleet.describe(vacuum_first.parent.id)
    assert (vacuum.status, vacuum.error) == (pb.JOB_STATUS_CANCELLED, window_ended(closes))
    assert opens <= started(vacuum) < closes
    assert wire.from_timestamp(vacuum.finished_at) - closes < timedelta(seconds=5)
    assert (analyze.status, analyze.error) == (pb.JOB_STATUS_CANCELLED, WINDOW_ENDED_BEFORE_START)
    assert not analyze.HasField("started_at") or analyze.started_at.seconds == 0
    assert all(integrity_ok(path) for path in targets.values())
