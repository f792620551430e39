"""The daily report (SPEC 6): read → compute (`daily`), then files (`write_daily`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup
from sqlalchemy import Engine

from etl.config import Config
from etl.errors import InputError
from etl.timefmt import from_micros
from etl.vendors.types import MetricType
from reports.compute.charted import MAX_TABLE_ROWS, charted_rows, others_by_metric
from reports.compute.daily import exact_total, needs_prev_value
from reports.compute.table import daily_table
from reports.names import ReportFormat, daily_name, output_dir, report_formats
from reports.periods import Period, days_period, resolve_tz
from reports.pipelines.days import (
    SeriesInfo,
    configured_series,
    provisional_text,
    series_day_rows,
)
from reports.read.alerts import alert_events
from reports.read.history import read_buckets
from reports.read.samples import (
    read_prev_value,
    read_samples,
    read_snapshot,
    series_ids,
    source_snapshots,
)
from reports.render.charts import bucket_day_chart, series_day_chart
from reports.render.csv import csv_texts, write_csv_text
from reports.render.html import Chart, render_report, table_from_frame, write_html


@dataclass(frozen=True)
class DailyResult:
    """The daily report of some local days: its table, and what its HTML reads besides.

    `table` has reports.compute.daily.DAILY_COLUMNS, one row per series and local day
    (`date` a plain date). `engine` and `config` are what it was built from: the HTML reads
    each series' samples (charts) and the sources' latest snapshots from them.
    """

    engine: Engine
    config: Config
    period: Period
    tz: str
    table: pd.DataFrame


def daily(engine: Engine, config: Config, start: date, end: date, tz: str | None = None,
          *, series: Sequence[SeriesInfo] | None = None, rollups: bool = True) -> DailyResult:
    """The daily report for local days start..end (both included) in `tz` (default: config's).

    `series` narrows the configured series (default: all of them). `rollups=False` computes
    every day from raw samples and stores nothing; otherwise the zone's stored daily rollups
    are read where fresh and filled where not. Raises InputError for an unknown zone or an
    `end` before `start`.
    """
    tz_name = tz or config.timezone
    zone = resolve_tz(tz_name)
    if end < start:
        raise InputError(f"--end: {end} is before --start {start}")
    period = days_period(start, end + timedelta(days=1), zone)
    if series is None:
        series = configured_series(config, engine=engine, until_us=period.end_us)
    rows = series_day_rows(engine, series, period, rollup_tz=tz_name if rollups else None)
    table = daily_table(rows)
    if any(s.history for s in series) and len(table):
        bounds = {day: (int(period.bounds[i]), int(period.bounds[i + 1]))
                  for i, day in enumerate(period.days)}
        # Once per source and day, not per series: a source's read ranges are its own.
        with read_snapshot(engine) as conn:
            found = {key: provisional_text(conn, config, key[0], *bounds[key[1]])
                     for key in dict.fromkeys(zip(table["source"], table["date"], strict=True))}
        table["provisional"] = [found[key] for key in zip(table["source"], table["date"],
                                                          strict=True)]
    return DailyResult(engine, config, period, tz_name, table)


def write_daily(result: DailyResult, formats: Sequence[str], out_dir: Path, *,
                table_rows: int = MAX_TABLE_ROWS) -> list[Path]:
    """daily-YYYY-MM-DD.{csv,html} in `out_dir` for each day of `result`; the paths written.

    The HTML's per-series table lists at most `table_rows` series (the CSV has all).
    """
    wanted = report_formats(formats)
    out = output_dir(out_dir)
    ids = series_ids(result.engine) if ReportFormat.HTML in wanted else {}
    paths: list[Path] = []
    # One groupby instead of a scan of the whole table per day; the CSV cells of every day
    # formatted in one pass over the table's columns.
    table = result.table
    days = result.period.days
    at = table.groupby("date", sort=False).indices if len(table) else {}
    texts = (csv_texts(table, [at.get(day, ()) for day in days])
             if ReportFormat.CSV in wanted else [])
    for i, day in enumerate(days):
        base = out / daily_name(day)
        if ReportFormat.CSV in wanted:
            paths.append(write_csv_text(texts[i], base.with_suffix(".csv")))
        if ReportFormat.HTML in wanted:
            rows = table.iloc[at[day]] if day in at else table.iloc[:0]
            rows = rows.reset_index(drop=True)
            bounds = result.period.bounds
            html = _daily_html(result, rows, day, int(bounds[i]), int(bounds[i + 1]), ids,
                               table_rows)
            paths.append(write_html(html, base.with_suffix(".html")))
    return paths


def _daily_html(result: DailyResult, table: pd.DataFrame, day: date, start_us: int,
                end_us: int, ids: dict[tuple[str, str], int], table_rows: int) -> str:
    hours = (end_us - start_us) / 3.6e9
    charts = []
    billed = [(rule.source, rule.metric) for rule in result.config.billing]
    charted = charted_rows(table, billed)
    with result.engine.connect() as conn:
        for rec in table.iloc[charted].to_dict("records"):
            sid = ids.get((rec["source"], rec["metric"]))
            if sid is None:
                continue
            mtype = MetricType(rec["metric_type"])
            if mtype is MetricType.INTERVAL:
                b_start, b_end, b_value = read_buckets(conn, sid, start_us, end_us)
                svg = bucket_day_chart(b_start, b_end, b_value, day_start_us=start_us,
                                       day_end_us=end_us, metric=str(rec["metric"]))
                charts.append(Chart(f"{rec['source']} / {rec['metric']}", Markup(svg)))
                continue
            arr = read_samples(conn, sid, start_us, end_us)
            prev = read_prev_value(conn, sid, start_us) if needs_prev_value(mtype) else None
            limit = None if pd.isna(rec["limit"]) else float(rec["limit"])
            svg = series_day_chart(arr.t, arr.value, start_us=start_us, end_us=end_us,
                                   metric=str(rec["metric"]), metric_type=mtype,
                                   limit=limit, prev_value=prev)
            charts.append(Chart(f"{rec['source']} / {rec['metric']}", Markup(svg)))
    covs = table["coverage_pct"].dropna()
    # Masks first, text only for the notes shown: a wide vendor has 100,000 rows (issue 26).
    crit = pd.to_numeric(table["critical_minutes"], errors="coerce").fillna(0) > 0
    low = (pd.to_numeric(table["coverage_pct"], errors="coerce") < 100).fillna(False)
    prov = (table["provisional"] == "true") if "provisional" in table else crit & False
    alerts = [f"{r['source']}/{r['metric']}: {r['critical_minutes']:g} min at critical "
              f"(≥90 % of the limit), peak {r['peak_pct']:g} %"
              for r in table[crit].head(MAX_NOTES + 1).to_dict("records")]
    gaps = [f"{r['source']}/{r['metric']}: coverage {r['coverage_pct']:g} % — "
            "part of the day was not observed, figures are a lower bound"
            for r in table[low].head(MAX_NOTES + 1).to_dict("records")]
    revisable = [f"{r['source']}/{r['metric']}: provisional — the day was not all read "
                 "`lookback` after it ended: the vendor may still revise these figures"
                 for r in table[prov].head(MAX_NOTES + 1).to_dict("records")]
    notes = (_bounded(alerts, int(crit.sum()), "series at critical")
             + _bounded(gaps, int(low.sum()), "series not fully observed")
             + _bounded(revisable, int(prov.sum()), "provisional series"))
    listed = table
    others = table.iloc[:0]
    if len(table) > table_rows:
        keep = charted_rows(table, billed, most=table_rows)
        listed = table.iloc[keep]
        others = table.drop(index=table.index[keep])
        notes.insert(0, f"the table lists {len(listed)} of {len(table)} series: those near "
                        "their limits, billed or busiest; the other "
                        f"{len(others)} are summed up per metric below it, and every series "
                        f"is in {daily_name(day)}.csv")
    if len(charted) < len(table):
        where = "every series is in the table" if not len(others) else "the rest as above"
        notes.insert(0, f"charts for {len(charted)} of {len(table)} series: those near their "
                        f"limits, billed or busiest; {where}")
    counters = table[table["metric_type"] == MetricType.COUNTER.value]
    summary: list[tuple[str, Any]] = [
        ("date", day.isoformat()),
        ("day length", f"{hours:g} h"),
        ("series", len(table)),
        ("samples", int(table["samples"].sum())),
        ("lowest coverage", f"{covs.min():g} %" if len(covs) else ""),
    ]
    if len(counters):
        # Exact: fractional counters keep their decimals (int() would cut them off).
        summary.append(("counter increase", exact_total(counters["increase"])))
    until = from_micros(end_us)
    tables = [table_from_frame("Per series", listed)]
    if len(others):
        tables.append(table_from_frame("Other series, per metric (every one is in the CSV)",
                                       others_by_metric(others), low_coverage=False))
    # The day's alert state changes (SPEC 8), in local time; no table on a quiet day.
    events = alert_events(result.engine, from_micros(start_us), until, result.period.tz)
    if len(events):
        summary.append(("alert events", len(events)))
        tables.append(table_from_frame("Alert events", events, row_css="event",
                                       low_coverage=False))
    return render_report(
        title=f"Daily usage {day.isoformat()}",
        subtitle=(f"[{from_micros(start_us).isoformat()}, {until.isoformat()}) "
                  f"— local day in {result.tz}"),
        tz=result.tz, summary=summary, notes=notes,
        sources=source_snapshots(result.engine, result.config, until), tables=tables,
        charts=charts,
    )


# Notes of one kind shown in a daily report at most; the rest are counted (the table has all).
MAX_NOTES = 20


def _bounded(notes: list[str], total: int, what: str) -> list[str]:
    if total <= MAX_NOTES:
        return notes
    return [*notes[:MAX_NOTES], f"and {total - MAX_NOTES} more {what} (see the table)"]
