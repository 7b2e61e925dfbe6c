"""The local PostgreSQL and MariaDB servers the engine and job-store tests run against.

In CI (``CI`` set) a missing server FAILS the tests that need it; on a laptop without the servers they skip
with a reason that says how to enable them. Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

POSTGRES_ENV = "DBMAINT_TEST_POSTGRES_URL"
MARIADB_ENV = "DBMAINT_TEST_MARIADB_URL"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/test"


def postgres_admin_url() -> URL:
    return make_url(os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT))


def mariadb_admin_url() -> URL:
    return make_url(os.environ.get(MARIADB_ENV, MARIADB_DEFAULT))


def _require(name: str, url: URL, env: str) -> None:
    connect_args = {"connect_timeout": 3}
    try:
        engine = create_engine(url, connect_args=connect_args)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:
        where = url.render_as_string(hide_password=True)
        reason = f"{name} is not reachable at {where}: {type(error).__name__}: {str(error).splitlines()[0]}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the {name} tests; .ci/run starts the server)", pytrace=False)
        pytest.skip(f"{reason}; start {name} or point {env} at one to run these tests")


def require_postgres() -> URL:
    url = postgres_admin_url()
    _require("PostgreSQL", url, POSTGRES_ENV)
    return url


def require_mariadb() -> URL:
    url = mariadb_admin_url()
    _require("MariaDB", url, MARIADB_ENV)
    return url


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def _fresh_database(admin: URL, name: str, create: str, drop: str) -> Iterator[URL]:
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(create))
    try:
        yield admin.set(database=name)
    finally:
        with engine.connect() as conn:
            conn.execute(text(drop))
        engine.dispose()


def fresh_postgres_database(prefix: str = "dbmaint_t") -> contextlib.AbstractContextManager[URL]:
    """A new, empty PostgreSQL database; dropped (connections terminated) afterwards."""
    name = _unique(prefix)
    return _fresh_database(
        require_postgres(), name, f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    )


def fresh_mariadb_database(prefix: str = "dbmaint_t") -> contextlib.AbstractContextManager[URL]:
    """A new, empty MariaDB database; dropped afterwards."""
    name = _unique(prefix)
    return _fresh_database(
        require_mariadb(), name, f"CREATE DATABASE `{name}`", f"DROP DATABASE IF EXISTS `{name}`"
    )
