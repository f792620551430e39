"""The billing report (SPEC 6): read → compute (`billing`), then files (`write_billing`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from markupsafe import Markup
from sqlalchemy import Connection, Engine

from etl.config import Config
from etl.timefmt import from_micros, to_micros
from reports.compute.billing import (
    SampleMap,
    billing_table,
    in_progress,
    period_charges,
    period_days,
    rule_cumulative,
    rule_days,
    table_charges,
    tiers_frame,
    with_credits,
)
from reports.compute.credits import (
    CreditDraw,
    CreditStatus,
    PeriodCharge,
    SpendProjection,
    apply_credits,
    credit_statuses,
)
from reports.compute.daily import DAY_COLUMNS
from reports.compute.quantities import FROM_SAMPLES
from reports.names import ReportFormat, billing_name, output_dir, report_formats
from reports.periods import (
    Period,
    RulePeriod,
    month_period,
    next_month,
    previous_month,
    resolve_tz,
    rule_periods,
    span,
)
from reports.pipelines.days import (
    configured_series,
    history_sources,
    provisional_text,
    series_day_rows,
)
from reports.read.samples import read_series_samples, read_snapshot, source_snapshots
from reports.render.charts import billing_chart
from reports.render.csv import write_csv
from reports.render.html import Chart, render_report, table_from_frame, write_html


@dataclass(frozen=True)
class BillingResult:
    """The billing report of a period label: its table, the day rows it came from, its inputs.

    `table` has reports.compute.billing.BILLING_COLUMNS, one row per rule pricing its period
    labelled `month` (`priced`, in the same order); `rows` are the day rows of those periods
    (the HTML charts the cumulative quantity from them); `samples` the samples of the rules
    whose quantity no day row gives (quantities.FROM_SAMPLES: p95); `now` decided what is
    period-to-date and projected; `credits` the credits that pay some row, with their
    balances after these periods and projected run-out (SPEC 11), `draws` what each row took.
    """

    engine: Engine
    config: Config
    month: date
    tz: str
    priced: list[RulePeriod]
    rows: pd.DataFrame
    table: pd.DataFrame
    now: datetime
    samples: SampleMap
    draws: list[CreditDraw] = field(default_factory=list)
    credits: list[CreditStatus] = field(default_factory=list)

    @property
    def period(self) -> Period:
        """The calendar month of the label (what a report without rules shows)."""
        return month_period(self.month, resolve_tz(self.tz))


def credit_history(config: Config, label: date, zone: ZoneInfo) -> list[RulePeriod]:
    """The periods before `label` whose amounts the credits may have paid (SPEC 11).

    Every period labelled before `label` of a rule whose source has a credit, from the first
    one starting on or after that source's earliest `granted`: a balance is the credit minus
    all they took, whatever month a report asks for.
    """
    first_grant: dict[str, date] = {}
    for credit in config.credits:
        first_grant[credit.source] = min(credit.granted,
                                         first_grant.get(credit.source, credit.granted))
    if not first_grant or not any(r.source in first_grant for r in config.billing):
        return []
    lab = previous_month(min(first_grant.values()).replace(day=1))
    out = []
    while lab < label:
        out += [rp for rp in rule_periods(config.billing, lab, zone)
                if rp.rule.source in first_grant
                and rp.period.start >= first_grant[rp.rule.source]]
        lab = next_month(lab)
    return out


def _read(engine: Engine, config: Config, snapshot: Connection, priced: Sequence[RulePeriod],
          zone: ZoneInfo, tz_name: str, rollups: bool) -> tuple[pd.DataFrame, SampleMap]:
    """The day rows (and p95 samples) of every period in `priced`, in one snapshot."""
    if not priced:
        return pd.DataFrame(columns=["source", "metric", "metric_type", "date",
                                     *DAY_COLUMNS]), {}
    whole = span([rp.period for rp in priced], zone)
    wanted = list(dict.fromkeys((rp.rule.source, rp.rule.metric) for rp in priced))
    rows = series_day_rows(engine, configured_series(config, wanted), whole,
                           rollup_tz=tz_name if rollups else None, snapshot=snapshot)
    # A period's p95 is no function of its days' figures: those rules read their samples,
    # in the same snapshot as the day rows.
    samples = read_series_samples(
        snapshot, [(rp.rule.source, rp.rule.metric) for rp in priced
                   if rp.rule.aggregation in FROM_SAMPLES], whole.start_us, whole.end_us)
    return rows, samples


def billing(engine: Engine, config: Config, month: date, tz: str | None = None, *,
            now: datetime | None = None, rollups: bool = True) -> BillingResult:
    """The billing report of the periods labelled with the month of `month`, in `tz`.

    Each rule's period is the one starting in that month on its `cycle_day` (SPEC 11;
    reports.periods.rule_periods), priced by the rule valid on its first day. `tz` defaults
    to the config's; `now` (default: the current time) decides which periods are in
    progress. Credits are paid from every period since they were granted (from rollups).
    `rollups` as in reports.pipelines.daily.daily. Raises InputError for an unknown zone.
    """
    label = month.replace(day=1)
    tz_name = tz or config.timezone
    zone = resolve_tz(tz_name)
    priced = rule_periods(config.billing, label, zone)
    history = credit_history(config, label, zone)
    with read_snapshot(engine) as snapshot:
        rows, samples = _read(engine, config, snapshot, priced, zone, tz_name, rollups)
        past_rows, past_samples = _read(engine, config, snapshot, history, zone, tz_name,
                                        rollups)
        now = now or datetime.now(UTC)
        table = billing_table(rows, priced, now=now, samples=samples)
        historic = history_sources(config)  # the only ones provisional_text has words for
        table["provisional"] = [
            provisional_text(snapshot, config, rp.rule.source, rp.period.start_us,
                             rp.period.end_us) if rp.rule.source in historic else None
            for rp in priced]
    result = BillingResult(engine, config, label, tz_name, priced, rows, table, now, samples)
    if not history and not config.credits:
        return result
    return _with_credits(result, past_rows, past_samples, history)


def _with_credits(result: BillingResult, past_rows: pd.DataFrame, past_samples: SampleMap,
                  history: list[RulePeriod]) -> BillingResult:
    """`result` with credit_applied, amount_due and the credits' balances and run-out."""
    config, now_us = result.config, to_micros(result.now)
    zone = resolve_tz(result.tz)
    charges = (period_charges(past_rows, history, past_samples)
               + table_charges(result.table, result.priced))
    draws = apply_credits(charges, config.credits)
    # Periods in progress, wherever their label: how the credits are projected to be spent.
    running = [rp for rp in history if rp.period.start_us <= now_us < rp.period.end_us]
    spending = _spending(billing_table(past_rows, running, now=result.now,
                                       samples=past_samples), running, now_us)
    spending += _spending(result.table, result.priced, now_us)
    paying = [c for c in config.credits
              if any(c.applies_to(rp.rule.source, rp.rule.currency, rp.period.start)
                     for rp in result.priced)]
    statuses = credit_statuses(paying, charges, draws, spending, now_us,
                               lambda us: from_micros(us, zone).date())
    return replace(result, table=with_credits(result.table, draws[len(history):]),
                   draws=draws[len(history):], credits=statuses)


