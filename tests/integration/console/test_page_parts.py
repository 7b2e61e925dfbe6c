"""The pure parts of the console's pages: the grid's rows and columns, the chart's hourly buckets, the filters on
a parent's stored request, and the texts of sizes and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from dbmaint.v1 import maintenance_pb2 as pb
from manager_service.console.pages import chart, child_view, config_mentions, grid, in_zone, size_text


def created(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_the_grid_has_a_row_per_target_and_a_column_per_operation_in_first_seen_order() -> None:
    children = [
        child_view(pb.Job(id=f"{target}-{op}", target=target, operation=op, status=pb.JOB_STATUS_RUNNING))
        for target in ("db2", "db1")
        for op in (pb.OPERATION_ANALYZE, pb.OPERATION_VACUUM)
    ]
    targets, operations, cells = grid(children)
    assert targets == ["db2", "db1"] and operations == ["analyze", "vacuum"]
    assert cells[("db1", "vacuum")].job.id == f"db1-{pb.OPERATION_VACUUM}"
    assert cells[("db1", "vacuum")].status == "running"


def test_a_child_reclaims_what_it_shrank_and_never_less_than_nothing() -> None:
    shrank = child_view(pb.Job(result=pb.OperationResult(bytes_before=100, bytes_after=40)))
    grew = child_view(pb.Job(result=pb.OperationResult(bytes_before=40, bytes_after=100)))
    unknown = child_view(pb.Job())
    assert (shrank.reclaimed, grew.reclaimed, unknown.reclaimed) == (60, 0, 0)
    assert unknown.bytes_before is None


def test_the_chart_counts_parents_by_status_per_hour_and_leaves_out_older_ones() -> None:
    now = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
    jobs = [
        pb.Job(status=pb.JOB_STATUS_COMPLETED, created_at=created(now - timedelta(minutes=10))),
        pb.Job(status=pb.JOB_STATUS_COMPLETED, created_at=created(now - timedelta(minutes=20))),
        pb.Job(status=pb.JOB_STATUS_FAILED, created_at=created(now - timedelta(hours=3))),
        pb.Job(status=pb.JOB_STATUS_RUNNING, created_at=created(now - timedelta(hours=30))),  # too old
    ]
    drawn = chart(jobs, now)
    assert dict(drawn["total"]) == {"completed": 2, "failed": 1}
    last = [bar for bar in drawn["bars"] if bar["status"] == "completed"]
    assert len(last) == 1 and last[0]["h"] == drawn["height"]  # the tallest bar fills the chart
    failed = next(bar for bar in drawn["bars"] if bar["status"] == "failed")
    assert failed["h"] == drawn["height"] / 2 and failed["x"] < last[0]["x"]


def test_a_parents_request_is_matched_by_target_and_operation() -> None:
    config = '{"targets":["orders","billing"],"operations":["OPERATION_VACUUM"]}'
    assert config_mentions(config, "targets", "billing")
    assert not config_mentions(config, "targets", "users")
    assert config_mentions(config, "operations", "vacuum")
    assert not config_mentions(config, "operations", "reindex")


def test_sizes_and_zoned_times_read_as_people_write_them() -> None:
    assert size_text(512) == "512 B" and size_text(3 * 1024 * 1024) == "3.0 MiB"
    moment = datetime(2026, 7, 1, 1, 0, tzinfo=UTC)
    assert in_zone(moment, "Europe/Paris") == "2026-07-01 03:00:00 Europe/Paris"
    assert in_zone(moment, "Not/AZone") == "2026-07-01 01:00:00 UTC"
