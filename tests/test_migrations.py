"""Alembic migrations reproduce the models' schema on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    create_engine,
    inspect,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeEngine

from etl.cli import cli
from etl.errors import DatabaseError
from etl.store.engine import current_revision, downgrade, head_revision, make_engine, upgrade
from etl.store.models import Base, UtcDateTime
from etl.store.packs import TABLE as PACKS
from etl.store.partitions import is_partition
from etl.store.rows import forget_series_cache
from tests.factories import REPO

# Samples' foreign key on PostgreSQL is kept by statement-level triggers since 0011 (the
# same rule and SQLSTATE, checked per statement rather than per row).
TRIGGER_CHECKED = ("fk_samples_series_id_series", ["series_id"], "series", ["id"])
TRIGGERS = {"samples_series_check_insert", "samples_series_check_update",
            "series_samples_check_delete"}


def _triggers(engine: Engine) -> set[str]:
    """The names of the PostgreSQL triggers that keep samples' foreign key (empty on SQLite)."""
    if engine.dialect.name != "postgresql":
        return set()
    with engine.connect() as conn:
        return {name for (name,) in conn.exec_driver_sql(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")} & TRIGGERS


def _diff(engine) -> list:  # type: ignore[no-untyped-def]
    def not_a_partition(name, type_, _parent) -> bool:  # type: ignore[no-untyped-def]
        # Partitions, and PostgreSQL's packed samples (no model: SQLite has no such table).
        return not (type_ == "table" and name and (is_partition(name) or name == PACKS))

    checked_by_triggers = _triggers(engine) == TRIGGERS

    def not_trigger_checked(obj, name, type_, reflected, _other) -> bool:  # type: ignore[no-untyped-def]
        return not (checked_by_triggers and type_ == "foreign_key_constraint"
                    and name == TRIGGER_CHECKED[0] and not reflected)

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "include_name": not_a_partition,
                                                     "include_object": not_trigger_checked})
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
        [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    engine = make_engine(empty_db_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def _type(dialect: str, table: str, column: str, reflected: TypeEngine[Any]) -> str:
    """A reflected column type in words both engines can agree on."""
    model = Base.metadata.tables.get(table)
    if model is not None and column in model.c and isinstance(model.c[column].type, UtcDateTime):
        # By design: timestamptz on PostgreSQL, integer microseconds on SQLite.
        if dialect == "postgresql" and isinstance(reflected, DateTime) and reflected.timezone:
            return "utc instant"
        if dialect == "sqlite" and isinstance(reflected, BigInteger):
            return "utc instant"
        return f"not a utc instant: {reflected!r}"
    if isinstance(reflected, Integer):
        # BIGINT ids on PostgreSQL are INTEGER on SQLite, the only type it autoincrements.
        return "integer"
    if isinstance(reflected, Float):
        return "float"  # FLOAT on SQLite, DOUBLE PRECISION on PostgreSQL
    if isinstance(reflected, String):
        return f"varchar({reflected.length})" if reflected.length else "text"
    return type(reflected).__name__.lower()


def _schema(engine: Engine) -> dict[str, Any]:
    """Everything a query or a constraint violation could tell apart, per table."""
    insp = inspect(engine)
    dialect = engine.dialect.name
    shape: dict[str, Any] = {}
    # PostgreSQL's monthly partitions of samples and its packed samples are storage, not
    # schema (SPEC 13): every reader sees the same samples on both engines.
    for table in sorted(t for t in insp.get_table_names()
                        if not is_partition(t) and t != PACKS):
        shape[table] = {
            "columns": [
                (c["name"], _type(dialect, table, c["name"], c["type"]), c["nullable"])
                for c in insp.get_columns(table)
            ],
            "primary key": (
                insp.get_pk_constraint(table)["name"],
                insp.get_pk_constraint(table)["constrained_columns"],
            ),
            "foreign keys": sorted(
                [(fk["name"], fk["constrained_columns"], fk["referred_table"],
                  fk["referred_columns"]) for fk in insp.get_foreign_keys(table)]
                + ([TRIGGER_CHECKED] if table == "samples" and _triggers(engine) == TRIGGERS
                   else [])
            ),
            # PostgreSQL also lists the index behind each unique constraint; that is the
            # constraint, compared below.
            "indexes": sorted(
                (ix["name"], ix["column_names"], bool(ix["unique"]))
                for ix in insp.get_indexes(table)
                if not ix.get("duplicates_constraint")
            ),
            "unique constraints": sorted(
                (uq["name"], uq["column_names"]) for uq in insp.get_unique_constraints(table)
            ),
        }
    return shape


def test_same_schema_on_both_engines_through_the_cli(tmp_path: Path, pg_url: str) -> None:
    sqlite_file = tmp_path / "usage.db"
    sqlite_file.touch()  # an existing, empty file is an empty database
    shapes = []
    for url in (f"sqlite:///{sqlite_file}", pg_url):
        result = CliRunner().invoke(
            cli, ["--database-url", url, "db", "upgrade"], env={"USAGE_ETL_CONFIG": ""}
        )
        assert result.exit_code == 0, result.output
        assert f"schema upgraded empty -> {head_revision()}" in result.output
        engine = make_engine(url)
        assert _diff(engine) == []
        shapes.append(_schema(engine))
        engine.dispose()
    sqlite_shape, pg_shape = shapes
    assert set(sqlite_shape) >= {"series", "snapshots", "samples", "collection_attempts"}
    assert "not a utc instant" not in repr(shapes)
    assert sqlite_shape == pg_shape


def test_alembic_command_with_a_bad_config_is_one_line_per_problem_exit_2(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('timezone = "Nowhere/Land"\n[[sources]]\nname = "x"\nkind = ["nected"]\n')
    runs = [
        {"USAGE_ETL_CONFIG": str(cfg)},
        {"USAGE_ETL_CONFIG": "", "USAGE_ETL_DATABASE_URL": "mysql://u:secret-pw@h/db"},
    ]
    expected = [
        [
            f"alembic: error: {cfg}: timezone: 'Nowhere/Land' is not an IANA time zone name",
            f"alembic: error: {cfg}: sources.x.kind: must be a string, not an array "
            "(one of: wiresocket, nected, http_json)",
        ],
        [
            "alembic: error: $USAGE_ETL_DATABASE_URL: scheme 'mysql' is not supported "
            "(use sqlite:///PATH or postgresql://[USER@]HOST[:PORT]/DB)",
        ],
    ]
    for extra, lines in zip(runs, expected, strict=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("USAGE_ETL_")}
        out = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
            cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().splitlines() == lines
        assert list(tmp_path.iterdir()) == [cfg]


@pytest.mark.slow
def test_an_installed_wheel_upgrades_a_database_with_migrations_inside_the_package(
    tmp_path: Path,
) -> None:
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("usage_etl-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    # No top-level `migrations` package is installed: they live in `etl.migrations`.
    assert not (target / "migrations").exists()
    assert (target / "etl" / "migrations" / "env.py").is_file()
    db = work / "usage.db"
    run = subprocess.run(
        [sys.executable, "-c", "import sys, etl; from etl.cli import main; "
         "print(etl.__file__, file=sys.stderr); main()",
         "--database-url", f"sqlite:///{db}", "db", "upgrade"],
        cwd=work, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines()[0].startswith(str(target))  # the wheel's code ran
    engine = create_engine(f"sqlite:///{db}")
    assert current_revision(engine) == head_revision()
    engine.dispose()


def _metric_length(engine: Engine) -> int:
    (metric,) = [c for c in inspect(engine).get_columns("series") if c["name"] == "metric"]
    return int(metric["type"].length)


def test_0004_widens_series_names_to_200_keeping_history_and_refuses_to_go_down_over_them(
    empty_db_url: str,
) -> None:
    engine = make_engine(empty_db_url)
    # Up over two revisions in one run (one transaction); down over one, on its own.
    upgrade(engine, "0002_rollups")
    at = 1_764_000_000_000_000 if engine.dialect.name == "sqlite" else "2025-11-24T16:00:00Z"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO series (id, source, metric, kind, metric_type) "
                          "VALUES (1, 'acme', 'tokens:gpt-4o', 'http_json', 'counter')"))
        conn.execute(text("INSERT INTO samples (series_id, observed_at, value) "
                          "VALUES (1, :at, 42.5)"), {"at": at})
    upgrade(engine, "0004_series_names")
    long_name = "tokens:" + "claude-3-5-sonnet-20241022" * 7  # 189 characters
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO series (id, source, metric, kind, metric_type) "
                          "VALUES (2, 'acme', :m, 'http_json', 'counter')"), {"m": long_name})
        rows = conn.execute(text("SELECT s.metric, x.value FROM samples x JOIN series s "
                                 "ON s.id = x.series_id")).all()
    assert [tuple(r) for r in rows] == [("tokens:gpt-4o", 42.5)]
    assert _metric_length(engine) == 200
    # The widened table still refuses samples of a series that does not exist.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO samples (series_id, observed_at, value) "
                          "VALUES (99, :at, 1)"), {"at": at})
    with pytest.raises(DatabaseError, match=r"series\.metric: 'tokens:claude.*' is longer "
                                            r"than 32 characters"):
        downgrade(engine, "0003_alerts")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM series WHERE id = 2"))
    downgrade(engine, "0003_alerts")
    assert current_revision(engine) == "0003_alerts"
    assert _metric_length(engine) == 32
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM samples")).scalar() == 1
    engine.dispose()


