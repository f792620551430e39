"""History sources (SPEC 10): bucket ends, fetch times and revisions of samples; read ranges.

Revision ID: 0005_history
Revises: 0004_series_names
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from etl.store.models import UtcDateTime

revision: str = "0005_history"
down_revision: str | Sequence[str] | None = "0004_series_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("bucket_end", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("fetched_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("revisions", sa.Integer(), nullable=True))
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("window_start", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("window_end", UtcDateTime(), nullable=True))
    op.create_table(
        "history_reads",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("start_at", UtcDateTime(), nullable=False),
        sa.Column("end_at", UtcDateTime(), nullable=False),
        sa.Column("read_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", "start_at", "end_at", name="pk_history_reads"),
    )
    op.create_table(
        "history_marks",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("read_up_to", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_history_marks"),
    )


def downgrade() -> None:
    op.drop_table("history_marks")
    op.drop_table("history_reads")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("window_end")
        batch.drop_column("window_start")
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("revisions")
        batch.drop_column("fetched_at")
        batch.drop_column("bucket_end")
