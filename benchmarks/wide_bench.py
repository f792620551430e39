"""A very wide vendor's daily report (issue 26): an http_json source whose `each` list has
100,000 items, its daily report in CSV + HTML, against the same report of a tenth as many
series in the same run (goal: at most 1.5x the time per series, so the report grows with the
series a person reads in its table, not with charts: at most MAX_CHARTS are drawn).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import last_json, run_child_rss, sqlite_engine
from benchmarks.reports_bench import vm_hwm
from etl.config import Config, parse_config
from etl.runtime.alerting import check
from etl.store.engine import make_engine
from etl.store.rows import forget_series_cache
from etl.store.writer import store_observations
from etl.vendors.types import MetricType, Observation, SampleValue
from reports.jobs import build_billing, build_daily

DAY = date(2026, 12, 5)
POLLS = 4  # one every six hours


def _config(db: Path, extra: str = "") -> Config:
    return parse_config(tomllib.loads(
        f'database_url = "sqlite:///{db}"\n[[sources]]\nname = "wide"\nkind = "http_json"\n'
        'url = "http://127.0.0.1:9/usage"\n[[sources.metrics]]\nname = "requests"\n'
        'type = "counter"\neach = "data"\nkey = "id"\nvalue = "n"\n' + extra))


# One item billed and one watched by an `above` alert: what billing and `alerts check` read.
_BILLED_AND_WATCHED = (
    '[[billing]]\nsource = "wide"\nmetric = "requests:1000001"\naggregation = "increase"\n'
    'pricing = "per_unit"\nunit_price = "0.01"\ncurrency = "USD"\n'
    '[[alerts]]\nname = "busy-item"\nsource = "wide"\nmetric = "requests:1000002"\n'
    'above = 10\n')


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


def _report(db: Path, out: Path, mode: str = "daily") -> dict[str, Any]:
    """The report in a child process: its seconds, peak RSS and what it wrote."""
    _, rss, text = run_child_rss(["-m", "benchmarks.wide_bench", "--db", str(db),
                                  "--out", str(out), "--mode", mode])
    res = last_json(text)
    res["peak_rss_bytes"] = res.get("vm_hwm_bytes") or rss
    return res


def child(db: Path, out: Path) -> dict[str, Any]:
    """In the child: the daily report of the database's one day, CSV + HTML (the default)."""
    config = _config(db)
    engine = make_engine(f"sqlite:///{db}")
    try:
        started = time.perf_counter()
        paths = build_daily(engine, config, DAY, DAY, out_dir=out)
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    csv_path = next(p for p in paths if p.suffix == ".csv")
    html = next(p for p in paths if p.suffix == ".html").read_text()
    return {"seconds": seconds, "csv_rows": len(csv_path.read_text().splitlines()) - 1,
            "charts": html.count("<svg"), "html_bytes": len(html.encode()),
            "vm_hwm_bytes": vm_hwm()}


def child_others(db: Path, out: Path) -> dict[str, Any]:
    """In the child: the billing report of DAY's month and `alerts check` at DAY's end."""
    config = _config(db, _BILLED_AND_WATCHED)
    engine = make_engine(f"sqlite:///{db}")
    try:
        started = time.perf_counter()
        build_billing(engine, config, DAY, out_dir=out,
                      now=datetime(DAY.year, DAY.month, DAY.day, 23, tzinfo=UTC))
        billing_s = time.perf_counter() - started
        started = time.perf_counter()
        events = check(engine, config, datetime(DAY.year, DAY.month, DAY.day, 23, tzinfo=UTC))
        alerts_s = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"billing_s": billing_s, "alerts_check_s": alerts_s,
            "alert_events": len(events.events), "vm_hwm_bytes": vm_hwm()}


def run(workdir: Path, *, series: int, log: Any, baseline_others: bool = True
        ) -> dict[str, Any]:
    """The daily report of `series` series and of series // 10: seconds, peak RSS, the ratio
    of time per series; the billing report and `alerts check` of both (`baseline_others`
    False: of the wide one only, whose times are the figures; --quick)."""
    small = max(series // 10, 1)
    out: dict[str, Any] = {"series": series, "baseline_series": small}
    for n, key in ((small, "baseline"), (series, "wide")):
        db = workdir / f"wide-{n}.db"
        log(f"wide: storing {n} series x {POLLS} polls")
        build_db(db, n)
        log(f"wide: daily report of {n} series (CSV + HTML)")
        res = _report(db, workdir / f"wide-{n}")
        if res["csv_rows"] != n:
            raise RuntimeError(f"wide: the daily CSV has {res['csv_rows']} rows, not {n}")
        out[key] = res
        out[f"{key}_s"] = res["seconds"]
        if key == "wide" or baseline_others:
            log(f"wide: billing report and alerts check of {n} series")
            out[f"{key}_others"] = _report(db, workdir / f"wide-{n}-billing", "others")
    out["wide_peak_rss_bytes"] = out["wide"]["peak_rss_bytes"]
    out["per_series_ratio"] = (out["wide_s"] / series) / (out["baseline_s"] / small)
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.wide_bench")
    ap.add_argument("--db", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=("daily", "others"), default="daily")
    args = ap.parse_args(argv)
    run_one = child if args.mode == "daily" else child_others
    print(json.dumps(run_one(Path(args.db), Path(args.out))))


if __name__ == "__main__":
    main(sys.argv[1:])
