"""Two managers on one store: one acts, the other stands by (in-process servers; the real-process scenarios are
in tests/e2e/test_standby.py).

Health is pinned: the empty service name is SERVING while the process runs, standbys included; WorkerService
and MaintenanceService are SERVING only on the manager that holds the store. A standby refuses worker streams
and requests UNAVAILABLE, naming the holder, with the holder's advertised address in the trailing metadata
``dbmaint-leader`` while its lease is alive. A leader cut off from the store steps down by itself before its
lease can lapse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from dbmaint.config import ConfigError
from dbmaint.v1 import maintenance_pb2 as pb
from manager_service.config import parse_config
from manager_service.errors import LeaseLost, StoreInUse
from manager_service.server import MAINTENANCE_SERVICE, WORKER_SERVICE
from manager_service.store import open_store
from tests.support.manager import Manager, eventually, running_manager
from tests.support.proxy import TcpProxy
from tests.support.servers import fresh_postgres_database

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("dbmaint_standby") as url:
        yield url.render_as_string(hide_password=False)


async def _health(manager: Manager) -> tuple[int, int, int]:
    answers = []
    for service in ("", MAINTENANCE_SERVICE, WORKER_SERVICE):
        reply = await manager.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        answers.append(reply.status)
    return (answers[0], answers[1], answers[2])


# A write: a standby refuses it (its reads it answers from the store).
DRAIN = pb.DrainWorkerRequest(worker_id="nobody", reason="probe")


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    return refused.value


async def _names_the_leader(manager: Manager, address: str) -> bool:
    refused = await _refused(manager.api.DrainWorker(DRAIN))
    return _hint(refused.trailing_metadata()) == address


def _not_run(metadata: object) -> bool:
    """Whether a call's trailing metadata carries the manager's mark that it was not carried out."""
    return "dbmaint-not-run" in dict(metadata or ())  # type: ignore[call-overload]


def _hint(metadata: object) -> str | None:
    """The ``dbmaint-leader`` value of a call's trailing metadata (None: absent)."""
    return dict(metadata or ()).get("dbmaint-leader")  # type: ignore[call-overload, no-any-return]


@pytest.mark.timeout(60)
async def test_a_second_manager_stands_by_and_refuses_naming_the_holder(tmp_path: Path, pg_url: str) -> None:
    async with (
        running_manager(tmp_path / "a", database_url=pg_url, store_lease=3.0) as leader,
        running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as standby,
    ):
        assert await _health(leader) == (SERVING, SERVING, SERVING)
        assert await _health(standby) == (SERVING, NOT_SERVING, NOT_SERVING)
        holder = f"manager {leader.server.manager_id} at {leader.server.advertised_address}"

        create = await _refused(standby.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["db"])))
        assert create.code() == grpc.StatusCode.UNAVAILABLE and holder in (create.details() or "")
        cancel = await _refused(standby.api.CancelJob(pb.CancelJobRequest(id="x")))
        assert cancel.code() == grpc.StatusCode.UNAVAILABLE
        drain = await _refused(standby.api.DrainWorker(pb.DrainWorkerRequest(worker_id="w1")))
        assert drain.code() == grpc.StatusCode.UNAVAILABLE

        worker = standby.worker("w1", ["db"])
        await worker.open()
        assert await worker.status() == grpc.StatusCode.UNAVAILABLE
        assert holder in await worker.details()

        created = await leader.create(["db"], [pb.OPERATION_ANALYZE])
        assert created.created, "the leader acts as before"


@pytest.mark.timeout(60)
async def test_a_standby_takes_over_at_once_when_the_leader_shuts_down_cleanly(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as first:
        created = await first.create(["db"], [pb.OPERATION_ANALYZE])
        async with running_manager(tmp_path / "a", database_url=pg_url, store_lease=3.0) as second:
            assert not second.server.leading
            await first.server.shutdown()  # gives the lease up

            async def serving() -> bool:
                return await _health(second) == (SERVING, SERVING, SERVING)

            await eventually(serving, timeout=5, message="the standby took over at its next poll (lease/3)")
            worker = await second.connected_worker("w1", ["db"])
            (assignment,) = await worker.wait_assignments(1)
            assert assignment.job_id == created.children[0].id, "rebuilt from the store"


@pytest.mark.timeout(60)
async def test_a_leader_that_loses_the_lease_stops_acting_and_stands_by(tmp_path: Path, pg_url: str) -> None:
    async with running_manager(tmp_path, database_url=pg_url, store_lease=30.0) as manager:
        worker = await manager.connected_worker("w1", ["db"])
        # Another manager takes the store (as after a pause longer than the lease).
        engine = create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE store_lease SET holder = 'intruder', address = '10.9.9.9:50051', term = term + 1, "
                    "expires_at = now() + interval '1 hour'"
                )
            )
        engine.dispose()

        refused = await _refused(manager.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["db"])))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "intruder at 10.9.9.9:50051" in (refused.details() or "")
        assert _hint(refused.trailing_metadata()) == "10.9.9.9:50051", "the write that found the lease gone"
        assert _not_run(refused.trailing_metadata()), "it wrote nothing, and says so"

        async def standing_by() -> bool:
            return await _health(manager) == (SERVING, NOT_SERVING, NOT_SERVING)

        await eventually(standing_by, timeout=5, message="NOT_SERVING after the lease was lost")
        await eventually(lambda: worker.ended, timeout=5, message="the worker's stream was closed")
        again = await _refused(manager.api.DrainWorker(pb.DrainWorkerRequest(worker_id="w1")))
        assert again.code() == grpc.StatusCode.UNAVAILABLE and "intruder" in (again.details() or "")
        assert _hint(again.trailing_metadata()) == "10.9.9.9:50051", "the standby it became"


