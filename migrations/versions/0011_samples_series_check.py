"""PostgreSQL: a sample's series checked once per statement, not once per row (import speed).

The foreign key `samples.series_id -> series.id` made PostgreSQL run a lookup of the series
row for every sample written: in a bulk import that was four fifths of the server's time
writing samples (444,600 samples of the benchmark workload in one COPY: 3.2 s with the
foreign key, 0.65 s without, 0.92 s with the checks below; docs/performance.md). The same
rule now holds through statement-level triggers that see all of a statement's rows at once
(transition tables), one hashed look-up of each distinct series per statement:

- a statement inserting or updating samples fails if one of its rows names no series;
- a statement deleting series rows fails if samples still name one of them.

Both raise SQLSTATE 23503 (foreign_key_violation), as the foreign key did: the drivers and
SQLAlchemy report an IntegrityError. What the foreign key did beyond that, locking each
series row it checked against a concurrent delete, is not needed: nothing deletes series
rows while samples are written (usage-etl never deletes a series row at all).

SQLite keeps the foreign key: its per-row check is cheap, and the bulk writer turns it off
for a chunk and checks the chunk's series once (etl.store.bulk). Down puts the foreign key
back (checking every stored sample) and drops the triggers.

Revision ID: 0011_samples_series_check
Revises: 0010_sample_packs
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011_samples_series_check"
down_revision: str | Sequence[str] | None = "0010_sample_packs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_samples_series_id_series"
_UP = (
    # Rows a statement wrote into samples (any partition) whose series does not exist.
    """CREATE FUNCTION samples_series_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad integer;
BEGIN
  SELECT n.series_id INTO bad FROM (SELECT DISTINCT series_id FROM new_samples) n
    WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.id = n.series_id) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      CONSTRAINT = 'fk_samples_series_id_series',
      MESSAGE = 'insert or update on table "samples" violates foreign key constraint '
                '"fk_samples_series_id_series"',
      DETAIL = format('Key (series_id)=(%s) is not present in table "series".', bad);
  END IF;
  RETURN NULL;
END $$""",
    "CREATE TRIGGER samples_series_check_insert AFTER INSERT ON samples "
    "REFERENCING NEW TABLE AS new_samples FOR EACH STATEMENT "
    "EXECUTE FUNCTION samples_series_check()",
    "CREATE TRIGGER samples_series_check_update AFTER UPDATE ON samples "
    "REFERENCING NEW TABLE AS new_samples FOR EACH STATEMENT "
    "EXECUTE FUNCTION samples_series_check()",
    # Series rows a statement deleted that samples still name.
    """CREATE FUNCTION series_samples_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bad integer;
BEGIN
  SELECT g.id INTO bad FROM gone_series g
    WHERE EXISTS (SELECT 1 FROM samples s WHERE s.series_id = g.id) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      CONSTRAINT = 'fk_samples_series_id_series',
      MESSAGE = 'update or delete on table "series" violates foreign key constraint '
                '"fk_samples_series_id_series" on table "samples"',
      DETAIL = format('Key (id)=(%s) is still referenced from table "samples".', bad);
  END IF;
  RETURN NULL;
END $$""",
    "CREATE TRIGGER series_samples_check_delete AFTER DELETE ON series "
    "REFERENCING OLD TABLE AS gone_series FOR EACH STATEMENT "
    "EXECUTE FUNCTION series_samples_check()",
)
_DOWN = (
    "DROP TRIGGER series_samples_check_delete ON series",
    "DROP FUNCTION series_samples_check()",
    "DROP TRIGGER samples_series_check_update ON samples",
    "DROP TRIGGER samples_series_check_insert ON samples",
    "DROP FUNCTION samples_series_check()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE samples DROP CONSTRAINT {FOREIGN_KEY}")
    for ddl in _UP:
        op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for ddl in _DOWN:
        op.execute(ddl)
    op.execute(f"ALTER TABLE samples ADD CONSTRAINT {FOREIGN_KEY} FOREIGN KEY (series_id) "
               "REFERENCES series (id)")
