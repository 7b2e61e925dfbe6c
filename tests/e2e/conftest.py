from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Cluster, cluster
from tests.support.servers import fresh_postgres_database


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The manager's job store: SQLite (default) or, where a module parametrizes it, a fresh PostgreSQL
    database. Yields the URL (None: the SQLite file in the test's folder)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield None
        return
    with fresh_postgres_database("dbmaint_e2e") as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest, store_backend: str | None) -> Iterator[Cluster]:
    """A manager and workers as real processes; their logs are printed when the test fails."""
    with cluster(tmp_path, store=store_backend) as running:
        yield running
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(running.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
