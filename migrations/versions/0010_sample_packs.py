"""Packed samples on PostgreSQL (SPEC 13's bytes): `sample_packs`, one row per series and UTC day.

Compaction packs the snapshot-style samples of whole UTC days whose raw responses are
archived into one row per (series, day) holding them as arrays, compressed by TOAST
(etl.store.packs): the benchmark workload after compaction goes from about 92 to about
20 bytes per sample (docs/performance.md). The table is partitioned by month like samples
when samples is (a retired month is a dropped partition), with partitions made here for
the months samples has. Nothing is packed by the upgrade itself: the next compaction does.

SQLite: nothing (its rows take about 30 bytes already); both directions are no-ops there.
Down unpacks every pack back into rows of samples, then drops the table.

Revision ID: 0010_sample_packs
Revises: 0009_samples_lean
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from etl.store import packs
from etl.store.partitions import existing, is_partitioned, make_pack_partition, month_of

revision: str = "0010_sample_packs"
down_revision: str | Sequence[str] | None = "0009_samples_lean"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    partitioned = is_partitioned(bind)
    packs.create(bind, partitioned)
    if partitioned:
        for name in sorted(existing(bind)):
            month = month_of(name)
            if month is not None:
                make_pack_partition(bind, month)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    packs.drop(bind)
