"""PostgreSQL: samples partitioned by UTC month (SPEC 13), converted in place.

The table is renamed aside, a partitioned `samples` with the same columns, key and foreign
key made, one partition per month present (and this month and the next two) plus a default
partition, the rows copied, the old table dropped: one transaction, so a failure leaves the
database as it was. SQLite is unchanged by this revision.

Revision ID: 0008_samples_partitioned
Revises: 0007_samples_clustered
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from alembic import op

from etl.store.partitions import DEFAULT_PARTITION, make
from etl.timefmt import month_start, next_month

revision: str = "0008_samples_partitioned"
down_revision: str | Sequence[str] | None = "0007_samples_clustered"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ("ALTER TABLE {t} ADD CONSTRAINT pk_samples PRIMARY KEY (series_id, observed_at)",
        "ALTER TABLE {t} ADD CONSTRAINT fk_samples_series_id_series FOREIGN KEY (series_id) "
        "REFERENCES series (id)")


def _aside() -> None:
    """The current samples table renamed aside, its foreign key dropped, its key renamed."""
    op.execute("ALTER TABLE samples RENAME TO samples_old")
    op.execute("ALTER TABLE samples_old DROP CONSTRAINT fk_samples_series_id_series")
    op.execute("ALTER TABLE samples_old RENAME CONSTRAINT pk_samples TO pk_samples_old")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _aside()
    op.execute("CREATE TABLE samples (LIKE samples_old INCLUDING DEFAULTS) "
               "PARTITION BY RANGE (observed_at)")
    for ddl in _KEY:
        op.execute(ddl.format(t="samples"))
    op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF samples DEFAULT")
    months = {month_start(at) for (at,) in bind.exec_driver_sql(
        "SELECT DISTINCT date_trunc('month', observed_at AT TIME ZONE 'UTC') "
        "AT TIME ZONE 'UTC' FROM samples_old")}
    month = month_start(datetime.now(UTC))
    for _ in range(3):  # this month and the next two: made ahead
        months.add(month)
        month = next_month(month)
    for month in sorted(months):
        make(bind, month)  # type: ignore[arg-type]
    op.execute("INSERT INTO samples SELECT * FROM samples_old")
    op.execute("DROP TABLE samples_old")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _aside()
    op.execute("CREATE TABLE samples (LIKE samples_old INCLUDING DEFAULTS)")
    for ddl in _KEY:
        op.execute(ddl.format(t="samples"))
    op.execute("INSERT INTO samples SELECT * FROM samples_old")
    op.execute("DROP TABLE samples_old")  # its partitions with it
