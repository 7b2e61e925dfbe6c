"""MariaDB URLs: drivers and options checked at start without a server, connection failures without secrets."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy.engine import URL, make_url

from dbmaint.local import free_port
from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation
from tests.support.mariadb import query
from worker_service.cancel import CancelToken
from worker_service.config import TargetSpec
from worker_service.engines import EngineUnavailable, default_registry
from worker_service.engines.mariadb import MariadbEngine
from worker_service.executor import Assignment, run_assignment
from worker_service.faults import FaultPlan
from worker_service.targets import BoundTarget, bind_targets

SECRET = "s3cr3t-Pw_9f2"
# Nothing listens there: the URLs below are checked, never connected to.
NOWHERE = "127.0.0.1:1"


def assignment(operation: str = "vacuum") -> Assignment:
    return Assignment(
        job_id="job-1",
        attempt=1,
        target="maria",
        operation=operation,
        job_type=CHILD_JOB_TYPE,
        config={"operation": operation, "target": "maria"},
    )


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "mariadb+pymysql"])
def test_the_registry_serves_both_dialects_with_pymysql_without_a_server(scheme: str) -> None:
    registry = default_registry(FaultPlan())
    engine = registry.for_url(make_url(f"{scheme}://app:{SECRET}@{NOWHERE}/shop?charset=utf8mb4"))
    assert isinstance(engine, MariadbEngine)
    assert engine.name == "mariadb" and engine.dialect == scheme.partition("+")[0]
    assert {"mysql", "mariadb", "sqlite"} <= set(registry.dialects)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app@db/shop",  # mysqlclient (MySQLdb), SQLAlchemy's default driver
        "mariadb://app@db/shop",
        "mysql+mysqldb://app@db/shop",
        "mariadb+mariadbconnector://app@db/shop",
        "mysql+mysqlconnector://app@db/shop",
        "mysql+asyncmy://app@db/shop",
    ],
)
def test_other_drivers_are_refused_at_start(url: str) -> None:
    parsed = make_url(url)
    with pytest.raises(EngineUnavailable) as refused:
        default_registry().for_url(parsed)
    message = str(refused.value)
    assert f"driver {parsed.get_driver_name()!r} is not supported" in message
    assert "+pymysql://" in message


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("lock_wait_timeout=soon", "lock_wait_timeout='soon' is not a whole number of seconds"),
        ("lock_wait_timeout=-1", "lock_wait_timeout=-1 is out of range"),
        ("lock_wait_timout=3", "unknown connection option(s) in the URL query: lock_wait_timout"),
    ],
)
def test_bad_options_are_refused_at_start_and_the_password_is_masked(query_string: str, expected: str) -> None:
    spec = TargetSpec("maria", make_url(f"mysql+pymysql://app:{SECRET}@{NOWHERE}/shop?{query_string}"))
    with pytest.raises(EngineUnavailable) as refused:
        bind_targets([spec], default_registry())
    assert expected in str(refused.value)
    assert "target 'maria'" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_good_options_are_accepted_without_a_server() -> None:
    url = make_url(
        f"mariadb+pymysql://app:{SECRET}@{NOWHERE}/shop?lock_wait_timeout=0&connect_timeout=3&charset=utf8mb4"
    )
    bound = bind_targets([TargetSpec("maria", url)], default_registry())
    assert isinstance(bound["maria"].engine, MariadbEngine)


def test_a_wrong_password_fails_without_showing_it(mariadb_url: URL) -> None:
    url = mariadb_url.set(password=SECRET)
    outcome = run_assignment(assignment(), BoundTarget("maria", url, MariadbEngine()), CancelToken())
    assert outcome.status == JobStatus.FAILED
    assert "cannot connect to MariaDB at" in outcome.error and "(1045) Access denied" in outcome.error
    assert SECRET not in outcome.error


def test_an_unreachable_server_fails_fast_without_the_password() -> None:
    url = make_url(f"mysql+pymysql://app:{SECRET}@127.0.0.1:{free_port()}/shop")
    started = time.monotonic()
    outcome = run_assignment(assignment(), BoundTarget("maria", url, MariadbEngine()), CancelToken())
    assert time.monotonic() - started < 5.0
    assert outcome.status == JobStatus.FAILED
    assert "cannot connect to MariaDB at 127.0.0.1:" in outcome.error and "(2003)" in outcome.error
    assert SECRET not in outcome.error


def test_a_missing_database_fails_and_is_not_created(mariadb_url: URL, admin: Any) -> None:
    url = mariadb_url.set(database="dbmaint_no_such_db")
    with pytest.raises(Exception, match="MariaDB database 'dbmaint_no_such_db' does not exist"):
        MariadbEngine().run(Operation.ANALYZE, url, CancelToken(), None)
    assert not query(admin, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'dbmaint_no_such_db'")
