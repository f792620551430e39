"""Build report files (CSV and/or HTML) — what the CLI, the scheduler and the demo call."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup
from sqlalchemy import Engine

from etl.config import Config
from etl.errors import InputError
from etl.store.models import to_micros
from reports.compute.billing import rule_cumulative, rule_days, tiers_frame
from reports.compute.daily import exact_total
from reports.compute.reconcile import check_tolerance, reconcile_table
from reports.frames import (
    billing_inputs,
    configured_series,
    daily_from_rows,
    rollup_tz,
    series_day_rows,
)
from reports.names import billing_name, daily_name, reconcile_name
from reports.periods import days_period, parse_month, resolve_tz, us_to_datetime
from reports.read.alerts import alert_events
from reports.read.invoice import read_invoice
from reports.read.samples import latest_payload, read_prev_value, read_samples, series_ids
from reports.render.charts import billing_chart, series_day_chart
from reports.render.csv import write_csv
from reports.render.html import Chart, render_report, table_from_frame, write_html

FORMATS = ("csv", "html")


def _formats(formats: Sequence[str]) -> list[str]:
    wanted = ["csv", "html"] if "both" in formats else list(formats)
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        raise InputError(f"--format: {', '.join(bad) or 'none'} (expected csv, html or both)")
    return wanted


def _out_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out: cannot create {out_dir}: {exc.strerror}") from None
    return out_dir


def _sources_info(engine: Engine, config: Config, before: datetime) -> list[dict[str, Any]]:
    """tenantId / appId from each wiresocket source's latest snapshot (vendor text: escaped)."""
    found = []
    for src in config.sources:
        if src.kind != "wiresocket":
            continue
        body = latest_payload(engine, src.name, before) or {}
        found.append({
            "source": src.name, "kind": src.kind,
            "tenant_id": str(body.get("tenantId", "")), "app_id": str(body.get("appId", "")),
            "observed_at": str(body.get("timestamp", "")),
        })
    return found


def build_daily(engine: Engine, config: Config, start: date, end: date, *,
                tz: str | None = None, formats: Sequence[str] = FORMATS,
                out_dir: Path) -> list[Path]:
    """daily-YYYY-MM-DD.{csv,html} for each local day start..end (both included)."""
    wanted = _formats(formats)
    tz_name = tz or config.timezone
    zone = resolve_tz(tz_name)
    if end < start:
        raise InputError(f"--end: {end} is before --start {start}")
    period = days_period(start, end + timedelta(days=1), zone)
    rows = series_day_rows(engine, configured_series(config), period,
                           rollup_tz=rollup_tz(config, tz))
    daily = daily_from_rows(rows)
    out = _out_dir(out_dir)
    ids = series_ids(engine) if "html" in wanted else {}
    paths: list[Path] = []
    # One groupby instead of a scan of the whole table per day.
    by_day = {key: g for key, g in daily.groupby("date", sort=False)} if len(daily) else {}
    for i, day in enumerate(period.days):
        table = by_day.get(day, daily.iloc[:0]).reset_index(drop=True)
        base = out / daily_name(day)
        if "csv" in wanted:
            paths.append(write_csv(table, base.with_suffix(".csv")))
        if "html" in wanted:
            start_us, end_us = int(period.bounds[i]), int(period.bounds[i + 1])
            html = _daily_html(engine, config, table, day, start_us, end_us, tz_name, ids)
            paths.append(write_html(html, base.with_suffix(".html")))
    return paths


def _daily_html(engine: Engine, config: Config, table: pd.DataFrame, day: date, start_us: int,
                end_us: int, tz_name: str, ids: dict[tuple[str, str], int]) -> str:
    hours = (end_us - start_us) / 3.6e9
    charts = []
    with engine.connect() as conn:
        for rec in table.to_dict("records"):
            sid = ids.get((rec["source"], rec["metric"]))
            if sid is None:
                continue
            arr = read_samples(conn, sid, start_us, end_us)
            prev = (read_prev_value(conn, sid, start_us)
                    if rec["metric_type"] == "counter" else None)
            limit = None if pd.isna(rec["limit"]) else float(rec["limit"])
            svg = series_day_chart(arr.t, arr.value, start_us=start_us, end_us=end_us,
                                   metric=str(rec["metric"]), metric_type=str(rec["metric_type"]),
                                   limit=limit, prev_value=prev)
            charts.append(Chart(f"{rec['source']} / {rec['metric']}", Markup(svg)))
    covs = [c for c in table["coverage_pct"] if not pd.isna(c)]
    alerts = [f"{r['source']}/{r['metric']}: {r['critical_minutes']:g} min at critical "
              f"(≥90 % of the limit), peak {r['peak_pct']:g} %"
              for r in table.to_dict("records")
              if not pd.isna(r["critical_minutes"]) and r["critical_minutes"] > 0]
    gaps = [f"{r['source']}/{r['metric']}: coverage {r['coverage_pct']:g} % — "
            "part of the day was not observed, figures are a lower bound"
            for r in table.to_dict("records") if r["coverage_pct"] < 100]
    counters = table[table["metric_type"] == "counter"]
    summary: list[tuple[str, Any]] = [
        ("date", day.isoformat()),
        ("day length", f"{hours:g} h"),
        ("series", len(table)),
        ("samples", int(table["samples"].sum())),
        ("lowest coverage", f"{min(covs):g} %" if covs else ""),
    ]
    if len(counters):
        # Exact: fractional counters keep their decimals (int() would cut them off).
        summary.append(("counter increase", exact_total(counters["increase"])))
    until = us_to_datetime(end_us)
    tables = [table_from_frame("Per series", table)]
    # The day's alert state changes (SPEC 8), in local time; no table on a quiet day.
    events = alert_events(engine, us_to_datetime(start_us), until, resolve_tz(tz_name))
    if len(events):
        summary.append(("alert events", len(events)))
        tables.append(table_from_frame("Alert events", events, row_css="event",
                                       low_coverage=False))
    return render_report(
        title=f"Daily usage {day.isoformat()}",
        subtitle=f"[{us_to_datetime(start_us).isoformat()}, {until.isoformat()}) — local day in {tz_name}",
        tz=tz_name, summary=summary, notes=alerts + gaps,
        sources=_sources_info(engine, config, until), tables=tables, charts=charts,
    )


