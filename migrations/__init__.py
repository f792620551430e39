"""Alembic migrations for the usage-etl schema (shipped as a package so `db upgrade` finds them)."""