def test_history_migration_down_drops_buckets_and_read_ranges_and_keeps_samples(
        empty_db_url: str) -> None:
    from tests.factories import history_page, nected, store

    engine = make_engine(empty_db_url)
    upgrade(engine)
    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    hour = timedelta(hours=1)
    store(engine, [nected(t0, 5), history_page(t0 + hour, (t0, t0 + hour),
                                                [(t0, t0 + hour, {"gpt-4o": 3})])])
    downgrade(engine, "0004_series_names")  # below 0005_history, whatever follows it
    insp = inspect(engine)
    assert {"history_reads", "history_marks"}.isdisjoint(insp.get_table_names())
    assert {c["name"] for c in insp.get_columns("samples")}.isdisjoint(
        {"bucket_end", "fetched_at", "revisions"})
    assert {c["name"] for c in insp.get_columns("snapshots")}.isdisjoint(
        {"window_start", "window_end"})
    with engine.connect() as conn:
        assert sorted(v for (v,) in conn.exec_driver_sql("SELECT value FROM samples")) == [3, 5]
    upgrade(engine)
    assert _diff(engine) == []
    engine.dispose()


def test_0006_records_retired_history_and_goes_down_without_touching_samples(
        empty_db_url: str) -> None:
    from tests.factories import nected, store

    engine = make_engine(empty_db_url)
    upgrade(engine)
    store(engine, [nected(datetime(2026, 11, 20, tzinfo=UTC), 5)])
    assert "retired_history" in inspect(engine).get_table_names()
    downgrade(engine, "0005_history")
    assert "retired_history" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM samples").scalars().all() == [5.0]
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    forget_series_cache(engine)
    engine.dispose()