def build_billing(engine: Engine, config: Config, month: str, *, tz: str | None = None,
                  formats: Sequence[str] = FORMATS, out_dir: Path,
                  now: datetime | None = None) -> list[Path]:
    """billing-YYYY-MM.{csv,html}: one row per billing rule."""
    wanted = _formats(formats)
    first = parse_month(month)
    tz_name = tz or config.timezone
    inputs = billing_inputs(engine, config, first, tz_name)
    period = inputs.period
    now = now or datetime.now(UTC)
    table = inputs.table(config, now)
    out = _out_dir(out_dir)
    base = out / billing_name(first)
    paths: list[Path] = []
    if "csv" in wanted:
        paths.append(write_csv(table, base.with_suffix(".csv")))
    if "html" in wanted:
        charts = []
        tier_tables = []
        for rule, quantity in zip(config.billing, table["quantity"], strict=True):
            days = rule_days(inputs.rows, rule)
            cum = rule_cumulative(days, rule, inputs.samples, to_micros(now))
            svg = billing_chart(period.days, cum, rule.included, rule.aggregation)
            charts.append(Chart(f"{rule.source} / {rule.metric} ({rule.aggregation}) "
                                f"vs {rule.included} included", Markup(svg)))
            tiers = tiers_frame(quantity, rule)
            if len(tiers):
                tier_tables.append(table_from_frame(
                    f"Tiers reached: {rule.source} / {rule.metric} ({rule.pricing})", tiers,
                    low_coverage=False))
        totals: dict[str, Any] = {}
        for cur, amount in zip(table["currency"], table["amount"], strict=True):
            totals[cur] = totals.get(cur, 0) + amount
        summary: list[tuple[str, Any]] = [("month", first.strftime("%Y-%m")),
                                          ("billing rules", len(table))]
        summary += [(f"total {cur}", amt) for cur, amt in totals.items()]
        notes = [f"{r['source']}/{r['metric']}: coverage {r['coverage_pct']:g} % — "
                 "the quantity is a lower bound" for r in table.to_dict("records")
                 if r["coverage_pct"] < 100]
        notes += [f"{r['source']}/{r['metric']}: projected month end {r['projected_quantity']} "
                  f"units, {r['projected_amount']} {r['currency']}"
                  for r in table.to_dict("records") if r["projected_quantity"] is not None]
        html = render_report(
            title=f"Billing {first.strftime('%Y-%m')}",
            subtitle=f"month in {tz_name}; amounts by each rule's pricing, rounded half-up once "
                     "to the currency's minor unit",
            tz=tz_name, summary=summary, notes=notes,
            sources=_sources_info(engine, config, us_to_datetime(period.end_us)),
            tables=[table_from_frame("Per billing rule", table), *tier_tables], charts=charts)
        paths.append(write_html(html, base.with_suffix(".html")))
    return paths


def build_reconcile(engine: Engine, config: Config, month: str, invoice: Path, *,
                    tolerance_pct: float = 1.0, tz: str | None = None,
                    formats: Sequence[str] = FORMATS, out_dir: Path,
                    now: datetime | None = None) -> list[Path]:
    """reconcile-YYYY-MM.{csv,html}: metered against the invoice CSV."""
    wanted = _formats(formats)
    first = parse_month(month)
    check_tolerance(tolerance_pct)
    lines = read_invoice(Path(invoice), first.strftime("%Y-%m"))
    tz_name = tz or config.timezone
    inputs = billing_inputs(engine, config, first, tz_name)
    period = inputs.period
    billed = inputs.table(config, now or datetime.now(UTC))
    table = reconcile_table(billed, lines, first.strftime("%Y-%m"), tolerance_pct=tolerance_pct)
    out = _out_dir(out_dir)
    base = out / reconcile_name(first)
    paths: list[Path] = []
    if "csv" in wanted:
        paths.append(write_csv(table, base.with_suffix(".csv")))
    if "html" in wanted:
        counts = table["status"].value_counts()
        summary: list[tuple[str, Any]] = [("month", first.strftime("%Y-%m")),
                                          ("tolerance", f"{tolerance_pct:g} %")]
        summary += [(s, int(counts.get(s, 0)))
                    for s in ("match", "mismatch", "missing_invoice", "missing_metered")]
        html = render_report(
            title=f"Reconciliation {first.strftime('%Y-%m')}",
            subtitle=f"metered vs invoice {Path(invoice).name}; diff = metered − invoiced",
            tz=tz_name, summary=summary,
            sources=_sources_info(engine, config, us_to_datetime(period.end_us)),
            tables=[table_from_frame("Per series", table, row_css="status")])
        paths.append(write_html(html, base.with_suffix(".html")))
    return paths
