"""Packed days on PostgreSQL (SPEC 13's bytes): every reader sees the same samples, writes unpack."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, select

from etl.alerts.readings import latest_samples
from etl.cli import cli
from etl.store import packs, partitions
from etl.store.archive import import_archives
from etl.store.compact import compact
from etl.store.engine import downgrade, upgrade
from etl.store.models import RollupDay, Series
from etl.store.rows import forget_series_cache
from etl.store.writer import record_polls
from reports import api
from reports.read.samples import read_prev_values
from tests.factories import (
    at,
    migrated_engine,
    nected,
    ok_poll,
    store,
    stored_history_config,
    wiresocket,
)

pytestmark = pytest.mark.postgres

START = at("2026-05-28T00:00:00")
# Days before the cut pack; the cut's own day and after stay rows.
CUT = at("2026-06-02T12:00:00")


@pytest.fixture
def pg(pg_url: str) -> Iterator[Engine]:
    with migrated_engine(pg_url) as engine:
        yield engine


def seed(engine: Engine) -> None:
    """Six days every 20 minutes at odd microseconds: a counter with a reset, two gauges with
    missing limits and statuses now and then, so every column's kinds are packed; May's and
    June's partitions made first, as the daemon and the import do."""
    partitions.ensure(engine, [START, CUT])
    obs = []
    for k in range(6 * 72):
        when = START + timedelta(minutes=20 * k, microseconds=(k * 7919) % 1_000_000)
        obs.append(nected(when, 1_000 + 3 * k if k < 200 else 5 * (k - 200)))
        obs.append(wiresocket(when + timedelta(seconds=7), 40 + (k * 37) % 61, k % 9,
                              limit=None if k % 5 == 0 else 100.0,
                              status="throttled" if k % 11 == 0 else None,
                              docs_status="ok" if k % 3 == 0 else None))
    store(engine, obs)


def every_sample(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        s = packs.samples_from(conn).c
        return sorted(tuple(r) for r in conn.execute(select(
            s.series_id, s.observed_at, s.value, s.plan_limit, s.status, s.bucket_end,
            s.fetched_at, s.revisions)))


def packed_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT coalesce(sum(cardinality(observed_at)), 0) FROM sample_packs").scalar_one())


def outputs(engine: Engine, cfg: Path, out: Path) -> dict[str, Any]:
    """What users read of the samples: report and export files, DataFrames, alert readings."""
    runner = CliRunner()
    commands = (["report", "billing", "--month", "2026-05", "--format", "csv"],
                ["report", "billing", "--month", "2026-06", "--format", "csv"],
                ["report", "daily", "--start", "2026-05-28", "--end", "2026-06-03",
                 "--format", "csv"],
                ["report", "focus", "--month", "2026-05", "--format", "csv"],
                ["export", "--start", "2026-05-27", "--end", "2026-06-03", "--format", "csv"],
                ["export", "--start", "2026-05-29", "--end", "2026-05-30"])
    for k, args in enumerate(commands):
        done = runner.invoke(cli, ["--config", str(cfg), *args, "--out", str(out / str(k))])
        assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["--config", str(cfg), "export", "--start", "2026-05-01",
                               "--end", "2026-06-30", "--format", "parquet",
                               "--out", str(out / "lake")])
    assert done.exit_code == 0, done.output
    files = {p.relative_to(out).as_posix(): p.read_bytes()
             for p in sorted(out.rglob("*")) if p.is_file() and "lake" not in p.parts}
    lake = ds.dataset(out / "lake", partitioning="hive").to_table().sort_by(
        [("source", "ascending"), ("metric", "ascending"), ("observed_at", "ascending")])
    with engine.connect() as conn:
        sids = list(conn.execute(select(Series.id)).scalars())
        prev = {b: read_prev_values(conn, sids, b)
                for b in (1_780_000_000_000_000, 1_780_300_000_000_000)}
        latest = latest_samples(conn)
    url = engine.url.render_as_string(hide_password=False)
    frames = {"samples": api.load_samples(url).to_csv(),
              "june 1": api.load_samples(url, start="2026-06-01", end="2026-06-02").to_csv(),
              "series": api.list_series(url).to_csv()}
    return {"files": files, "lake": lake.to_pylist(), "prev": prev, "latest": latest,
            "frames": frames}


