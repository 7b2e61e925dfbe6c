"""The Alembic migrations are the schema: they must produce exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from manager_service.store import migrations, open_store
from manager_service.store.models import metadata
from manager_service.store.sqlalchemy_store import make_engine


def test_migrations_and_models_do_not_drift(db_url: str) -> None:
    engine = make_engine(db_url)
    before, after = migrations.upgrade(engine)
    assert (before, after) == (None, migrations.head_revision())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_upgrade_is_idempotent_and_downgrade_reverses_it(db_url: str) -> None:
    engine = make_engine(db_url)
    migrations.upgrade(engine)
    assert migrations.upgrade(engine) == (migrations.head_revision(), migrations.head_revision())
    with engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "base")
    assert not inspect(engine).has_table("jobs")
    migrations.upgrade(engine)
    assert inspect(engine).has_table("jobs")
    engine.dispose()


def test_a_store_made_before_migrations_is_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    with engine.begin() as conn:  # what the first release made: revision 0001's tables, no alembic_version
        command.upgrade(migrations.alembic_config(conn), migrations.FIRST_REVISION)
        conn.execute(text("DROP TABLE alembic_version"))
    assert migrations.current_revision(engine) is None
    store = open_store(url)
    assert migrations.current_revision(store.engine) == migrations.head_revision()
    store.close()
    engine.dispose()


def test_open_store_without_migrating_refuses_an_old_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    try:
        open_store(url, migrate=False)
    except RuntimeError as error:
        assert "dbmaint-manager migrate" in str(error)
    else:
        raise AssertionError("an unmigrated store was opened")


def test_the_migrate_command(db_url: str) -> None:
    args = [sys.executable, "-m", "manager_service", "migrate", "--database-url", db_url]
    first = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"migrated from revision (empty) to {migrations.head_revision()}" in first.stderr
    second = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "already at revision" in second.stderr
    engine = make_engine(db_url)
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()


def test_the_migrate_command_fails_clearly_when_the_store_is_unreachable() -> None:
    args = [
        sys.executable,
        "-m",
        "manager_service",
        "migrate",
        "--database-url",
        "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nowhere",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "migration failed" in result.stderr and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr
