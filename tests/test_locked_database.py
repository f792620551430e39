"""A locked SQLite database: a fetched poll is kept (spool), a report reads without the write lock."""

from __future__ import annotations

import csv
import gc
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from etl.cli import cli
from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine, upgrade
from etl.store.models import CollectionAttempt, RollupDay, Sample
from tests.factories import write_sim_config


@contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """A writer: holds SQLite's write lock until the block ends (from this process, whose
    other engines must leave the lock alone)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def counts(url: str) -> tuple[int, int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return (conn.scalar(select(func.count()).select_from(CollectionAttempt)) or 0,
                    conn.scalar(select(func.count()).select_from(Sample)) or 0,
                    conn.scalar(select(func.count()).select_from(RollupDay)) or 0)
    finally:
        engine.dispose()


@pytest.fixture
def locked_setup(simulator: SimulatedVendor, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, Path]:
    db = tmp_path / "usage.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    spool = tmp_path / "spool"
    config = Path(write_sim_config(tmp_path / "c.toml", simulator, url, monkeypatch))
    config.write_text(config.read_text().replace(
        'timezone = "UTC"\n',
        f'timezone = "UTC"\nspool_dir = "{spool}"\nreports_dir = "{tmp_path / "out"}"\n', 1))
    monkeypatch.setenv("USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS", "300")
    return str(config), db, spool


def test_collect_keeps_fetched_polls_in_the_spool_when_sqlite_stays_locked(
        locked_setup: tuple[str, Path, Path]) -> None:
    config, db, spool = locked_setup
    url = f"sqlite:///{db}"
    runner = CliRunner()
    with write_locked(db):
        result = runner.invoke(cli, ["--config", config, "collect"])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert " ok " in line
        assert "NOT STORED: the database refused it (database is locked); kept in " in line
        assert line.endswith(", stored by the next collect or schedule")
    files = sorted(spool.glob("*.json"))
    assert len(files) == 2 and all(str(f) in result.stdout for f in files)
    assert counts(url) == (0, 0, 0)

    # The next collect, with the database free, stores the kept polls first, then its own.
    again = runner.invoke(cli, ["--config", config, "collect"])
    assert again.exit_code == 0, again.output
    assert "stored 2 poll(s) an earlier collect had spooled" in again.stderr
    assert not list(spool.glob("*.json"))
    # Two rounds: 2 attempts each; wiresocket 2 samples and nected 1 per round.
    assert counts(url)[:2] == (4, 6)


def test_a_report_reads_a_locked_database_and_says_nothing_was_cached(
        locked_setup: tuple[str, Path, Path], tmp_path: Path) -> None:
    config, db, _ = locked_setup
    url = f"sqlite:///{db}"
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", config, "collect"]).exit_code == 0
    day = next(iter(make_day(url)))
    assert counts(url)[2] == 0  # a collect caches no day rows: the report has some to cache
    report = [sys.executable, "-m", "etl", "--config", config, "report", "daily", "--date",
              day, "--format", "csv"]
    with write_locked(db):
        # The collect's engine, collected while this process holds the lock, must not take
        # the lock away (it did when the garbage collector happened to run here: its
        # descriptor on the file, closed, cancelled every lock of the process on it).
        gc.collect()
        # The report: a separate process, as a user would run it.
        result = subprocess.run(report, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "WARNING etl.store.rollups: report built from the samples, nothing cached: the daily "
        "rollups could not be updated (database is locked)"]
    with (tmp_path / "out" / f"daily-{day}.csv").open(newline="") as fh:
        rows = {r["metric"]: r for r in csv.DictReader(fh)}
    assert {m: rows[m]["samples"] for m in rows} == {
        "connections": "1", "documents": "1", "invocations": "1"}
    assert counts(url)[2] == 0  # nothing cached
    # Free again: the same report fills the cache, and says nothing about it.
    result = subprocess.run(report, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == ""
    assert counts(url)[2] == 3


def make_day(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {at.date().isoformat() for at in conn.scalars(select(Sample.observed_at))}
    finally:
        engine.dispose()