def test_reports_exports_and_readings_are_the_same_byte_for_byte_once_days_are_packed(
        pg: Engine, tmp_path: Path) -> None:
    seed(pg)
    cfg = stored_history_config(pg, tmp_path / "c.toml", billed=True)
    stored = every_sample(pg)
    done = compact(pg, tmp_path / "archive", CUT)
    # Five whole days of three series packed; June 2nd onwards still rows.
    assert packed_count(pg) == done.packed == 5 * 72 * 3
    assert done.summary().endswith("; 1080 samples packed into one row per series and day")
    assert every_sample(pg) == stored
    with pg.begin() as conn:  # the same compacted database, every day rows
        packs.unpack_where(conn, "true")
    assert packed_count(pg) == 0
    before = outputs(pg, cfg, tmp_path / "before")
    assert packs.pack(pg, CUT) == 5 * 72 * 3
    with pg.begin() as conn:  # built anew from the samples, not from cached rollups
        conn.execute(delete(RollupDay))
    after = outputs(pg, cfg, tmp_path / "after")
    assert after["files"] == before["files"]
    assert after == before
    names = {name.split("/")[-1] for name in before["files"]}
    assert {"billing-2026-05.csv", "billing-2026-06.csv", "focus-2026-05.csv"} <= names
    assert len(before["lake"]) == len(stored)


def test_a_write_into_a_packed_day_unpacks_it_and_keeps_the_writers_rules(
        pg: Engine, tmp_path: Path) -> None:
    seed(pg)
    compact(pg, tmp_path / "archive", CUT)
    stored = every_sample(pg)
    packed = packed_count(pg)
    first = START + timedelta(days=1)  # May 29th, packed; its stored counter reading:
    with pg.connect() as conn:
        [(sid, when, value)] = conn.exec_driver_sql(
            "SELECT p.series_id, p.observed_at[1], p.value[1] FROM sample_packs p "
            "JOIN series s ON s.id = p.series_id WHERE s.metric = 'invocations' "
            "AND p.day = %(d)s", {"d": first}).all()
    # The same reading again: a duplicate; another value: a conflict; a new instant: stored.
    [same] = record_polls(pg, [ok_poll(when, value)])
    [other] = record_polls(pg, [ok_poll(when, value + 1)])
    [late] = record_polls(pg, [ok_poll(when + timedelta(seconds=1), value + 2)])
    assert same is not None and other is not None and late is not None
    assert (same.duplicates, len(other.conflicts), late.samples) == (1, 1, 1)
    assert other.conflicts[0].stored == value
    new = (sid, when + timedelta(seconds=1), value + 2, None, None, None, None, None)
    assert every_sample(pg) == sorted([*stored, new])
    # Only that series' day became rows again.
    assert packed_count(pg) == packed - 72
    # Re-importing the archives (the bulk path) finds every sample stored, loses none.
    again = import_archives(pg, _config(pg, tmp_path), [str(p) for p in sorted(
        (tmp_path / "archive").rglob("*.jsonl.gz"))])
    assert again.samples == 0
    assert every_sample(pg) == sorted([*stored, new])


def _config(engine: Engine, tmp_path: Path) -> Any:
    from etl.config import load_config

    return load_config(str(stored_history_config(engine, tmp_path / "i.toml")))


def test_a_month_read_decodes_only_that_months_packs(pg: Engine, tmp_path: Path) -> None:
    seed(pg)
    compact(pg, tmp_path / "archive", CUT)
    with pg.connect() as conn:
        src = packs.source_sql(conn, at("2026-05-29T00:00:00"), at("2026-05-30T00:00:00"))
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(
            f"EXPLAIN SELECT * FROM {src} WHERE series_id = 1"))  # noqa: S608
    # May's partition of the packs, with the day bounds as its filter; June's never read.
    assert "sample_packs_p2026_05" in plan
    assert "sample_packs_p2026_06" not in plan
    assert "day >= '2026-05-29" in plan


def test_migration_0010_down_unpacks_every_sample_and_up_again_keeps_them(
        pg: Engine, tmp_path: Path) -> None:
    downgrade(pg, "0009_samples_lean")
    partitions.forget(pg)
    seed(pg)  # a database of the previous revision holding samples
    stored = every_sample(pg)
    upgrade(pg)
    assert every_sample(pg) == stored
    compact(pg, tmp_path / "archive", CUT)
    assert packed_count(pg) > 0
    downgrade(pg, "0009_samples_lean")
    forget_series_cache(pg)
    with pg.connect() as conn:
        assert not packs.has_packs(conn)
        assert conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one() == len(stored)
    assert every_sample(pg) == stored
    upgrade(pg)
    assert every_sample(pg) == stored
