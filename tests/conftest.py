"""Fixtures every tier may use: a fresh PostgreSQL or MariaDB database per test (see tests/support/servers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from tests.support.servers import fresh_mariadb_database, fresh_postgres_database


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
