"""Billing per `[[billing]]` rule and period (SPEC 5, 11): exact quantities, money in Decimal."""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import ParamSpec, TypeAlias, TypeVar

import numpy as np
import pandas as pd

from etl.config import BillingRule, Pricing
from etl.timefmt import from_micros, to_micros
from reports.compute.credits import CreditDraw, PeriodCharge, amount_due
from reports.compute.daily import coverage_pct
from reports.compute.dayrows import DayRows, split_series
from reports.compute.pricing import charge, round_money
from reports.compute.quantities import (
    ACCUMULATING,
    cumulative_quantities,
    month_quantity,
    round_quantity,
)
from reports.periods import Period, RulePeriod, label_text

# Significant digits of billing arithmetic. The largest figures the edges let in: a month's
# quantity below 10^28 (readings up to 10^15, a sample a microsecond) with 4 places, times a
# price up to 10^15 with 12 places, is under 60 digits: every product and rounding is exact
# (the default 28 would round it, and fail to quantize it to cents).
BILLING_PRECISION = 60
_P = ParamSpec("_P")
_R = TypeVar("_R")


def exact_decimals(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `func` with BILLING_PRECISION digits of decimal arithmetic (on this thread)."""
    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext() as ctx:
            ctx.prec = BILLING_PRECISION
            return func(*args, **kwargs)
    return wrapper


BILLING_COLUMNS = [
    "month", "source", "metric", "aggregation", "quantity", "included", "overage",
    "unit_price", "amount", "currency", "coverage_pct", "pricing",
    # SPEC 10: filled in for history series by the pipeline (reads are not day rows)
    "provisional",
    # SPEC 11
    "period_start", "period_end", "credit_applied", "amount_due",
    # extras
    "samples", "resets", "mtd_quantity", "mtd_amount", "projected_quantity",
    "projected_amount", "included_used_up_on", "used_up_projected", "flat_fee", "minimum",
    "minimum_applied", "elapsed_pct", "elapsed_coverage_pct", "valid_from", "valid_until",
]
# Month samples of the series whose quantity needs them (p95): (epoch microseconds, values).
SampleMap = Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]]
# One series' day rows: a DataFrame, or the same columns as numpy arrays (cheaper per call).
Days: TypeAlias = pd.DataFrame | DayRows


def rule_days(rows: pd.DataFrame, rule: BillingRule) -> pd.DataFrame:
    """The rule's series' day rows, in date order."""
    sel = rows[(rows["source"] == rule.source) & (rows["metric"] == rule.metric)]
    return sel.sort_values("date").reset_index(drop=True)


def days_by_series(rows: pd.DataFrame) -> dict[tuple[str, str], DayRows]:
    """rule_days() for every (source, metric) at once, as columns (dayrows.split_series)."""
    return split_series(rows)


@exact_decimals
def rule_cumulative(days: Days, rule: BillingRule, samples: SampleMap | None = None,
                    now_us: int | None = None) -> list[Decimal | None]:
    """Per day: the rule's month quantity up to that day (quantities.cumulative_quantities)."""
    t, v = (samples or {}).get((rule.source, rule.metric), (None, None))
    return cumulative_quantities(days, rule.aggregation, sample_t=t, sample_value=v,
                                 now_us=now_us)


TIER_COLUMNS = ["units", "unit_price", "flat_price", "amount"]


def tiers_frame(quantity: Decimal, rule: BillingRule) -> pd.DataFrame:
    """The tiers a graduated or volume rule reaches at `quantity` (TIER_COLUMNS; exact).

    Empty for other pricings and for zero billable units. Priced by pricing.charge, the same
    call as the rule's amount.
    """
    reached = charge(quantity, rule).tiers
    return pd.DataFrame.from_records(
        [(t.units, t.unit_price, t.flat_price, t.amount) for t in reached], columns=TIER_COLUMNS)


def period_days(days: Days, period: Period) -> Days:
    """The day rows (one series, date order) that fall in `period`."""
    if not len(days):
        return days
    dates = days["date"].tolist()
    lo, hi = bisect_left(dates, period.start), bisect_left(dates, period.end)
    if lo == 0 and hi == len(dates):
        return days
    if isinstance(days, DayRows):
        return days.rows(lo, hi)
    return days.iloc[lo:hi].reset_index(drop=True)


def period_samples(samples: SampleMap | None, rule: BillingRule, period: Period) -> SampleMap:
    """The samples of `rule`'s series inside `period` (for quantities read from samples)."""
    found = (samples or {}).get((rule.source, rule.metric))
    if found is None:
        return {}
    t, v = found
    lo, hi = np.searchsorted(t, [period.start_us, period.end_us], side="left")
    return {(rule.source, rule.metric): (t[lo:hi], v[lo:hi])}


@exact_decimals
def period_charges(rows: pd.DataFrame, priced: Sequence[RulePeriod],
                   samples: SampleMap | None = None) -> list[PeriodCharge]:
    """What each rule charged for its period, as credits see it (no projection; pure).

    For the periods before a report's: their amounts are what credits paid before it.
    """
    grouped = days_by_series(rows)
    out = []
    for rp in priced:
        rule = rp.rule
        found = grouped.get((rule.source, rule.metric))
        days = period_days(found if found is not None else rows.iloc[0:0], rp.period)
        cum = (rule_cumulative(days, rule, period_samples(samples, rule, rp.period))
               if len(days) else [])
        amount = charge(month_quantity(cum), rule).amount
        out.append(PeriodCharge(rule.source, rule.metric, rule.currency, rp.label,
                                rp.period.start, rp.index, amount))
    return out


@exact_decimals
def billing_table(rows: pd.DataFrame, priced: Sequence[RulePeriod], *, now: datetime,
                  samples: SampleMap | None = None) -> pd.DataFrame:
    """One row per priced rule for its period (periods.rule_periods), from day rows (pure).

    `rows` are series_day_rows() rows covering every rule's period (more days are ignored);
    `samples` the samples of every rule whose aggregation needs them (quantities.FROM_SAMPLES:
    p95), covering its period. `now` decides whether a period is in progress: then the
    period-to-date figures stop at today, `elapsed_pct`/`elapsed_coverage_pct` say how much of
    the period has passed and how much of that was observed, and a projection to the end of
    the period is added, priced by the same pricing.charge as the period. `credit_applied` is
    0 and `amount_due` the amount until with_credits() fills them.
    """
    now_us = to_micros(now)
    records = []
    grouped = days_by_series(rows)
    for rp in priced:
        rule, period = rp.rule, rp.period
        in_progress = period.start_us <= now_us < period.end_us
        found = grouped.get((rule.source, rule.metric))
        days = period_days(found if found is not None else rule_days(rows, rule), period)
        totals = period_counts(days) if len(days) else None
        n_samples = int(totals["samples"]) if totals else 0
        own_samples = period_samples(samples, rule, period)
        cum = rule_cumulative(days, rule, own_samples) if len(days) else []
        quantity = month_quantity(cum)
        billed = charge(quantity, rule)
        cov = (coverage_pct(int(totals["covered_us"]), int(totals["length_us"]))
               if totals else 0.0)

        # Period to date: days that started by now (all days once the period is over).
        started = sum(1 for s in period.bounds[:-1].tolist() if s <= now_us)
        mtd_q = month_quantity(cum[:started])
        mtd_amount = charge(mtd_q, rule).amount

        projected_q: Decimal | None = None
        projected_amount: Decimal | None = None
        elapsed_pct: float | None = None
        elapsed_cov: float | None = None
        used_up: date | None = None
        used_up_projected = False
        # Rounding moves a figure by half a step at most: one a unit below `included` (most
        # days of most rules) cannot round up to it.
        below = rule.included - 1
        for d, c in zip(period.days, cum, strict=False):
            if c is not None and c > below and round_quantity(c) >= rule.included and c > 0:
                used_up = d
                break
        if in_progress:
            elapsed = now_us - period.start_us
            length = period.end_us - period.start_us
            elapsed_pct = coverage_pct(elapsed, length)
            elapsed_cov = elapsed_coverage(days, now_us, elapsed)
            if rule.aggregation in ACCUMULATING:
                # Linear run rate of the period so far; a plan cycle reset would show as one.
                projected_q = (round_quantity(mtd_q * length / elapsed)
                               if elapsed > 0 else mtd_q)
                if used_up is None and mtd_q > 0 and rule.included > mtd_q:
                    at_us = period.start_us + int(elapsed * rule.included / mtd_q)
                    if at_us < period.end_us:
                        used_up = from_micros(at_us, period.tz).date()
                        used_up_projected = True
            else:
                # A level (peak, p95, average, last reading) is not extrapolated: the period
                # so far is the projection.
                projected_q = mtd_q
            projected_amount = charge(projected_q, rule).amount
        records.append({
            "month": label_text(rp.label), "source": rule.source, "metric": rule.metric,
            "aggregation": str(rule.aggregation), "quantity": quantity,
            "included": rule.included, "overage": billed.overage,
            "unit_price": rule.unit_price if rule.pricing == Pricing.PER_UNIT else None,
            "amount": billed.amount, "currency": rule.currency, "coverage_pct": cov,
            "pricing": str(rule.pricing),
            "period_start": period.start, "period_end": period.end,
            "credit_applied": round_money(Decimal(0), rule.currency),
            "amount_due": billed.amount, "samples": n_samples,
            "resets": int(totals["resets"]) if totals else 0,
            "mtd_quantity": mtd_q, "mtd_amount": mtd_amount,
            "projected_quantity": projected_q, "projected_amount": projected_amount,
            "included_used_up_on": used_up, "used_up_projected": used_up_projected,
            "flat_fee": rule.flat_fee, "minimum": rule.minimum,
            "minimum_applied": billed.minimum_applied, "elapsed_pct": elapsed_pct,
            "elapsed_coverage_pct": elapsed_cov, "valid_from": rule.valid_from,
            "valid_until": rule.valid_until,
        })
    return pd.DataFrame.from_records(records, columns=BILLING_COLUMNS)


def period_counts(days: Days) -> dict[str, int]:
    """combine_days()'s samples, resets, covered_us and length_us of the days (one series).

    All a billing row reads of them: its other figures (extremes, sums) cost more per rule.
    """
    return {"samples": int(np.asarray(days["samples"]).sum()),
            "resets": int(np.asarray(days["resets"]).sum()),
            "covered_us": int(np.asarray(days["covered_us"]).sum()),
            "length_us": int(np.asarray(days["day_end_us"])[-1]
                             - np.asarray(days["day_start_us"])[0])}


def elapsed_coverage(days: Days, now_us: int, elapsed_us: int) -> float:
    """coverage_pct of the part of a period before `now_us` (its day rows in date order).

    A day's coverage is counted up to `now_us` at most: a reading's window reaching past now
    is not yet observation of what is ahead.
    """
    if not elapsed_us or not len(days):
        return 0.0
    covered = 0
    for start, end, cov in zip(days["day_start_us"].tolist(), days["day_end_us"].tolist(),
                               days["covered_us"].tolist(), strict=True):
        if start >= now_us:
            break
        covered += min(int(cov), now_us - int(start)) if end > now_us else int(cov)
    return coverage_pct(min(covered, elapsed_us), elapsed_us)


def in_progress(row: Mapping[str, object]) -> bool:
    """Whether a billing_table() row is of a period in progress (it has an elapsed share)."""
    elapsed = row["elapsed_pct"]
    return elapsed is not None and not pd.isna(elapsed)


def table_charges(table: pd.DataFrame, priced: Sequence[RulePeriod]) -> list[PeriodCharge]:
    """billing_table() rows as PeriodCharges (their `amount`: the period so far if in progress)."""
    return [PeriodCharge(rp.rule.source, rp.rule.metric, rp.rule.currency, rp.label,
                         rp.period.start, rp.index, amount)
            for rp, amount in zip(priced, table["amount"], strict=True)]


def with_credits(table: pd.DataFrame, draws: Sequence[CreditDraw]) -> pd.DataFrame:
    """`table` with `credit_applied` and `amount_due` from the draws of its rows (SPEC 11)."""
    out = table.copy()
    applied = [round_money(d.applied, cur) for d, cur in zip(draws, out["currency"], strict=True)]
    out["credit_applied"] = applied
    out["amount_due"] = [amount_due(a, c) for a, c in zip(out["amount"], applied, strict=True)]
    return out
