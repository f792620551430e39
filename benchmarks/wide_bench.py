"""A very wide vendor's daily report (issue 26): an http_json source whose `each` list has
100,000 items, its daily report in CSV + HTML, against the same report of a tenth as many
series in the same run (goal: at most 1.5x the time per series, so the report grows with the
series a person reads in its table, not with charts: at most MAX_CHARTS are drawn).
"""

from __future__ import annotations

import time
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import sqlite_engine
from etl.config import Config, parse_config
from etl.store.engine import make_engine
from etl.store.writer import forget_series_cache, store_observations
from etl.vendors.types import MetricType, Observation, SampleValue
from reports.jobs import build_daily

DAY = date(2026, 12, 5)
POLLS = 4  # one every six hours


def _config(db: Path) -> Config:
    return parse_config(tomllib.loads(
        f'database_url = "sqlite:///{db}"\n[[sources]]\nname = "wide"\nkind = "http_json"\n'
        'url = "http://127.0.0.1:9/usage"\n[[sources.metrics]]\nname = "requests"\n'
        'type = "counter"\neach = "data"\nkey = "id"\nvalue = "n"\n'))


def build_db(db: Path, series: int) -> Config:
    """`series` counter series of one source, POLLS samples each over DAY."""
    engine = sqlite_engine(db)
    for poll in range(POLLS):
        at = datetime(DAY.year, DAY.month, DAY.day, 6 * poll + 1, tzinfo=UTC)
        samples = tuple(SampleValue(f"requests:{1_000_000 + i}", float(i * (poll + 1)), None,
                                    None, MetricType.COUNTER) for i in range(series))
        with engine.begin() as conn:
            store_observations(conn, [Observation("wide", "http_json", at, "{}", samples, at)])
    forget_series_cache(engine)
    engine.dispose()
    return _config(db)


def _report(db: Path, config: Config, out: Path) -> float:
    engine = make_engine(f"sqlite:///{db}")
    try:
        started = time.perf_counter()
        build_daily(engine, config, DAY, DAY, formats=["csv", "html"], out_dir=out)
        return time.perf_counter() - started
    finally:
        forget_series_cache(engine)
        engine.dispose()


def run(workdir: Path, *, series: int, log: Any) -> dict[str, Any]:
    """Seconds of the daily report of `series` series and of series // 10; the ratio per series."""
    small = max(series // 10, 1)
    out: dict[str, Any] = {"series": series, "baseline_series": small}
    for n, key in ((small, "baseline_s"), (series, "wide_s")):
        db = workdir / f"wide-{n}.db"
        log(f"wide: storing {n} series x {POLLS} polls")
        config = build_db(db, n)
        log(f"wide: daily report of {n} series")
        out[key] = _report(db, config, workdir / f"wide-{n}")
    out["per_series_ratio"] = (out["wide_s"] / series) / (out["baseline_s"] / small)
    return out