def _spending(table: pd.DataFrame, priced: Sequence[RulePeriod], now_us: int
              ) -> list[tuple[PeriodCharge, SpendProjection]]:
    out = []
    charges = table_charges(table, priced)
    for ch, rp, row in zip(charges, priced, table.to_dict("records"), strict=True):
        projected = row["projected_amount"]
        if projected is None or not rp.period.start_us <= now_us < rp.period.end_us:
            continue
        out.append((ch, SpendProjection(now_us, rp.period.end_us,
                                        max(projected - row["amount"], Decimal(0)), projected,
                                        rp.period.end_us - rp.period.start_us)))
    return out


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
    table = result.table
    charts = []
    tier_tables = []
    for rp, quantity in zip(result.priced, table["quantity"], strict=True):
        rule = rp.rule
        days = period_days(rule_days(result.rows, rule), rp.period)
        cum = rule_cumulative(days, rule, result.samples, to_micros(result.now))
        svg = billing_chart(rp.period.days, cum, rule.included, rule.aggregation)
        charts.append(Chart(f"{rule.source} / {rule.metric} ({rule.aggregation}) "
                            f"vs {rule.included} included", Markup(svg)))
        tiers = tiers_frame(quantity, rule)
        if len(tiers):
            tier_tables.append(table_from_frame(
                f"Tiers reached: {rule.source} / {rule.metric} ({rule.pricing})", tiers,
                low_coverage=False))
    totals: dict[str, Any] = {}
    for cur, amount in zip(table["currency"], table["amount_due"], strict=True):
        totals[cur] = totals.get(cur, 0) + amount
    summary: list[tuple[str, Any]] = [("month", result.month.strftime("%Y-%m")),
                                      ("billing rules", len(table))]
    summary += [(f"total due {cur}", amt) for cur, amt in totals.items()]
    records = table.to_dict("records")
    today = result.now.astimezone(resolve_tz(result.tz)).date()
    notes = [note for r in records for note in period_notes(r, today)]
    tables = [table_from_frame("Per billing rule", table,
                               low_rows=[has_gap(r, today) for r in records])]
    if result.credits:
        tables.append(table_from_frame("Credits", credits_frame(result.credits),
                                       low_coverage=False))
        notes += [credit_note(c) for c in result.credits]
    end_us = max((rp.period.end_us for rp in result.priced), default=result.period.end_us)
    return render_report(
        title=f"Billing {result.month.strftime('%Y-%m')}",
        subtitle=f"each rule's period labelled {result.month.strftime('%Y-%m')}, in "
                 f"{result.tz}; amounts by each rule's pricing, rounded half-up once to the "
                 "currency's minor unit; amount due after prepaid credits",
        tz=result.tz, summary=summary, notes=notes,
        sources=source_snapshots(result.engine, result.config, from_micros(end_us)),
        tables=[*tables, *tier_tables], charts=charts)


