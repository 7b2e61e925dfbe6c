"""Per-table reports travel worker -> manager -> GetJob of the child, and stay out of every other answer."""

from __future__ import annotations

from pathlib import Path

from dbmaint.operations import JobStatus, Operation, OperationReport, TableAction, TableReport
from dbmaint.v1 import maintenance_pb2 as pb
from manager_service.domain import ChildOutcome, MaintenanceSpec, StartRequest
from manager_service.store import JobStore
from tests.support.manager import eventually, running_manager


def _bloated_table_report() -> pb.TableReport:
    report = pb.TableReport(
        schema="public",
        table="bloated",
        action=pb.TABLE_ACTION_VACUUM,
        reasons=["dead_tuples"],
        evidence={"dead_tuples": 5000.0, "dead_ratio": 0.5, "vacuum_threshold_tuples": 1050.0},
    )
    report.duration.FromMilliseconds(1500)
    return report


async def test_getjob_of_a_child_returns_its_table_reports_and_every_other_answer_leaves_them_out(
    tmp_path: Path,
) -> None:
    async with running_manager(tmp_path) as m:
        worker = await m.connected_worker("w1", ["db1"])
        created = await m.create(["db1"], [pb.OPERATION_VACUUM])
        (assignment,) = await worker.wait_assignments(1)
        table = _bloated_table_report()
        result = pb.OperationResult(engine="postgresql", objects_processed=1, tables=[table])
        await worker.write(
            pb.WorkerMessage(
                result=pb.Result(
                    job_id=assignment.job_id,
                    attempt=assignment.attempt,
                    status=pb.JOB_STATUS_COMPLETED,
                    result=result,
                )
            )
        )

        async def completed() -> bool:
            return (await m.job(assignment.job_id)).status == pb.JOB_STATUS_COMPLETED

        await eventually(completed, message="child completed")

        child = await m.job(assignment.job_id)
        assert list(child.result.tables) == [table]

        page = (await m.get(created.parent.id)).children
        assert [c.id for c in page] == [assignment.job_id]
        assert page[0].result.engine == "postgresql" and not page[0].result.tables

        listed = await m.api.ListJobs(pb.ListJobsRequest(parent_id=created.parent.id))
        assert listed.jobs[0].result.objects_processed == 1 and not listed.jobs[0].result.tables

        events = [event async for event in m.api.WatchJob(pb.WatchJobRequest(id=assignment.job_id))]
        assert events[0].snapshot.job.result.engine == "postgresql"
        assert all(not event.snapshot.job.result.tables and not event.changed.result.tables for event in events)


def test_table_reports_survive_the_store_on_both_databases(store: JobStore) -> None:
    created = store.create_maintenance(MaintenanceSpec(("db1",), (Operation.VACUUM,), None, 3))
    (child,) = created.children
    store.start_children([StartRequest(child.id, child.attempt, "w1")])
    table = TableReport(
        schema="public",
        table="bloated",
        action=TableAction.VACUUM,
        reasons=("dead_tuples",),
        evidence={"dead_tuples": 10_000.0, "dead_ratio": 0.5},
        before={"dead_tuples": 10_000.0},
        after={"dead_tuples": 0.0},
        duration_seconds=0.25,
    )
    report = OperationReport(engine="postgresql", objects_processed=1, tables=(table,))

    store.finish_child(ChildOutcome(child.id, child.attempt, "w1", JobStatus.COMPLETED, None, report))

    stored = store.get_job(child.id)
    assert stored is not None and stored.report == report
