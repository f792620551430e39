"""Retired history (SPEC 13): per series, the instant before which its samples were retired.

Revision ID: 0006_retired_history
Revises: 0005_history
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from etl.store.models import UtcDateTime

revision: str = "0006_retired_history"
down_revision: str | Sequence[str] | None = "0005_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retired_history",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("before", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", name="pk_retired_history"),
    )


def downgrade() -> None:
    # Going down forgets which periods were retired: their reports would show no usage.
    op.drop_table("retired_history")