def has_gap(row: dict[str, Any], today: date) -> bool:
    """Whether part of the row's period that has passed by `today` went unobserved.

    For a period in progress only its elapsed part counts, and a period that has not begun
    has no gap: what is still ahead is not a gap yet.
    """
    if row["period_start"] > today:
        return False
    if in_progress(row):
        return bool(row["elapsed_coverage_pct"] < 100)
    return bool(row["coverage_pct"] < 100)


def period_notes(row: dict[str, Any], today: date) -> list[str]:
    """What a reader needs to read a billing row: its period, plan and projection."""
    what = f"{row['source']}/{row['metric']}"
    span_text = f"{row['period_start']} to {row['period_end']}"
    notes = []
    if row["valid_from"] is not None or row["valid_until"] is not None:
        notes.append(f"{what}: priced by the plan valid from {row['valid_from'] or 'the start'}"
                     f" until {row['valid_until'] or 'further notice'}")
    if in_progress(row):
        notes.append(f"{what}: period {span_text} in progress, {row['elapsed_pct']:g} % "
                     f"elapsed; {row['elapsed_coverage_pct']:g} % of the elapsed part "
                     "observed" + (" — the quantity is a lower bound" if has_gap(row, today)
                                   else "")
                     + f"; projected at period end {row['projected_quantity']} units, "
                     f"{row['projected_amount']} {row['currency']}")
    elif row["period_start"] > today:
        notes.append(f"{what}: period {span_text} has not begun")
    elif has_gap(row, today):
        notes.append(f"{what}: period {span_text}, coverage {row['coverage_pct']:g} % — "
                     "the quantity is a lower bound")
    if row.get("provisional") == "true":  # SPEC 10
        notes.append(f"{what}: provisional — the period was not all read `lookback` after it "
                     "ended: the vendor may still revise the quantity")
    return notes


def credits_frame(statuses: Sequence[CreditStatus]) -> pd.DataFrame:
    """One row per credit: its grant, the balance after the report's periods, its run-out."""
    return pd.DataFrame.from_records(
        [{"credit": s.credit.name, "source": s.credit.source, "currency": s.credit.currency,
          "amount": s.credit.amount, "granted": s.credit.granted, "expires": s.credit.expires,
          "balance": s.balance, "projected_run_out": s.run_out} for s in statuses],
        columns=["credit", "source", "currency", "amount", "granted", "expires", "balance",
                 "projected_run_out"])


def credit_note(status: CreditStatus) -> str:
    """A credit's balance and when it runs out, in words."""
    c = status.credit
    text = f"credit {c.name}: balance {status.balance} {c.currency} of {c.amount}"
    if status.balance <= 0:
        return text + ", used up"
    if status.run_out is not None:
        return text + f", projected to run out on {status.run_out:%Y-%m-%d}"
    return text
