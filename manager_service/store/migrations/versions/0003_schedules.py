"""Schedules, their firings, and the schedule and window of a job.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("schedule_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("scheduled_time", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("window", sa.Text(), nullable=True))
        batch.create_index("ix_jobs_schedule_seq", ["schedule_id", "seq"])
    op.create_table(
        "schedules",
        sa.Column("key", sa.String(length=36), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("live_id", sa.String(length=64), nullable=True),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("last_slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("buffered_slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_parent_id", sa.String(length=36), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("commit_token", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_schedules"),
        sa.UniqueConstraint("live_id", name="uq_schedules_live_id"),
    )
    op.create_table(
        "schedule_firings",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("schedule_key", sa.String(length=36), nullable=False),
        sa.Column("scheduled_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("missed_count", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("commit_token", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_schedule_firings"),
        sa.UniqueConstraint("schedule_key", "scheduled_time", name="uq_schedule_firings_slot"),
    )


def downgrade() -> None:
    op.drop_table("schedule_firings")
    op.drop_table("schedules")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_schedule_seq")
        batch.drop_column("window")
        batch.drop_column("scheduled_time")
        batch.drop_column("schedule_id")
