"""``/api/v1/events`` on a real manager: an event per stored change (id: change_seq, data: the Job in the
protobuf JSON mapping), a resume from Last-Event-ID, a reset for an id the store does not have, and the
debounce that sends only the latest version of each job in a batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import create_engine, text

from dbmaint.v1 import maintenance_pb2 as pb
from tests.integration.console.support import console, of, stream
from tests.support.manager import eventually


async def test_a_cancel_arrives_as_an_event_with_the_change_seq_and_the_job(tmp_path: Path) -> None:
    async with console(tmp_path) as c, stream(c) as events:
        created = await c.manager.create(["db1"])
        first = await events.until(of(created.parent.id))
        assert first.data["status"] == "JOB_STATUS_PENDING" and first.id.isdigit()
        await c.manager.api.CancelJob(pb.CancelJobRequest(id=created.parent.id))
        cancelled = await events.until(of(created.parent.id, "JOB_STATUS_CANCELLED"))
        assert int(cancelled.id) > int(first.id)
        assert cancelled.data["type"] == created.parent.type


async def test_a_reconnect_with_last_event_id_resumes_after_it(tmp_path: Path) -> None:
    async with console(tmp_path) as c:
        async with stream(c) as events:
            before = await c.manager.create(["db1"])
            seen = await events.until(of(before.parent.id))
        missed = await c.manager.create(["db2"])  # while no stream is open
        async with stream(c, last_event_id=seen.id) as events:
            caught_up = await events.until(of(missed.parent.id))
            assert int(caught_up.id) > int(seen.id)
            assert not [e for e in events.events if e.kind == "reset"]
            assert all(int(e.id) > int(seen.id) for e in events.events)


async def test_a_page_opens_its_stream_after_the_change_its_data_was_read_at(tmp_path: Path) -> None:
    """What a parent page does (``?after=`` its data-since): a change committed between the page's read and the
    stream's open is sent, not lost (the race a browser test met: a cancel that landed right after the page
    loaded never reached it)."""
    async with console(tmp_path) as c:
        async with stream(c) as events:
            before = await c.manager.create(["db1"])
            read_at = await events.until(of(before.parent.id))
        await c.manager.api.CancelJob(pb.CancelJobRequest(id=before.parent.id))  # after the "page" was read
        async with stream(c, after=read_at.id) as events:
            await events.until(of(before.parent.id, "JOB_STATUS_CANCELLED"))


async def test_an_unknown_last_event_id_gets_a_reset(tmp_path: Path) -> None:
    async with console(tmp_path) as c, stream(c, last_event_id="999999") as events:
        await events.until(lambda e: e.kind == "reset")
        created = await c.manager.create(["db1"])
        await events.until(of(created.parent.id))  # and it goes on from the store's newest change


async def test_a_batch_sends_only_the_latest_version_of_each_job(tmp_path: Path) -> None:
    async with console(tmp_path) as c:
        async with stream(c) as events:
            marker = await c.manager.create(["db0"])
            seen = await events.until(of(marker.parent.id))
        # While no stream is open, the parent goes through several versions (pending, running, completed):
        worker = await c.manager.connected_worker("w1", ["db1", "db2"], slots=2)
        created = await c.manager.create(["db1", "db2"], [pb.OPERATION_VACUUM])
        assignments = await worker.wait_assignments(2, timeout=10)
        for assignment in assignments:
            await worker.complete(assignment)

        async def parent_completed() -> bool:
            return (await c.manager.job(created.parent.id)).status == pb.JOB_STATUS_COMPLETED

        await eventually(parent_completed, timeout=10)
        engine = create_engine(f"sqlite:///{tmp_path}/jobs.db")
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT count(*) FROM job_changes WHERE job_id = :id AND change_seq > :after"),
                {"id": created.parent.id, "after": int(seen.id)},
            ).scalar_one()
        engine.dispose()
        assert stored >= 3  # the precondition: several changes of the parent to coalesce
        async with stream(c, last_event_id=seen.id) as events:
            await events.until(of(created.parent.id, "JOB_STATUS_COMPLETED"))
            await asyncio.sleep(0.6)  # two more debounce periods: nothing else may come for it
            parent_events = [e for e in events.events if of(created.parent.id)(e)]
            assert len(parent_events) == 1
            ids = [e.data["id"] for e in events.events if e.kind == "job"]
            assert len(ids) == len(set(ids))


async def test_an_open_stream_ends_when_the_manager_stops(tmp_path: Path) -> None:
    async with console(tmp_path) as c, stream(c) as events:
        created = await c.manager.create(["db1"])
        await events.until(of(created.parent.id))
        await asyncio.wait_for(c.manager.server.shutdown(), 10)
        await asyncio.wait_for(events.task, 10)  # the server ended the response
