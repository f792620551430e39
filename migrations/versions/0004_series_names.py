"""Series names up to 200 characters (SPEC 7, amended 2026-12-06): series and alert tables.

Revision ID: 0004_series_names
Revises: 0003_alerts
Create Date: 2026-12-06

Widening is a type change only on PostgreSQL; on SQLite (batch mode) the tables are copied,
so foreign keys into `series` are checked at commit rather than mid-copy. Going down refuses
while a stored name is longer than the old columns hold: names are never cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from etl.errors import DatabaseError

revision: str = "0004_series_names"
down_revision: str | Sequence[str] | None = "0003_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, old length); every one of them becomes 200 characters.
_COLUMNS = (("series", 32), ("alert_states", 128), ("alert_events", 128))
NEW_LENGTH = 200


def _widen(old: int | None) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # The copy drops and renames `series` while samples point at it. Outside a transaction
        # (a migration run from this revision) foreign_keys=OFF takes effect; inside one (a run
        # of several revisions) it is ignored and the deferral does the same until commit.
        op.execute("PRAGMA foreign_keys = OFF")
        op.execute("PRAGMA defer_foreign_keys = ON")
    for table, length in _COLUMNS:
        before, after = (length, NEW_LENGTH) if old is None else (NEW_LENGTH, length)
        with op.batch_alter_table(table) as batch:
            batch.alter_column("metric", existing_type=sa.String(before), type_=sa.String(after),
                               existing_nullable=False)
    if sqlite:
        op.execute("PRAGMA foreign_keys = ON")
        broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").first()
        if broken is not None:
            raise DatabaseError(f"{broken[0]}: a row refers to a missing {broken[2]} row")


def upgrade() -> None:
    _widen(None)


def downgrade() -> None:
    bind = op.get_bind()
    for table, length in _COLUMNS:
        longest = bind.execute(
            sa.text(f"SELECT metric FROM {table} WHERE length(metric) > :n "  # noqa: S608
                    "ORDER BY length(metric) DESC LIMIT 1"), {"n": length}).scalar()
        if longest is not None:
            raise DatabaseError(f"{table}.metric: {longest!r} is longer than {length} characters "
                               "(the older schema cannot hold it; delete it first)")
    _widen(NEW_LENGTH)
