"""Figures 2 and 3: the month's reports cold (raw samples) and warm (rollups) vs plain pandas.

Each run is a child process (`python -m benchmarks.reports_bench MODE ...`) so its peak RSS
is its own; the parent reaps it with wait4 and reads ru_maxrss.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import last_json, run_child_rss, sqlite_engine
from benchmarks.workload import (
    LEAD_MINUTES,
    MONTH,
    MONTH_START,
    Workload,
    config_text,
    nx_name,
    ws_name,
)
from etl.store.rows import forget_series_cache, series_ids
from etl.timefmt import to_micros
from etl.vendors import get as get_kind
from etl.vendors.types import SampleValue

US_MIN = 60_000_000


def build_db(w: Workload, db: Path, seed: int = 2, *, before_days: int = 0,
             after_days: int = 0) -> int:
    """Fill a migrated SQLite file with the workload's samples directly (fast, no payloads).

    Import speed is figure 1; here only the history matters. `before_days` and `after_days`
    add history around the workload's month (the scaling figure). Returns the sample count.
    """
    engine = sqlite_engine(db)
    with engine.begin() as conn:
        ids = {}
        for i in range(w.pairs):
            for name, kind in ((ws_name(i), "wiresocket"), (nx_name(i), "nected")):
                wanted = [SampleValue(m, 0.0) for m in get_kind(kind).metrics]
                for metric, sid in series_ids(conn, name, kind, wanted).items():
                    ids[(name, metric)] = sid
    forget_series_cache(engine)
    engine.dispose()
    rng = random.Random(seed)
    t0 = to_micros(MONTH_START) - (LEAD_MINUTES + before_days * 1440) * US_MIN
    steps = (w.minutes + (before_days + after_days) * 1440) // w.step_minutes
    step_us = w.step_minutes * US_MIN
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    total = 0
    with con:
        for i in range(w.pairs):
            lim = rng.choice((100, 250, 500, 1000))
            phase = rng.random() * 2 * math.pi
            rate = rng.uniform(5, 200)
            gap = rng.randrange(steps - 120) if i % 7 == 0 else -10_000
            times = [t0 + k * step_us for k in range(steps) if not gap <= k < gap + 120]
            conns, docs, inv = [], [], []
            counter = rng.uniform(1e6, 5e6)
            for t in times:
                frac = (t // US_MIN % 1440) / 1440.0
                cyc = 0.5 + 0.4 * math.sin(2 * math.pi * frac + phase)
                c = max(0, min(lim, int(lim * cyc * rng.uniform(0.85, 1.15))))
                status = "critical" if c >= 0.9 * lim else "warning" if c >= 0.75 * lim else "healthy"
                conns.append((ids[(ws_name(i), "connections")], t, float(c), float(lim), status))
                docs.append((ids[(ws_name(i), "documents")], t, float(int(20 * (0.3 + 0.2 * cyc))),
                             20.0, "healthy"))
                counter = 0.0 if t == to_micros(MONTH_START) else counter + rate * (0.2 + cyc)
                inv.append((ids[(nx_name(i), "invocations")], t, float(int(counter)), None, None))
            for rows in (conns, docs, inv):
                con.executemany("INSERT INTO samples (series_id, observed_at, value, plan_limit, "
                                "status) VALUES (?, ?, ?, ?, ?)", rows)
                total += len(rows)
    con.close()
    return total


def _month_days(month: str) -> tuple[Any, Any]:
    from datetime import date, timedelta

    first = date.fromisoformat(month + "-01")
    nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first, nxt - timedelta(days=1)


def child_product(config_path: str, month: str, out: str, tz: str | None) -> dict[str, Any]:
    """The month's 30 daily reports and its billing report, CSV, through reports.pipelines."""
    from etl.config import load_config
    from etl.store.engine import open_database
    from reports.periods import parse_month
    from reports.pipelines import billing, daily, write_billing, write_daily

    config = load_config(config_path)
    engine = open_database(config.database_url)
    first, last = _month_days(month)
    t = time.perf_counter()
    days = write_daily(daily(engine, config, first, last, tz), ("csv",), Path(out))
    bill = write_billing(billing(engine, config, parse_month(month), tz), ("csv",), Path(out))
    elapsed = time.perf_counter() - t
    # The same numbers as DataFrames (what notebooks get), without writing files.
    t = time.perf_counter()
    daily(engine, config, first, last, tz)
    billing(engine, config, parse_month(month), tz)
    return {"elapsed_s": elapsed, "files": len(days) + len(bill),
            "frames_again_s": time.perf_counter() - t}


