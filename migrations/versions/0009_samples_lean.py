"""Leaner sample rows (SPEC 13's bytes): no snapshot id; PostgreSQL rows laid out unpadded.

`samples.snapshot_id` named the raw response a sample came from, but nothing reads it: a
sample's snapshot is the one of its source at its instant, and compaction deletes the
snapshots anyway. Dropping it saves its 8 bytes and, on PostgreSQL, takes the row to 8
columns, whose null bitmap fits in the 24-byte tuple header (9 columns need a 32-byte one).

PostgreSQL also gets the columns in an order without alignment padding (8-byte columns
first, then the 4-byte ones, then the status text) and a primary-key index packed full
(fillfactor 100: past months are written once, in key order). The table is copied out,
re-created with the same monthly partitions (and one for each month of rows that waited in
the default partition), and the rows copied back in key order: one
transaction, so a failure leaves the database as it was. SQLite (WITHOUT ROWID since 0007)
is rebuilt without the column, its columns in the same order (the schema stays one), in key
order.

The benchmark workload after compaction, vacuumed: PostgreSQL 112 -> 92 bytes per sample,
SQLite 33.5 -> 30 (docs/performance.md). Down restores the column, filled from the
snapshots still in the database.

Revision ID: 0009_samples_lean
Revises: 0008_samples_partitioned
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from etl.store.partitions import DEFAULT_PARTITION, existing, make, month_of
from etl.timefmt import month_start

revision: str = "0009_samples_lean"
down_revision: str | Sequence[str] | None = "0008_samples_partitioned"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns kept, in PostgreSQL's new physical order: 8-byte aligned, then 4, then text.
_PG_COLUMNS = ("observed_at timestamptz NOT NULL", "value double precision NOT NULL",
               "plan_limit double precision", "bucket_end timestamptz",
               "fetched_at timestamptz", "series_id integer NOT NULL", "revisions integer",
               "status varchar(16)")
_NAMES = ", ".join(c.split()[0] for c in _PG_COLUMNS)
_KEY = ("ALTER TABLE samples ADD CONSTRAINT pk_samples PRIMARY KEY (series_id, observed_at) "
        "WITH (fillfactor = 100)",
        "ALTER TABLE samples ADD CONSTRAINT fk_samples_series_id_series FOREIGN KEY (series_id) "
        "REFERENCES series (id)")
# The snapshot of a sample: its series' source, at its instant.
_SNAPSHOT_OF = ("SELECT n.id FROM snapshots n JOIN series s ON s.source = n.source "
                "WHERE s.id = samples.series_id AND n.observed_at = samples.observed_at")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_rebuild()
        return
    if bind.dialect.name != "postgresql":
        return
    partitioned = bind.exec_driver_sql(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass('samples')").scalar() == "p"
    months = {m for m in (month_of(n) for n in existing(bind)) if m is not None}  # type: ignore[arg-type]
    op.execute(f"CREATE TEMP TABLE samples_copy ON COMMIT DROP AS SELECT {_NAMES} FROM samples")  # noqa: S608
    # The months of rows waiting in the default partition get theirs too, as in 0008.
    months |= {month_start(at) for (at,) in bind.exec_driver_sql(
        "SELECT DISTINCT date_trunc('month', observed_at AT TIME ZONE 'UTC') "
        "AT TIME ZONE 'UTC' FROM samples_copy")}
    op.execute("DROP TABLE samples")  # its partitions with it
    body = ", ".join(_PG_COLUMNS)
    if partitioned:
        op.execute(f"CREATE TABLE samples ({body}) PARTITION BY RANGE (observed_at)")
    else:
        op.execute(f"CREATE TABLE samples ({body})")
    for ddl in _KEY:
        op.execute(ddl)
    if partitioned:
        op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF samples DEFAULT")
        for month in sorted(months):
            make(bind, month)  # type: ignore[arg-type]
    # Key order: each series' rows together, the index filled page by page.
    op.execute(f"INSERT INTO samples ({_NAMES}) SELECT {_NAMES} FROM samples_copy "  # noqa: S608
               "ORDER BY series_id, observed_at")
    op.execute("DROP TABLE samples_copy")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("sqlite", "postgresql"):
        return
    op.execute("ALTER TABLE samples ADD COLUMN snapshot_id "
               f"{'INTEGER' if bind.dialect.name == 'sqlite' else 'bigint'}")
    op.execute(f"UPDATE samples SET snapshot_id = ({_SNAPSHOT_OF})")  # noqa: S608


def _sqlite_rebuild() -> None:
    """Copy samples into the same columns, in the same order as PostgreSQL's, without
    `snapshot_id`, WITHOUT ROWID (0007), in key order."""
    bind = op.get_bind()
    indexes = [sql for (sql,) in bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'samples' "
        "AND sql IS NOT NULL")]
    bind.exec_driver_sql(
        "CREATE TABLE samples_rebuilt (observed_at BIGINT NOT NULL, value FLOAT NOT NULL, "
        "plan_limit FLOAT, bucket_end BIGINT, fetched_at BIGINT, series_id INTEGER NOT NULL, "
        "revisions INTEGER, status VARCHAR(16), "
        "CONSTRAINT pk_samples PRIMARY KEY (series_id, observed_at), "
        "CONSTRAINT fk_samples_series_id_series FOREIGN KEY(series_id) REFERENCES series (id)"
        ") WITHOUT ROWID")
    bind.exec_driver_sql(f"INSERT INTO samples_rebuilt ({_NAMES}) SELECT {_NAMES} "  # noqa: S608
                         "FROM samples ORDER BY series_id, observed_at")
    bind.exec_driver_sql("DROP TABLE samples")
    bind.exec_driver_sql("ALTER TABLE samples_rebuilt RENAME TO samples")
    for sql in indexes:
        bind.exec_driver_sql(sql)
