"""Month reports on PostgreSQL with packed days vs rows (SPEC 13): `python -m benchmarks.packs_bench`.

Three databases of the same generated history (30 series, one sample every 5 minutes,
September 2026 and optionally the eleven months before it): twelve months as rows, twelve
months packed, one month packed. September's daily report (CSV) runs cold (rollups
cleared) and warm (rollups kept) on each, the databases taking turns, the median of
`--rounds` turns per figure; wall seconds (the server's unpacking is not this process' CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine

from benchmarks.imports import _ids
from benchmarks.workload import Workload, config_text, nx_name, ws_name
from etl.cli import cli
from etl.config import load_config
from etl.store import packs, partitions
from etl.store.engine import make_engine, upgrade
from etl.store.rows import forget_series_cache

MONTH_START = datetime(2026, 9, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 10, 1, tzinfo=UTC)


def fill(engine: Engine, w: Workload, config: Path, first: datetime, seed: int = 2) -> int:
    """The workload's series with a sample every `w.step_minutes` from `first` to October."""
    ids = _ids(engine, load_config(str(config)))
    forget_series_cache(engine)
    month, months = first, []
    while month < MONTH_END:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    partitions.ensure(engine, months)
    rng = random.Random(seed)
    step = timedelta(minutes=w.step_minutes)
    n = int((MONTH_END - first) / step)
    total = 0
    with engine.begin() as conn:
        cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cur.copy("COPY samples (series_id, observed_at, value, plan_limit, status) "
                      "FROM STDIN") as cp:
            for i in range(w.pairs):
                lim = rng.choice((100, 250, 500, 1000))
                phase, rate, counter = rng.random() * 6.28, rng.uniform(5, 200), 1e6
                for k in range(n):
                    t = first + k * step
                    cyc = 0.5 + 0.4 * math.sin(2 * math.pi * (k * w.step_minutes % 1440) / 1440
                                               + phase)
                    c = float(int(lim * cyc * rng.uniform(0.85, 1.15)))
                    cp.write_row((ids[(ws_name(i), "connections")], t, c, float(lim),
                                  "critical" if c >= 0.9 * lim else "healthy"))
                    cp.write_row((ids[(ws_name(i), "documents")], t, float(int(20 * cyc)),
                                  20.0, "healthy"))
                    counter += rate * (0.2 + cyc)
                    cp.write_row((ids[(nx_name(i), "invocations")], t, float(int(counter)),
                                  None, None))
                    total += 3
    return total


def report(config: Path, out: Path, cold: bool, url: str) -> float:
    """Seconds of September's daily report (CSV); rollups cleared first when `cold`."""
    if cold:
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM rollup_days")
        engine.dispose()
    t = time.perf_counter()
    done = CliRunner().invoke(cli, ["--config", str(config), "report", "daily", "--start",
                                    "2026-09-01", "--end", "2026-09-30", "--format", "csv",
                                    "--out", str(out)])
    seconds = time.perf_counter() - t
    assert done.exit_code == 0, done.output
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--step", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from tests.factories import create_pg_database, drop_pg_database

    w = Workload(pairs=args.pairs, days=30, step_minutes=args.step)
    year = datetime(2025, 10, 1, tzinfo=UTC)
    kinds = {"rows, 12 months": (year, False), "packed, 12 months": (year, True),
             "packed, 1 month": (MONTH_START, True)}
    urls, configs, figures = {}, {}, {}
    work = Path(tempfile.mkdtemp(prefix="packs-bench-"))
    try:
        for name, (first, packed) in kinds.items():
            url = urls[name] = create_pg_database()
            configs[name] = work / f"{len(configs)}.toml"
            configs[name].write_text(config_text(w, url))
            engine = make_engine(url)
            upgrade(engine)
            n = fill(engine, w, configs[name], first)
            if packed:
                t = time.perf_counter()
                packs.pack(engine, MONTH_END)
                print(f"{name}: {n} samples, packed in {time.perf_counter() - t:.1f} s")
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE")
            forget_series_cache(engine)
            engine.dispose()
        first_kind = next(iter(kinds))  # a warm-up: the first run pays for the imports
        report(configs[first_kind], work / "warm-up", True, urls[first_kind])
        for temp in ("cold", "warm"):
            times: dict[str, list[float]] = {name: [] for name in kinds}
            for r in range(args.rounds):
                for name in kinds:
                    times[name].append(report(configs[name], work / f"out-{r}", temp == "cold",
                                              urls[name]))
            for name in kinds:
                figures[f"{temp} {name}"] = statistics.median(times[name])
    finally:
        for url in urls.values():
            drop_pg_database(url)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
