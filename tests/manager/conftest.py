from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from manager_service.store import SQLAlchemyJobStore, open_store


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.db"


@pytest.fixture
def store(db_url: str) -> Iterator[SQLAlchemyJobStore]:
    opened = open_store(db_url)
    yield opened
    opened.close()
