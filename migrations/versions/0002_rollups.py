"""Daily rollups: per-(series, timezone, day) report rows and the spans that changed since.

Revision ID: 0002_rollups
Revises: 0001_initial
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from etl.store.models import BigId, UtcDateTime

revision: str = "0002_rollups"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollup_dirty",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("start_at", UtcDateTime(), nullable=False),
        sa.Column("end_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_dirty"),
    )
    op.create_table(
        "rollup_days",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("day_start", UtcDateTime(), nullable=False),
        sa.Column("day_end", UtcDateTime(), nullable=False),
        sa.Column("staleness", sa.Float(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "tz", "day", name="pk_rollup_days"),
    )


def downgrade() -> None:
    op.drop_table("rollup_days")
    op.drop_table("rollup_dirty")
