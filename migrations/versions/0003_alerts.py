"""Alerts: per-series alert state, the history of state changes, the notification outbox.

Revision ID: 0003_alerts
Revises: 0002_rollups
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from etl.store.models import BigId, UtcDateTime

revision: str = "0003_alerts"
down_revision: str | Sequence[str] | None = "0002_rollups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_states",
        sa.Column("alert", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("since", UtcDateTime(), nullable=True),
        sa.Column("notified_at", UtcDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("alert", "source", "metric", name="pk_alert_states"),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("alert", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("transition", sa.String(16), nullable=False),
        sa.Column("since", UtcDateTime(), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
        sa.UniqueConstraint("alert", "source", "metric", "version",
                            name="uq_alert_events_alert_source_metric_version"),
    )
    op.create_index("ix_alert_events_at", "alert_events", ["at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("notifier", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.Column("gave_up_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.ForeignKeyConstraint(["event_id"], ["alert_events.id"],
                                name="fk_alert_deliveries_event_id_alert_events"),
        sa.UniqueConstraint("event_id", "notifier",
                            name="uq_alert_deliveries_event_id_notifier"),
    )
    op.create_index("ix_alert_deliveries_delivered_at_next_attempt_at", "alert_deliveries",
                    ["delivered_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_delivered_at_next_attempt_at", "alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alert_events_at", "alert_events")
    op.drop_table("alert_events")
    op.drop_table("alert_states")
