"""The schema: one ``jobs`` table for parents and children, and ``store_lease``, the row that says which manager
may write. Changes here need a migration in ``migrations/versions`` (a test fails when the two drift)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

# Deterministic constraint names, so migrations can name what they alter on every engine.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = Table(
    "jobs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("parent_id", String(36), nullable=True),
    Column("status", String(16), nullable=False),
    Column("target", String(64), nullable=True),
    Column("operation", String(16), nullable=True),
    Column("position", Integer, nullable=False, default=0),
    Column("config", Text, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=0),
    Column("worker_id", String(255), nullable=True),
    Column("error", Text, nullable=True),
    Column("result", Text, nullable=True),
    Column("request_id", String(128), nullable=True, unique=True),
    Column("request_fingerprint", Text, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # Parent counters; they change in the same transaction as the child they count.
    Column("total", Integer, nullable=False, default=0),
    Column("pending", Integer, nullable=False, default=0),
    Column("running", Integer, nullable=False, default=0),
    Column("succeeded", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("cancelled", Integer, nullable=False, default=0),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The marker of the last write transaction that wrote the row: when the link breaks during COMMIT, the
    # store looks for it to learn whether that transaction committed. Not indexed (a changing indexed column
    # would cost every update); it is looked up by the row's id.
    Column("commit_token", String(32), nullable=True),
    Index("ix_jobs_parent_position", "parent_id", "position"),
    Index("ix_jobs_status_seq", "status", "seq"),
    Index("ix_jobs_type_seq", "type", "seq"),
)

# Which manager may write to the store (PostgreSQL; a SQLite store admits one manager through an OS file lock).
# ``term`` grows with every change of holder: every write transaction checks (holder, term) on this row FOR
# SHARE, so a takeover (an UPDATE of the row) waits for the old holder's writes, and fences out the rest.
# ``expires_at`` is set and judged by the database's clock.
store_lease = Table(
    "store_lease",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("address", String(255), nullable=False),
    Column("term", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
