"""A history range the database refuses is kept in the spool and stored later as a poll stores it.

SPEC 10 with SPEC 3 (nothing fetched is lost): a locked SQLite file, or PostgreSQL refusing
the write (a table lock past `lock_timeout`), while a poll stores a request range. The range's
pages go to the spool with their window; the replay stores them, records the range as read
(coverage) and moves `H` as the poll would have.
"""

from __future__ import annotations

import re
import sqlite3
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from etl.collect.pacing import PacerRegistry
from etl.collect.poll import Collector
from etl.config import Config, parse_config
from etl.runtime.collect_run import Kept, collect_once
from etl.runtime.history_sim import CREDENTIALS, HistorySimulator
from etl.store.engine import make_engine
from etl.store.history import read_up_to
from etl.store.models import CollectionAttempt, HistoryRead, Sample, Series
from etl.store.spool import Spool
from reports.pipelines.daily import daily
from tests.factories import REPO, FakeClock

NOW = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)


@contextmanager
def refusing_writes(engine: Engine) -> Iterator[Engine]:
    """Another session holds the write lock; yields an engine of ours that gives up quickly.

    SQLite: BEGIN IMMEDIATE (reads still work; the test sets a 300 ms busy timeout).
    PostgreSQL: an EXCLUSIVE lock on snapshots (SELECT still works), a 300 ms lock_timeout.
    """
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "sqlite":
        assert engine.url.database is not None
        holder = sqlite3.connect(engine.url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        ours = make_engine(url)
        try:
            yield ours
        finally:
            ours.dispose()
            holder.execute("ROLLBACK")
            holder.close()
        return
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as holder:
        holder.execute("LOCK TABLE snapshots IN EXCLUSIVE MODE")
        ours = make_engine(url, connect_args={"options": "-c lock_timeout=300"})
        try:
            yield ours
        finally:
            ours.dispose()
            holder.rollback()


def _config(sim: HistorySimulator, spool: Path) -> Config:
    text = re.sub(r'url = "https://[^/"]+', f'url = "{sim.url}',
                  (REPO / "docs" / "vendors" / "openai.toml").read_text())
    return parse_config(tomllib.loads(f'spool_dir = "{spool}"\n' + text))


def test_a_history_range_the_database_refuses_is_spooled_then_stored_with_its_window(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_ADMIN_KEY", CREDENTIALS["bearer"])
    monkeypatch.setenv("USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS", "300")  # our engine gives up soon
    clock = FakeClock(NOW)
    spool = tmp_path / "spool"
    with HistorySimulator(now=clock) as sim:
        config = _config(sim, spool)
        (source,) = config.sources
        kept = Kept()
        with Collector(config.sources, pacers=PacerRegistry(clock.time), clock=clock.time,
                       sleep=clock.sleep, now=clock) as collector, refusing_writes(engine) as ours:
            (poll,) = collect_once(ours, config, collector=collector, kept=kept)
        truth = {k: sim.truth("openai", k, datetime(2026, 10, 21, tzinfo=UTC), NOW)
                 for k in ("gpt-4o", "o1-mini")}
    # Read from the vendor, refused by the database: kept in the spool, nothing stored.
    assert poll.ok and len(poll.pages) == 11 and kept.database_error  # 31 days, 3 a page
    assert list(kept.spooled) == ["openai"] and len(Spool(spool)) == 1
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Sample)) == 0
        assert read_up_to(conn, "openai") is None
    # The database takes writes again: the replay stores the range as the poll would have.
    replayed = Spool(spool).replay(engine)
    assert (replayed.replayed, replayed.remaining, len(Spool(spool))) == (1, 0, 0)
    with engine.connect() as conn:
        rows = conn.execute(select(Series.metric, func.sum(Sample.value)).join(
            Sample, Sample.series_id == Series.id).group_by(Series.metric))
        assert {m.split(":", 1)[1]: float(v) for m, v in rows} == truth
        assert read_up_to(conn, "openai") == datetime(2026, 11, 20, tzinfo=UTC)
        assert [tuple(r) for r in conn.execute(select(
            HistoryRead.start_at, HistoryRead.end_at))] == [
            (datetime(2026, 10, 21, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))]
        (attempt,) = conn.execute(select(CollectionAttempt.outcome,
                                         CollectionAttempt.samples_stored))
        assert tuple(attempt) == ("ok", 31 * 2)  # the range's buckets, stored on replay
    row = daily(engine, config, date(2026, 11, 19), date(2026, 11, 19)).table.iloc[0]
    assert row["coverage_pct"] == 100.0