def child_plain(db_url: str, month: str) -> dict[str, Any]:
    """What a user would write: read_sql the month through SQLAlchemy, then groupby per day."""
    import pandas as pd
    from sqlalchemy import create_engine, text

    first, last = _month_days(month)
    start = to_micros(pd.Timestamp(first, tz="UTC").to_pydatetime())
    end = to_micros(pd.Timestamp(last, tz="UTC").to_pydatetime()) + 86_400 * 1_000_000
    t = time.perf_counter()
    engine = create_engine(db_url)
    df = pd.read_sql(
        text("SELECT s.series_id, r.source, r.metric, r.metric_type, s.observed_at, s.value, "
             "s.plan_limit FROM samples s JOIN series r ON r.id = s.series_id "
             "WHERE s.observed_at >= :a AND s.observed_at < :b"),
        engine, params={"a": start, "b": end},
    )
    df["at"] = pd.to_datetime(df["observed_at"], unit="us", utc=True)
    df["date"] = df["at"].dt.date
    df = df.sort_values(["series_id", "observed_at"])
    inc = df.groupby("series_id")["value"].diff()
    df["increase"] = inc.where(inc >= 0, df["value"]).fillna(0)
    df["pct"] = df["value"] / df["plan_limit"] * 100
    daily = df.groupby(["source", "metric", "date"]).agg(
        samples=("value", "size"), min=("value", "min"), max=("value", "max"),
        mean=("value", "mean"), limit=("plan_limit", "last"), peak_pct=("pct", "max"),
        increase=("increase", "sum"),
    )
    monthly = daily.groupby(["source", "metric"]).agg(increase=("increase", "sum"), peak=("max", "max"))
    return {"elapsed_s": time.perf_counter() - t, "rows": len(daily) + len(monthly)}


def clear_rollups(db: Path) -> None:
    """Back to the state build_db leaves: no daily rollups, no dirty marks (a cold start)."""
    con = sqlite3.connect(db)
    with con:
        con.execute("DELETE FROM rollup_days")
        con.execute("DELETE FROM rollup_dirty")
    con.close()


def run(w: Workload, workdir: Path, config_path: Path, *, rounds: int = 1,
        log: Any = print) -> dict[str, Any]:
    """Figures 2 and 3 on SQLite at the workload's size.

    Each round runs the plain baseline, the cold reports (rollups cleared first), the warm
    reports and the cold reports in another zone, in that order, so that load on a shared
    machine falls on all of them alike; every figure is the median of its `rounds` runs.
    """
    db = workdir / "reports.db"
    t = time.perf_counter()
    samples = build_db(w, db)
    log(f"reports: history of {samples:,} samples built in {time.perf_counter() - t:.0f} s")
    url = f"sqlite:///{db}"
    env = {"USAGE_ETL_DATABASE_URL": url}
    mod = ["-m", "benchmarks.reports_bench"]

    def plain() -> dict[str, Any]:
        _, rss, out = run_child_rss([*mod, "plain", "--db", url], env)
        res = last_json(out)
        res["peak_rss_bytes"] = res.get("vm_hwm_bytes") or rss
        return res

    def product(tag: str, tz: str | None = None) -> dict[str, Any]:
        args = [*mod, "product", "--config", str(config_path), "--out", str(workdir / tag)]
        if tz:
            args += ["--tz", tz]
        _, rss, text = run_child_rss(args, env)
        res = last_json(text)
        res["peak_rss_bytes"] = res.get("vm_hwm_bytes") or rss
        return res

    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "cold": [], "warm": [], "other": []}
    identical = True
    for i in range(rounds):
        log(f"reports: round {i + 1}/{rounds}: plain pandas, cold, warm, cold in another zone")
        runs["plain"].append(plain())
        clear_rollups(db)
        runs["cold"].append(product(f"cold{i}"))
        runs["warm"].append(product(f"warm{i}"))
        clear_rollups(db)
        runs["other"].append(product(f"other{i}", tz="Etc/GMT-1"))
        names = sorted(p.name for p in (workdir / f"cold{i}").iterdir())
        _, mismatch, errors = filecmp.cmpfiles(workdir / f"cold{i}", workdir / f"warm{i}", names,
                                               shallow=False)
        identical = identical and not mismatch and not errors

    def med(kind: str, key: str = "elapsed_s") -> float:
        return statistics.median(r[key] for r in runs[kind])

    def peak(kind: str) -> int:
        return max(r["peak_rss_bytes"] for r in runs[kind])

    plain_s = med("plain")
    results: dict[str, Any] = {
        "samples": samples, "rounds": rounds,
        "times_s": {kind: [r["elapsed_s"] for r in rs] for kind, rs in runs.items()},
        "plain_s": plain_s, "plain_peak_rss_bytes": peak("plain"),
        "cold_s": med("cold"), "cold_peak_rss_bytes": peak("cold"),
        "cold_ratio": med("cold") / plain_s,
        "cold_other_tz_s": med("other"), "cold_other_tz_peak_rss_bytes": peak("other"),
        "cold_other_tz_ratio": med("other") / plain_s,
        "warm_s": med("warm"), "warm_peak_rss_bytes": peak("warm"),
        "warm_frames_s": med("warm", "frames_again_s"),
        "warm_ratio": med("warm") / plain_s,
        "report_files": len(names), "warm_identical_to_cold": identical,
    }
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return results


