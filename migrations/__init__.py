"""Alembic migrations for the usage-etl schema, installed as `etl.migrations` (see pyproject)."""
