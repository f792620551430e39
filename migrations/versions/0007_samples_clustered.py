"""Samples stored in their primary key's order on SQLite (WITHOUT ROWID), SPEC 13's bytes.

A rowid table kept every sample twice: once in the table, once in the primary-key index on
(series_id, observed_at). Clustered on that key it is kept once: about 55 -> 33 bytes per
sample once raw responses are compacted (the benchmark workload, vacuumed). PostgreSQL is
unchanged by this revision.

Revision ID: 0007_samples_clustered
Revises: 0006_retired_history
Create Date: 2026-12-06
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from alembic import op

revision: str = "0007_samples_clustered"
down_revision: str | Sequence[str] | None = "0006_retired_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(clustered: bool) -> None:
    """Copy samples into a table of the same columns, with or without a rowid, in key order."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    ddl = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'samples'").scalar_one()
    indexes = [sql for (sql,) in bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'samples' "
        "AND sql IS NOT NULL")]
    body = re.sub(r"^CREATE TABLE \"?samples\"?", "CREATE TABLE samples_rebuilt", ddl.strip())
    body = re.sub(r"\s*WITHOUT ROWID\s*$", "", body)
    if clustered:
        body += " WITHOUT ROWID"
    bind.exec_driver_sql(body)
    bind.exec_driver_sql(
        "INSERT INTO samples_rebuilt SELECT * FROM samples ORDER BY series_id, observed_at")
    bind.exec_driver_sql("DROP TABLE samples")
    bind.exec_driver_sql("ALTER TABLE samples_rebuilt RENAME TO samples")
    for sql in indexes:
        bind.exec_driver_sql(sql)


def upgrade() -> None:
    _rebuild(clustered=True)


def downgrade() -> None:
    _rebuild(clustered=False)