@pytest.mark.timeout(60)
async def test_a_standbys_refusals_carry_the_leaders_advertised_address_in_the_trailing_metadata(
    tmp_path: Path, pg_url: str
) -> None:
    async with (
        running_manager(
            tmp_path / "a", database_url=pg_url, store_lease=3.0, advertise="leader.example:50051"
        ) as a,
        running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as standby,
    ):
        create = await _refused(standby.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["db"])))
        assert create.code() == grpc.StatusCode.UNAVAILABLE
        assert _hint(create.trailing_metadata()) == "leader.example:50051"
        assert _not_run(create.trailing_metadata()), "a client may send it to the leader"
        assert "at leader.example:50051" in (create.details() or ""), "--advertise is what the lease row holds"

        worker = standby.worker("w1", ["db"])
        await worker.open()
        assert await worker.status() == grpc.StatusCode.UNAVAILABLE
        assert _hint(await worker.call.trailing_metadata()) == "leader.example:50051", "worker streams too"

        answered = a.api.ListWorkers(pb.ListWorkersRequest())
        await answered
        assert _hint(await answered.trailing_metadata()) is None, "the leader answers itself"
        assert not _not_run(await answered.trailing_metadata())


@pytest.mark.timeout(60)
async def test_a_standby_looks_again_when_the_holders_lease_can_lapse_not_a_whole_period_later(
    tmp_path: Path, pg_url: str
) -> None:
    open_store(pg_url).close()
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO store_lease (name, holder, address, term, expires_at) "
                "VALUES ('manager', 'crashed', '10.9.9.9:50051', 7, now() + interval '2 seconds')"
            )
        )
    engine.dispose()
    # A 60 s lease: the standby's regular look comes every 20 s; the crashed holder's lease lapses in 2.
    async with running_manager(tmp_path, database_url=pg_url, store_lease=60.0) as standby:
        assert not standby.server.leading
        refused = await _refused(standby.api.DrainWorker(DRAIN))
        assert _hint(refused.trailing_metadata()) == "10.9.9.9:50051", "while the holder's lease is alive"

        await eventually(lambda: standby.server.leading, timeout=10, message="no takeover when the lease lapsed")
        assert await _health(standby) == (SERVING, SERVING, SERVING)


