"""The store side: everything that reads or writes the database for the `etl` half.

Engine and schema, models, the one write path, bulk import, rollups, spool, archives and
source state.

May import: etl.vendors, etl.config, etl.errors, etl.slots, etl.files, etl.timefmt, SQLAlchemy,
Alembic.
Never HTTP (etl.collect, requests), pandas or click.
"""
