"""Initial schema: series, raw snapshots, samples, collection attempts, source state.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from etl.store.models import BigId, UtcDateTime

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("metric_type", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint("source", "metric", name="uq_series_source_metric"),
    )
    op.create_table(
        "snapshots",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("observed_at", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_snapshots"),
        sa.UniqueConstraint("source", "observed_at", name="uq_snapshots_source_observed_at"),
    )
    op.create_table(
        "samples",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("observed_at", UtcDateTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("plan_limit", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("snapshot_id", BigId, nullable=True),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name="fk_samples_series_id_series"),
        sa.PrimaryKeyConstraint("series_id", "observed_at", name="pk_samples"),
    )
    op.create_table(
        "collection_attempts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("samples_stored", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_collection_attempts"),
    )
    op.create_index(
        "ix_collection_attempts_source_started_at",
        "collection_attempts",
        ["source", "started_at"],
    )
    op.create_table(
        "source_state",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("paused_until", UtcDateTime(), nullable=True),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_source_state"),
    )


def downgrade() -> None:
    op.drop_table("source_state")
    op.drop_index("ix_collection_attempts_source_started_at", table_name="collection_attempts")
    op.drop_table("collection_attempts")
    op.drop_table("samples")
    op.drop_table("snapshots")
    op.drop_table("series")
