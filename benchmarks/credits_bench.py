"""Prepaid credits' cost: the warm billing report of a month with credits granted twelve months
earlier against the same report without credits (SPEC 11; goal: at most 1.2x, same run).

A credit's balance needs every period since its grant; the report reads them from the stored
day rollups, so once warm it costs little more than the month alone. Both reports run in this
process, taking turns, after one warm-up each (which stores the rollups); figures are medians.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import sqlite_engine
from etl.store.rows import forget_series_cache, series_ids
from etl.timefmt import to_micros
from etl.vendors.types import SampleValue

MONTH = date(2026, 12, 1)
HISTORY_START = datetime(2025, 12, 1, tzinfo=UTC)  # the credits' grant: twelve months before
HISTORY_END = datetime(2027, 1, 1, tzinfo=UTC)
NOW = datetime(2027, 1, 15, tzinfo=UTC)  # the month is over: a finished report


def build_db(db: Path, sources: int, step_minutes: int, seed: int = 3) -> int:
    """Counter samples of `sources` nected sources every `step_minutes` over 13 months."""
    engine = sqlite_engine(db)
    ids = {}
    with engine.begin() as conn:
        for i in range(sources):
            wanted = [SampleValue("invocations", 0.0)]
            ids[i] = series_ids(conn, f"nx-{i}", "nected", wanted)["invocations"]
    forget_series_cache(engine)
    engine.dispose()
    rng = random.Random(seed)
    step_us = step_minutes * 60_000_000
    start, end = to_micros(HISTORY_START), to_micros(HISTORY_END)
    con = sqlite3.connect(db)
    total = 0
    with con:
        for i in range(sources):
            rate, counter, rows = rng.uniform(5, 50), 0.0, []
            for t in range(start, end, step_us):
                counter += rate * rng.uniform(0.5, 1.5)
                rows.append((ids[i], t, float(int(counter)), None, None))
            con.executemany("INSERT INTO samples (series_id, observed_at, value, plan_limit, "
                            "status) VALUES (?, ?, ?, ?, ?)", rows)
            total += len(rows)
    con.close()
    return total


def config_text(db: Path, sources: int, credits: bool) -> str:
    """One nected source and one billing rule per source; with `credits`, a credit each."""
    parts = [f'database_url = "sqlite:///{db}"\ntimezone = "UTC"\n']
    for i in range(sources):
        parts.append(f'[[sources]]\nname = "nx-{i}"\nkind = "nected"\n'
                     'api_key_env = "BENCH_UNSET_KEY"\ninterval_seconds = 300\n'
                     f'[[billing]]\nsource = "nx-{i}"\nmetric = "invocations"\n'
                     'aggregation = "increase"\nincluded = 100000\nunit_price = "0.0001"\n'
                     'currency = "USD"\n')
        if credits:
            parts.append(f'[[credits]]\nname = "prepaid-{i}"\nsource = "nx-{i}"\n'
                         'amount = "5000.00"\ncurrency = "USD"\n'
                         f"granted = {HISTORY_START:%Y-%m-%d}\n"
                         f"expires = {HISTORY_START + timedelta(days=400):%Y-%m-%d}\n")
    return "".join(parts)


def _report(config_path: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one billing report, CSV and HTML."""
    from etl.config import load_config
    from etl.store.engine import open_database
    from reports.pipelines import billing, write_billing

    config = load_config(str(config_path))
    engine = open_database(config.database_url)
    t, cpu = time.perf_counter(), time.process_time()
    write_billing(billing(engine, config, MONTH, now=NOW), ("csv", "html"), out)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    engine.dispose()
    return elapsed, cpu


def run(workdir: Path, *, sources: int = 20, step_minutes: int = 30, rounds: int = 3,
        log: Any = print) -> dict[str, Any]:
    """The warm billing report with and without credits, `rounds` turns each; medians.

    The goal is judged on CPU time (`cpu_ratio`): on a shared machine wall time mostly
    measures the neighbours; `ratio` is the wall-clock one.
    """
    db = workdir / "credits.db"
    t = time.perf_counter()
    samples = build_db(db, sources, step_minutes)
    log(f"credits: {samples:,} samples over 13 months built in {time.perf_counter() - t:.0f} s")
    plain_cfg, credit_cfg = workdir / "plain.toml", workdir / "credits.toml"
    plain_cfg.write_text(config_text(db, sources, credits=False))
    credit_cfg.write_text(config_text(db, sources, credits=True))
    # Warm-up: the first report with credits stores twelve months of day rollups.
    _report(plain_cfg, workdir / "plain-warmup")
    _report(credit_cfg, workdir / "credits-warmup")
    times: dict[str, list[float]] = {"plain": [], "credits": []}
    cpu: dict[str, list[float]] = {"plain": [], "credits": []}
    for i in range(rounds):
        log(f"credits: round {i + 1}/{rounds}: warm billing report without, then with credits")
        for kind, cfg in (("plain", plain_cfg), ("credits", credit_cfg)):
            wall, used = _report(cfg, workdir / f"{kind}{i}")
            times[kind].append(wall)
            cpu[kind].append(used)
    plain_s, credits_s = (statistics.median(times[k]) for k in ("plain", "credits"))
    plain_cpu, credits_cpu = (statistics.median(cpu[k]) for k in ("plain", "credits"))
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return {"samples": samples, "sources": sources, "rounds": rounds, "times_s": times,
            "cpu_s": cpu, "plain_s": plain_s, "credits_s": credits_s,
            "ratio": credits_s / plain_s, "plain_cpu_s": plain_cpu,
            "credits_cpu_s": credits_cpu, "cpu_ratio": credits_cpu / plain_cpu}


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp), rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 3,
                             log=lambda m: print(m, file=sys.stderr))))