# The scaling figure's databases: the month alone, and the month inside a year of history
# (six months before it, five after), every other month already rolled up, as a database
# that has served reports for a year holds them.
YEAR_BEFORE_DAYS = 184  # 2026-03-01 .. 2026-08-31
YEAR_AFTER_DAYS = 151  # 2026-10-01 .. 2027-02-28


def clear_month_rollups(db: Path, month: str = MONTH) -> None:
    """The month's daily rollups and every dirty mark gone; other months' rollups kept."""
    con = sqlite3.connect(db)
    with con:
        con.execute("DELETE FROM rollup_days WHERE day LIKE ?", (month + "-%",))
        con.execute("DELETE FROM rollup_dirty")
    con.close()


def roll_up_year(db: Path, config_path: Path, before_days: int = YEAR_BEFORE_DAYS,
                 after_days: int = YEAR_AFTER_DAYS) -> None:
    """Store the daily rollups of every day of the year's history (the configured zone)."""
    from datetime import date, timedelta

    from etl.config import load_config
    from etl.store.engine import make_engine
    from reports.pipelines import daily

    config = load_config(str(config_path))
    engine = make_engine(f"sqlite:///{db}")
    first = MONTH_START.date() - timedelta(days=before_days)
    last = date(2026, 10, 1) + timedelta(days=after_days - 1)
    while first <= last:  # a month at a time: bounded memory
        end = min(last, (first.replace(day=28) + timedelta(days=4)).replace(day=1)
                  - timedelta(days=1))
        daily(engine, config, first, end)
        first = end + timedelta(days=1)
    engine.dispose()


def run_scaling(w: Workload, workdir: Path, *, rounds: int = 1, log: Any = print,
                before_days: int = YEAR_BEFORE_DAYS,
                after_days: int = YEAR_AFTER_DAYS) -> dict[str, Any]:
    """The month's reports on a database holding a year over one holding the month alone.

    Cold: the month's rollups cleared (the other months' kept); warm: run again. Reports
    must cost what the period asks for, not what the history holds (SPEC 13). The "year"
    is `before_days` before the month and `after_days` after it (--quick: a few days each).
    """
    dbs = {"month": workdir / "scale-month.db", "year": workdir / "scale-year.db"}
    t = time.perf_counter()
    counts = {"month": build_db(w, dbs["month"]),
              "year": build_db(w, dbs["year"], before_days=before_days,
                               after_days=after_days)}
    cfgs = {}
    for tag, db in dbs.items():
        cfgs[tag] = workdir / f"scale-{tag}.toml"
        cfgs[tag].write_text(config_text(w, f"sqlite:///{db}"))
    roll_up_year(dbs["year"], cfgs["year"], before_days, after_days)
    log(f"reports scaling: {counts['month']:,} and {counts['year']:,} samples built and the "
        f"year rolled up in {time.perf_counter() - t:.0f} s")
    mod = ["-m", "benchmarks.reports_bench", "product"]
    times: dict[str, list[float]] = {f"{tag}_{kind}": [] for tag in dbs
                                     for kind in ("cold", "warm")}
    for i in range(rounds):
        log(f"reports scaling: round {i + 1}/{rounds}: month, year; cold then warm")
        for tag, db in dbs.items():
            clear_month_rollups(db)
            for kind in ("cold", "warm"):
                _, _, out = run_child_rss(
                    [*mod, "--config", str(cfgs[tag]), "--out", str(workdir / f"s-{tag}{i}")],
                    {"USAGE_ETL_DATABASE_URL": f"sqlite:///{db}"})
                times[f"{tag}_{kind}"].append(last_json(out)["elapsed_s"])
    med = {key: statistics.median(v) for key, v in times.items()}
    for db in dbs.values():
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    return {"samples": counts, "times_s": times,
            **{f"{key}_s": value for key, value in med.items()},
            "cold_year_over_month": med["year_cold"] / med["month_cold"],
            "warm_year_over_month": med["year_warm"] / med["month_warm"]}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.reports_bench")
    ap.add_argument("mode", choices=("product", "plain"))
    ap.add_argument("--config")
    ap.add_argument("--db")
    ap.add_argument("--out")
    ap.add_argument("--tz")
    ap.add_argument("--month", default=MONTH)
    args = ap.parse_args(argv)
    if args.mode == "product":
        res = child_product(args.config, args.month, args.out, args.tz)
    else:
        res = child_plain(args.db, args.month)
    res["vm_hwm_bytes"] = vm_hwm()
    print(json.dumps(res))


def vm_hwm() -> int | None:
    """This process's own peak RSS (Linux VmHWM). ru_maxrss of a child is no good here: it
    keeps the parent's RSS at fork time, before the exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main(sys.argv[1:])
