"""The schema: one ``jobs`` table for parents and children; ``store_lease``, the row that says which manager
may write; ``schedules`` and ``schedule_firings``, the schedules and every slot they had; ``job_changes`` and
``workers``, what standbys read to follow the jobs and see the fleet. Changes here need a migration in
``migrations/versions`` (a test fails when the two drift)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
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
    # A parent created by a schedule's firing (children carry it too): the schedule's id and the slot.
    Column("schedule_id", String(64), nullable=True),
    Column("scheduled_time", DateTime(timezone=True), nullable=True),
    # The maintenance window (JSON, ``window_rules.to_dict``) its children may start in; on the parent and each
    # child, so the dispatcher reads it with the child.
    Column("window", Text, nullable=True),
    Index("ix_jobs_parent_position", "parent_id", "position"),
    Index("ix_jobs_schedule_seq", "schedule_id", "seq"),
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

# A schedule. ``key`` is its identity (a UUID): firings hang on it, so a deleted and re-created ``id`` starts a new
# history. ``id`` is unique among live schedules; a deleted one keeps its row (``deleted_at`` set, ``live_id``
# NULL), so its firings stay readable through the parents that carry ``schedule_id``.
schedules = Table(
    "schedules",
    metadata,
    Column("key", String(36), primary_key=True),
    Column("id", String(64), nullable=False),
    # ``id`` while live, NULL once deleted: the unique constraint that keeps live ids unique on every engine.
    Column("live_id", String(64), nullable=True, unique=True),
    # The schedule as requested (cadence, zone, maintenance, overlap, catch-up, jitter, range, window) as JSON.
    Column("spec", Text, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    # The latest slot that has a firing row (whatever its outcome): the scheduler resumes after it.
    Column("last_slot", DateTime(timezone=True), nullable=True),
    # BUFFER_ONE: the slot kept to fire when the previous parent ends.
    Column("buffered_slot", DateTime(timezone=True), nullable=True),
    Column("last_parent_id", String(36), nullable=True),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("commit_token", String(32), nullable=True),
)

# What became of each slot of a schedule: unique per (schedule key, slot), so no slot is ever fired twice, whoever
# tries (a restart, a retry, a second manager). A gap of missed slots is one row (the first slot and the count).
schedule_firings = Table(
    "schedule_firings",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("schedule_key", String(36), nullable=False),
    Column("scheduled_time", DateTime(timezone=True), nullable=False),
    Column("outcome", String(24), nullable=False),
    Column("parent_id", String(36), nullable=True),
    Column("reason", Text, nullable=True),
    Column("missed_count", Integer, nullable=False, default=1),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("commit_token", String(32), nullable=True),
    UniqueConstraint("schedule_key", "scheduled_time", name="uq_schedule_firings_slot"),
)

# Every change of a job, in commit order (the leader's write transactions are serialized on it, see
# ``sqlalchemy_store``): one row per job and write transaction that inserted or changed it, holding the job as that
# transaction left it (``domain.job_to_dict`` as JSON). A standby's WatchJob follows it by ``change_seq``. Append
# only; the leader prunes rows older than ``base.CHANGES_KEPT_FOR``.
job_changes = Table(
    "job_changes",
    metadata,
    Column("change_seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False),
    Column("parent_id", String(36), nullable=True),
    Column("version", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("snapshot", Text, nullable=False),
    Index("ix_job_changes_at", "at"),
)

# The workers connected to the leader of ``term``, as its ListWorkers shows them: it rewrites the table with every
# connect, disconnect and drain, and every few seconds for ``last_heartbeat``; a new term's first write drops the
# rows of older terms. ``targets`` and ``running_job_ids`` are JSON lists.
workers = Table(
    "workers",
    metadata,
    Column("worker_id", String(255), primary_key=True),
    Column("term", Integer, nullable=False),
    Column("peer", String(255), nullable=False),
    Column("targets", Text, nullable=False),
    Column("slots", Integer, nullable=False),
    Column("running_job_ids", Text, nullable=False),
    Column("draining", Boolean, nullable=False),
    Column("faults_active", Boolean, nullable=False),
    Column("connected_at", DateTime(timezone=True), nullable=False),
    Column("last_heartbeat", DateTime(timezone=True), nullable=False),
)
