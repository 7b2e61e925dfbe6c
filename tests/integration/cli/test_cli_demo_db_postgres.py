"""make-demo-db on PostgreSQL: a table whose dead tuples VACUUM removes (the local server; see tests/support)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from dbmaint.cli.demo import sqlite_stats
from dbmaint.cli.demo_postgres import DEMO_INDEX, DEMO_TABLE
from dbmaint.cli.main import main
from tests.support.polling import wait_for


@contextmanager
def connect(url: URL, autocommit: bool = False) -> Iterator[Connection]:
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT" if autocommit else None)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def table_stats(url: URL) -> dict[str, Any] | None:
    """The demo table's row of pg_stat_user_tables, read afresh (a new snapshot of the cumulative statistics)."""
    with connect(url) as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = conn.execute(
            text("SELECT n_live_tup, n_dead_tup, vacuum_count FROM pg_stat_user_tables WHERE relname = :t"),
            {"t": DEMO_TABLE},
        ).one_or_none()
    return None if row is None else dict(row._mapping)


def wait_for_stats(url: URL, **expected: int) -> dict[str, Any]:
    """Statistics can lag behind a commit: poll until they show ``expected``; fail after a deadline."""
    return wait_for(
        lambda: (
            (stats := table_stats(url)) is not None and all(stats[k] == v for k, v in expected.items()) and stats
        ),
        timeout=15,
        interval=0.1,
        message=f"pg_stat_user_tables never showed {expected} for {DEMO_TABLE}",
    )


def table_oid(url: URL) -> int | None:
    with connect(url) as conn:
        oid: int | None = conn.execute(text("SELECT to_regclass(:t)::oid::int8"), {"t": DEMO_TABLE}).scalar()
    return oid


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["make-demo-db", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_make_demo_db_leaves_dead_tuples_for_vacuum(postgres_url: URL, capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres_url.render_as_string(hide_password=False)

    code, out, err = run(capsys, url, "--rows", "6000")

    assert code == 0, err
    assert out.startswith(f"created {postgres_url.render_as_string(hide_password=True)} table {DEMO_TABLE}: ")
    assert "3000 live rows, 3000 dead tuples" in out
    # make-demo-db flushed its statistics before it returned; polling only guards against a slow server
    before = wait_for_stats(postgres_url, n_live_tup=3000, n_dead_tup=3000)
    assert before["vacuum_count"] == 0
    with connect(postgres_url, autocommit=True) as conn:
        options = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:t)"), {"t": DEMO_TABLE}
        )
        assert "autovacuum_enabled=off" in options.scalar_one()
        indexes = conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": DEMO_TABLE})
        assert DEMO_INDEX in set(indexes.scalars())
        conn.execute(text(f"VACUUM {DEMO_TABLE}"))
        rows = conn.execute(text(f"SELECT count(*), min(id), min(length(payload)) FROM {DEMO_TABLE}")).one()
    after = wait_for_stats(postgres_url, n_dead_tup=0, vacuum_count=1)
    assert after["n_live_tup"] == 3000
    assert tuple(rows) == (3000, 3001, 112)


def test_make_demo_db_refuses_an_existing_table_without_force(
    postgres_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_url.render_as_string(hide_password=False)
    assert run(capsys, url, "--rows", "100")[0] == 0
    first = table_oid(postgres_url)

    refused = run(capsys, url, "--rows", "100")
    kept = table_oid(postgres_url)
    forced = run(capsys, url, "--rows", "400", "--force")

    assert refused[0] == 2
    masked = postgres_url.render_as_string(hide_password=True)
    assert refused[2].strip() == (
        f"dbmaint: error: table {DEMO_TABLE} already exists in {masked} (pass --force to replace it)"
    )
    assert kept == first
    assert forced[0] == 0, forced[2]
    assert table_oid(postgres_url) not in (None, first)
    assert wait_for_stats(postgres_url, n_live_tup=200, n_dead_tup=200)


def test_make_demo_db_exist_ok_leaves_an_existing_table_alone(
    postgres_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_url.render_as_string(hide_password=False)
    assert run(capsys, url, "--rows", "200")[0] == 0
    with connect(postgres_url) as conn:
        conn.execute(text(f"INSERT INTO {DEMO_TABLE} VALUES (-1, 'marker', now(), '\\x00')"))
        conn.commit()
    first = table_oid(postgres_url)

    code, out, err = run(capsys, url, "--rows", "200", "--exist-ok")

    assert code == 0, err
    assert out.startswith(f"kept the existing {postgres_url.render_as_string(hide_password=True)} table ")
    assert table_oid(postgres_url) == first
    with connect(postgres_url) as conn:
        assert conn.execute(text(f"SELECT kind FROM {DEMO_TABLE} WHERE id = -1")).scalar() == "marker"


def test_make_demo_db_never_prints_the_password(postgres_url: URL, capsys: pytest.CaptureFixture[str]) -> None:
    # trust authentication ignores the password; the output must still mask it
    url = postgres_url.set(password="s3cret-pw")

    created = run(capsys, url.render_as_string(hide_password=False), "--rows", "100")
    refused = run(capsys, url.render_as_string(hide_password=False), "--rows", "100")

    assert created[0] == 0 and refused[0] == 2
    for text_ in (*created[1:], *refused[1:]):
        assert "s3cret-pw" not in text_
    assert "***@" in created[1] and "***@" in refused[2]


def test_make_demo_db_reports_an_unreachable_server_without_the_password(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, f"postgresql+psycopg://app:s3cret-pw@127.0.0.1:{closed_port}/demo")

    assert code == 5
    masked = f"postgresql+psycopg://app:***@127.0.0.1:{closed_port}/demo"
    assert err.startswith(f"dbmaint: error: cannot create the demo table in {masked}: ")
    assert "s3cret-pw" not in out + err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql+pymysql://root@127.0.0.1/demo",
            "makes a SQLite file or a PostgreSQL table, not a 'mysql' database",
        ),
        ("postgresql+psycopg2://u:pw@db/demo", "use the psycopg driver (postgresql+psycopg://), not 'psycopg2'"),
        ("postgresql+psycopg://u:pw@db", "postgresql+psycopg://u:***@db: the URL names no database"),
        ("sqlite://", "a SQLite URL must name a file"),
    ],
)
def test_make_demo_db_rejects_other_urls(url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, url)

    assert code == 2
    assert message in err and ":pw@" not in err


def test_make_demo_db_takes_a_sqlite_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.db"

    code, out, _ = run(capsys, f"sqlite:///{path}", "--rows", "1000")

    assert code == 0
    assert out.startswith(f"created {path}: ")
    assert sqlite_stats(path).freelist_count > 0
