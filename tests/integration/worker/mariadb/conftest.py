from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL

from tests.support.mariadb import connect


@pytest.fixture
def admin(mariadb_url: URL) -> Iterator[Any]:
    """An autocommit connection to the test's fresh database, to set up tables and read the catalog."""
    conn = connect(mariadb_url)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def db(mariadb_url: URL) -> str:
    """The name of the test's fresh database."""
    assert mariadb_url.database
    return mariadb_url.database
