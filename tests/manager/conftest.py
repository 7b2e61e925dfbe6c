from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from manager_service.store import SQLAlchemyJobStore, open_store
from tests.support.servers import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The job store's URL: a SQLite file, and a fresh PostgreSQL database (the same tests on both)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.db"
        return
    with fresh_postgres_database("dbmaint_store") as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def store(db_url: str) -> Iterator[SQLAlchemyJobStore]:
    opened = open_store(db_url)
    yield opened
    opened.close()