def test_0007_clusters_sqlite_samples_in_place_keeping_every_sample(empty_db_url: str) -> None:
    from tests.factories import nected, store, wiresocket

    engine = make_engine(empty_db_url)
    upgrade(engine, "0006_retired_history")
    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    store(engine, [nected(t0 + timedelta(minutes=i), 5 + i) for i in range(3)]
          + [wiresocket(t0, 7, 2)])

    def rows() -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.exec_driver_sql(
                "SELECT series_id, observed_at, value, plan_limit, status FROM samples"))

    def clustered() -> bool:
        with engine.connect() as conn:
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'samples'").scalar_one()
        return str(ddl).rstrip().endswith("WITHOUT ROWID")

    before = rows()
    assert len(before) == 5
    upgrade(engine)
    assert rows() == before
    if engine.dialect.name == "sqlite":
        assert clustered()
    downgrade(engine, "0006_retired_history")
    assert rows() == before
    if engine.dialect.name == "sqlite":
        assert not clustered()
    upgrade(engine)
    forget_series_cache(engine)
    engine.dispose()


def test_0009_drops_the_snapshot_id_keeping_every_sample_and_down_restores_it(
        empty_db_url: str) -> None:
    from etl.store import partitions
    from tests.factories import seed_month

    engine = make_engine(empty_db_url)
    upgrade(engine, "0008_samples_partitioned")  # a database made at the previous revision
    seed_month(engine)
    # What 0008's write path stored: each sample's snapshot is its source's at its instant.
    snapshot_of = ("SELECT n.id FROM snapshots n JOIN series s ON s.source = n.source "
                   "WHERE s.id = samples.series_id AND n.observed_at = samples.observed_at")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE samples SET snapshot_id = ({snapshot_of})")  # noqa: S608

    def rows() -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.exec_driver_sql(
                "SELECT series_id, observed_at, value, plan_limit, status, bucket_end, "
                "fetched_at, revisions FROM samples"))

    def snapshot_ids() -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.exec_driver_sql(
                "SELECT series_id, observed_at, snapshot_id FROM samples"))

    def columns() -> list[str]:
        return [c["name"] for c in inspect(engine).get_columns("samples")]

    before, links = rows(), snapshot_ids()
    assert len(before) == 11 and all(link[2] is not None for link in links)
    upgrade(engine)
    assert rows() == before
    assert "snapshot_id" not in columns()
    assert _diff(engine) == []
    if engine.dialect.name == "postgresql":
        # Unpadded: the 8-byte columns first; every partition's key index packed full.
        assert columns()[:2] == ["observed_at", "value"]
        with engine.connect() as conn:
            assert partitions.is_partitioned(conn)
            assert {"samples_p2026_04", "samples_p2026_05", "samples_p2026_06"} <= \
                partitions.existing(conn)
            options = conn.exec_driver_sql(
                "SELECT c.relname, c.reloptions FROM pg_index i JOIN pg_class c "
                "ON c.oid = i.indexrelid JOIN pg_inherits h ON h.inhrelid = i.indrelid "
                "WHERE h.inhparent = to_regclass('samples')").all()
        assert options and all(opts == ["fillfactor=100"] for _name, opts in options)
    else:
        with engine.connect() as conn:
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'samples'").scalar_one()
        assert str(ddl).rstrip().endswith("WITHOUT ROWID")
    downgrade(engine, "0008_samples_partitioned")
    assert rows() == before
    assert snapshot_ids() == links
    partitions.forget(engine)
    upgrade(engine)
    assert rows() == before
    forget_series_cache(engine)
    engine.dispose()


