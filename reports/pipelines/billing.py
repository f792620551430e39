"""The billing report (SPEC 6): read → compute (`billing`), then files (`write_billing`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup
from sqlalchemy import Engine

from etl.config import Config
from etl.timefmt import from_micros, to_micros
from reports.compute.billing import (
    SampleMap,
    billing_table,
    rule_cumulative,
    rule_days,
    tiers_frame,
)
from reports.compute.quantities import FROM_SAMPLES
from reports.names import ReportFormat, billing_name, output_dir, report_formats
from reports.periods import Period, month_period, resolve_tz
from reports.pipelines.days import configured_series, series_day_rows
from reports.read.samples import read_series_samples, read_snapshot, source_snapshots
from reports.render.charts import billing_chart
from reports.render.csv import write_csv
from reports.render.html import Chart, render_report, table_from_frame, write_html


@dataclass(frozen=True)
class BillingResult:
    """The billing report of a month: its table, the day rows it came from, and its inputs.

    `table` has reports.compute.billing.BILLING_COLUMNS, one row per [[billing]] rule;
    `rows` are the day rows of the rules' series (the HTML charts the cumulative quantity
    from them); `samples` the month's samples of the rules whose quantity no day row gives
    (quantities.FROM_SAMPLES: p95); `now` decided what is month-to-date and projected.
    """

    engine: Engine
    config: Config
    month: date
    period: Period
    tz: str
    rows: pd.DataFrame
    table: pd.DataFrame
    now: datetime
    samples: SampleMap


def billing(engine: Engine, config: Config, month: date, tz: str | None = None, *,
            now: datetime | None = None, rollups: bool = True) -> BillingResult:
    """The billing report for the month containing `month`, in `tz` (default: config's).

    `now` (default: the current time) decides whether the month is in progress.
    `rollups` as in reports.pipelines.daily.daily. Raises InputError for an unknown zone.
    """
    first = month.replace(day=1)
    tz_name = tz or config.timezone
    period = month_period(first, resolve_tz(tz_name))
    wanted = [(r.source, r.metric) for r in config.billing]
    with read_snapshot(engine) as snapshot:
        rows = series_day_rows(engine, configured_series(config, wanted), period,
                               rollup_tz=tz_name if rollups else None, snapshot=snapshot)
        # A month's p95 is no function of its days' figures: those rules read their
        # samples, in the same snapshot as the day rows.
        samples = read_series_samples(
            snapshot,
            [(r.source, r.metric) for r in config.billing if r.aggregation in FROM_SAMPLES],
            period.start_us, period.end_us)
    now = now or datetime.now(UTC)
    table = billing_table(rows, config.billing, period, now=now, samples=samples)
    return BillingResult(engine, config, first, period, tz_name, rows, table, now, samples)


def write_billing(result: BillingResult, formats: Sequence[str], out_dir: Path) -> list[Path]:
    """billing-YYYY-MM.{csv,html} in `out_dir`; the paths written."""
    wanted = report_formats(formats)
    base = output_dir(out_dir) / billing_name(result.month)
    paths: list[Path] = []
    if ReportFormat.CSV in wanted:
        paths.append(write_csv(result.table, base.with_suffix(".csv")))
    if ReportFormat.HTML in wanted:
        paths.append(write_html(_billing_html(result), base.with_suffix(".html")))
    return paths


def _billing_html(result: BillingResult) -> str:
    table, period = result.table, result.period
    charts = []
    tier_tables = []
    for rule, quantity in zip(result.config.billing, table["quantity"], strict=True):
        days = rule_days(result.rows, rule)
        cum = rule_cumulative(days, rule, result.samples, to_micros(result.now))
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
    summary: list[tuple[str, Any]] = [("month", result.month.strftime("%Y-%m")),
                                      ("billing rules", len(table))]
    summary += [(f"total {cur}", amt) for cur, amt in totals.items()]
    notes = [f"{r['source']}/{r['metric']}: coverage {r['coverage_pct']:g} % — "
             "the quantity is a lower bound" for r in table.to_dict("records")
             if r["coverage_pct"] < 100]
    notes += [f"{r['source']}/{r['metric']}: projected month end {r['projected_quantity']} "
              f"units, {r['projected_amount']} {r['currency']}"
              for r in table.to_dict("records") if r["projected_quantity"] is not None]
    return render_report(
        title=f"Billing {result.month.strftime('%Y-%m')}",
        subtitle=f"month in {result.tz}; amounts by each rule's pricing, rounded half-up once "
                 "to the currency's minor unit",
        tz=result.tz, summary=summary, notes=notes,
        sources=source_snapshots(result.engine, result.config, from_micros(period.end_us)),
        tables=[table_from_frame("Per billing rule", table), *tier_tables], charts=charts)
