"""Alembic migrations reproduce the models' schema on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from etl.db import current_revision, downgrade, head_revision, make_engine, upgrade
from etl.models import Base

ROOT = Path(__file__).resolve().parents[1]


def _diff(engine) -> list:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def test_upgrade_downgrade_upgrade_matches_models(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert _diff(engine) == []
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert _diff(engine) == []
    tables = set(inspect(engine).get_table_names())
    assert {"series", "snapshots", "samples", "collection_attempts", "source_state"} <= tables
    engine.dispose()


def test_alembic_command_takes_url_from_usage_etl_config(empty_db_url: str, tmp_path: Path) -> None:
    env = dict(os.environ, USAGE_ETL_DATABASE_URL=empty_db_url, USAGE_ETL_CONFIG="")
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    engine = make_engine(empty_db_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_same_tables_on_both_engines(sqlite_url: str, pg_url: str) -> None:
    shapes = []
    for url in (sqlite_url, pg_url):
        engine = make_engine(url)
        upgrade(engine)
        insp = inspect(engine)
        shapes.append(
            {
                t: (
                    sorted(c["name"] for c in insp.get_columns(t)),
                    insp.get_pk_constraint(t)["constrained_columns"],
                )
                for t in insp.get_table_names()
            }
        )
        engine.dispose()
    assert shapes[0] == shapes[1]