@pytest.mark.timeout(90)
async def test_a_leader_cut_off_from_the_store_steps_down_before_its_lease_can_lapse_and_commits_nothing_after(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manager_service")
    with TcpProxy("127.0.0.1:5432") as link:
        via_link = make_url(pg_url).set(host=link.host, port=link.port).render_as_string(hide_password=False)
        async with running_manager(tmp_path / "a", database_url=via_link, store_lease=3.0) as leader:
            created = await leader.create(["db"], [pb.OPERATION_ANALYZE])
            worker = await leader.connected_worker("w1", ["db"])
            (assignment,) = await worker.wait_assignments(1)
            async with running_manager(tmp_path / "b", database_url=pg_url, store_lease=3.0) as standby:
                assert leader.server.leading and not standby.server.leading
                link.blackhole()  # every byte to and from the store is dropped; no side sees an error
                await worker.complete(assignment)  # the leader's commit of it goes into the dead link

                # Sampled until the standby leads: the old leader must have stopped acting first (a standby can
                # only take the lease once it lapsed by the database's clock).
                samples: list[tuple[bool, bool]] = []
                deadline = time.monotonic() + 30
                while not standby.server.leading and time.monotonic() < deadline:
                    samples.append((leader.server.leading, standby.server.leading))
                    await asyncio.sleep(0.005)
                assert standby.server.leading, "the standby never took over"
                assert samples[0] == (True, False), "the leader led when the link died"
                assert samples[-1] == (False, False), "the cut-off leader still acted when its lease lapsed"
                assert await _health(leader) == (SERVING, NOT_SERVING, NOT_SERVING)
                assert leader.server.metrics.registry.get_sample_value("dbmaint_manager_leader") == 0
                assert leader.server.metrics.registry.get_sample_value("dbmaint_manager_takeovers_total") == 1

                refused = await _refused(leader.api.CreateMaintenance(pb.CreateMaintenanceRequest(targets=["db"])))
                assert refused.code() == grpc.StatusCode.UNAVAILABLE
                assert _hint(refused.trailing_metadata()) is None, "it cannot know who leads now"

                # The link comes back (and the stuck connections break): the old leader still writes nothing.
                link.heal()
                link.cut()
                await eventually(
                    lambda: _names_the_leader(leader, standby.server.advertised_address),
                    timeout=15,
                    message="the old leader, a standby again, never named the new leader",
                )
                child = await standby.get(created.children[0].id)
                assert (child.job.status, child.job.attempt) == (pb.JOB_STATUS_RUNNING, 1), (
                    "the result sent to the cut-off leader was not committed"
                )
                assert "stepped down: could not renew the job store lease" in caplog.text
                assert "became leader (term 2)" in caplog.text, "the standby took the next term"


@pytest.mark.timeout(60)
async def test_a_second_manager_on_one_sqlite_store_cannot_start(tmp_path: Path) -> None:
    async with running_manager(tmp_path):
        with pytest.raises(StoreInUse, match=r"jobs\.db\.manager-lock"):
            async with running_manager(tmp_path):
                pass


@pytest.mark.timeout(60)
async def test_after_a_write_whose_outcome_is_unknown_the_manager_rebuilds_from_the_store(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create committed, but the link broke during COMMIT and the store could not be reached to look: the
    manager cannot trust its memory, so it ends the term and takes the store again, rebuilt from it."""
    monkeypatch.setattr("manager_service.store.sqlalchemy_store.RECONCILE_DELAYS", (0.0, 0.01))

    async with running_manager(tmp_path, database_url=db_url, store_lease=1.5) as manager:
        store = manager.server._store
        assert store is not None
        dialect, engine = store.engine.dialect, store.engine
        original_commit, original_connect = dialect.do_commit, engine.connect
        cut = [False]

        def do_commit(dbapi_connection: object) -> None:
            original_commit(dbapi_connection)
            cut[0] = True
            raise dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

        def connect() -> object:
            if cut[0]:
                raise OperationalError("SELECT", {}, Exception("connection refused"))
            return original_connect()

        monkeypatch.setattr(dialect, "do_commit", do_commit)
        monkeypatch.setattr(engine, "connect", connect)
        refused = await _refused(manager.create(["db"], [pb.OPERATION_ANALYZE]))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "whether the write committed" in (refused.details() or "")

        async def serving_again() -> bool:
            return await _health(manager) == (SERVING, SERVING, SERVING) and manager.server._store is not store

        await eventually(serving_again, timeout=10, message="a new term after the unknown commit")
        listed = await manager.api.ListJobs(pb.ListJobsRequest(type="database_maintenance_parent"), timeout=5)
        assert len(listed.jobs) == 1, "the create had committed"
        worker = await manager.connected_worker("w1", ["db"])
        (assignment,) = await worker.wait_assignments(1)
        reply = await manager.get(listed.jobs[0].id)
        assert assignment.job_id == reply.children[0].id, "rebuilt from the store"


@pytest.mark.timeout(60)
async def test_a_fatal_lease_lost_of_the_orchestrator_steps_down_instead_of_stopping(tmp_path: Path) -> None:
    async with running_manager(tmp_path, store_lease=1.5) as manager:
        waiting = asyncio.ensure_future(manager.server.wait())
        first = manager.server._orchestrator
        assert first is not None
        first.fatal.set_exception(LeaseLost("another manager took the store"))

        await eventually(lambda: manager.server._orchestrator not in (None, first), timeout=10)
        assert not waiting.done(), "a lost lease does not stop the manager"
        assert await _health(manager) == (SERVING, SERVING, SERVING), "the lease was free again: a new term"

        second = manager.server._orchestrator
        assert second is not None
        second.fatal.set_exception(RuntimeError("a side task died"))
        with pytest.raises(RuntimeError, match="a side task died"):
            await asyncio.wait_for(waiting, 10)


def test_the_store_lease_is_a_setting_and_the_idle_timeout_stays_below_it() -> None:
    assert parse_config([], {}).store_lease == 6.0, "short by default: failover within seconds"
    assert parse_config([], {"DBMAINT_STORE_LEASE": "4"}).store_lease == 4.0
    config = parse_config(["--store-lease", "6"], {"DBMAINT_STORE_LEASE": "4"})
    assert config.store_lease == 6.0
    for lease in (0.5, 1.5, 3.0, 6.0, 15.0, 60.0):
        config = parse_config(["--store-lease", str(lease)], {})
        assert 0 < config.store_idle_timeout < lease
        # The watchdog steps down after two missed renewals at the earliest, and before the lease can lapse.
        assert 2 * config.lease_renewal_period < lease - config.lease_margin < lease
    with pytest.raises(ConfigError, match="--store-lease"):
        parse_config(["--store-lease", "0"], {})


def test_the_advertised_address_is_a_setting_empty_by_default_so_the_listen_address_is_used() -> None:
    assert parse_config([], {}).advertise == ""
    assert parse_config([], {"DBMAINT_ADVERTISE": "m1.example:50051"}).advertise == "m1.example:50051"
    flagged = parse_config(["--advertise", "10.0.0.7:50051"], {"DBMAINT_ADVERTISE": "m1.example:50051"})
    assert flagged.advertise == "10.0.0.7:50051"
    with pytest.raises(ConfigError, match="--advertise"):
        parse_config(["--advertise", "no-port"], {})
