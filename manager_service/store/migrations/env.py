"""Alembic environment for the job store. The manager runs it programmatically (``migrations.upgrade``) on the
connection it already holds; there is no alembic.ini to keep in sync."""

from __future__ import annotations

from alembic import context

from manager_service.store.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the job-store migrations through manager_service.store.migrations.upgrade")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