def test_0011_keeps_samples_series_rule_by_triggers_on_postgresql_and_down_restores_the_key(
        empty_db_url: str) -> None:
    from tests.factories import seed_month

    engine = make_engine(empty_db_url)
    upgrade(engine, "0010_sample_packs")  # a database made at the previous revision
    seed_month(engine)

    def rows() -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.exec_driver_sql(
                "SELECT series_id, observed_at, value, plan_limit, status FROM samples"))

    def foreign_keys() -> list[str]:
        return [fk["name"] for fk in inspect(engine).get_foreign_keys("samples")]

    before = rows()
    assert len(before) == 11 and foreign_keys() == [TRIGGER_CHECKED[0]]
    upgrade(engine)
    assert rows() == before
    assert _diff(engine) == []
    postgres = engine.dialect.name == "postgresql"
    assert foreign_keys() == ([] if postgres else [TRIGGER_CHECKED[0]])
    assert _triggers(engine) == (TRIGGERS if postgres else set())
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE samples SET series_id = 999999 WHERE value = 90")
    downgrade(engine, "0010_sample_packs")
    assert rows() == before
    assert foreign_keys() == [TRIGGER_CHECKED[0]] and _triggers(engine) == set()
    upgrade(engine)
    assert rows() == before
    forget_series_cache(engine)
    engine.dispose()


def test_a_new_migration_script_made_by_alembic_revision_imports_and_runs(tmp_path: Path) -> None:
    # The script template (migrations/script.py.mako) is what `alembic revision` writes a new
    # migration from: it must give a module that imports and whose upgrade runs.
    import importlib.util
    import shutil

    from alembic import command

    from etl.store.engine import alembic_config

    shutil.copytree(REPO / "migrations", tmp_path / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    cfg = alembic_config(url=f"sqlite:///{tmp_path / 'x.db'}")
    cfg.set_main_option("script_location", str(tmp_path / "migrations"))
    script = command.revision(cfg, message="next step", rev_id="9999_next")
    path = Path(script.path)  # type: ignore[union-attr]
    spec = importlib.util.spec_from_file_location("next_step", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (module.revision, module.down_revision) == ("9999_next", head_revision())
    command.upgrade(cfg, "head")
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert current_revision(engine) == "9999_next"
    engine.dispose()
