from __future__ import annotations

from collections.abc import Iterator

import pytest

from manager_service.store import SQLAlchemyJobStore, open_store


@pytest.fixture
def store(db_url: str) -> Iterator[SQLAlchemyJobStore]:
    opened = open_store(db_url)
    yield opened
    opened.close()
