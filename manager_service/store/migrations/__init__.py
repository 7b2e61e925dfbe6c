"""Schema migrations of the job store (Alembic), applied by the manager at start and by
``dbmaint-manager migrate``.

Several managers may start at once against one PostgreSQL: the upgrade holds a transaction-level advisory
lock, so one migrates and the others find the schema current. A store created before migrations existed
(tables present, no ``alembic_version``) is stamped at the first revision, then upgraded.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS_DIR = Path(__file__).resolve().parent
FIRST_REVISION = "0001"
# Any constant: the key of the advisory lock the upgrade holds on PostgreSQL.
MIGRATION_LOCK_KEY = 0x64626D61696E74  # "dbmaint"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision. Returns (revision before, revision after)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        before = MigrationContext.configure(conn).get_current_revision()
        config = alembic_config(conn)
        if before is None and inspect(conn).has_table("jobs"):
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    assert after is not None
    return before, after
