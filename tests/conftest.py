"""Fixtures every tier may use: a fresh PostgreSQL or MariaDB database per test (see tests/support/servers), the
job store's URL on both stores, sample SQLite targets, and the CLI against an in-process fake manager."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from dbmaint.cli.main import main
from dbmaint.local import free_port
from tests.support.cli import Run
from tests.support.fake_manager_for_cli import FakeManager
from tests.support.servers import fresh_mariadb_database, fresh_postgres_database
from tests.support.worker import make_db

# An async test is bounded more tightly than the suite's 300 s: a hung stream or a lost wake-up fails within a
# minute, naming the test (a test that needs longer says so with its own ``@pytest.mark.timeout``).
ASYNC_TEST_TIMEOUT = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        test = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(test) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(ASYNC_TEST_TIMEOUT))


@pytest.fixture
def postgres_url() -> Iterator[URL]:
    """A fresh PostgreSQL database for this test (SQLAlchemy URL, psycopg driver)."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def mariadb_url() -> Iterator[URL]:
    """A fresh MariaDB database for this test (SQLAlchemy URL, PyMySQL driver)."""
    with fresh_mariadb_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The job store's URL: a SQLite file, and a fresh PostgreSQL database (the same tests on both)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.db"
        return
    with fresh_postgres_database("dbmaint_store") as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def sample_db(tmp_path: Path) -> Path:
    """A ~3 MB database: a table of 20k rows and an index, half the rows deleted (a free list to reclaim)."""
    return make_db(tmp_path / "sample.db")


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "small.db", rows=500)


@pytest.fixture
def fake() -> Iterator[FakeManager]:
    manager = FakeManager().start()
    yield manager
    manager.stop()


@pytest.fixture
def cli(fake: FakeManager, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Runs ``dbmaint --manager <fake> ARGS...`` in-process; returns the exit code and what it printed."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = main(["--manager", fake.address, *args])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    return free_port()
