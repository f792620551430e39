"""Monthly billing per `[[billing]]` rule (SPEC 5): exact quantities, money in Decimal."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd

from etl.config import BillingRule
from etl.store.models import to_micros
from reports.compute.daily import combine_days, coverage_pct
from reports.periods import Period, us_to_datetime

CENT = Decimal("0.01")
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
    "unit_price", "amount", "currency", "coverage_pct",
    # extras
    "samples", "resets", "mtd_quantity", "mtd_amount", "projected_quantity",
    "projected_amount", "included_used_up_on", "used_up_projected",
]


def to_decimal(x: Any) -> Decimal:
    """An exact Decimal for an int, a float (its shortest repr) or a Decimal."""
    if isinstance(x, Decimal):
        d = x
    elif isinstance(x, int | np.integer):
        return Decimal(int(x))
    else:
        d = Decimal(repr(float(x)))
    return plain(d)


def plain(d: Decimal) -> Decimal:
    """The same value without trailing zeros: sums of 100.5 and 99.5 print as 200, not 200.0."""
    if d == d.to_integral_value():
        return Decimal(int(d))
    # normalize() alone would give 2E+2 for an integral value; fractions print plainly.
    return d.normalize()


def money(x: Decimal) -> Decimal:
    """Rounded half-up to cents."""
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def charge(quantity: Decimal, rule: BillingRule) -> tuple[Decimal, Decimal]:
    """(overage, amount) for a quantity under the rule."""
    overage = plain(max(Decimal(0), quantity - rule.included))
    return overage, money(overage * rule.unit_price)


def rule_days(rows: pd.DataFrame, rule: BillingRule) -> pd.DataFrame:
    """The rule's series' day rows, in date order."""
    sel = rows[(rows["source"] == rule.source) & (rows["metric"] == rule.metric)]
    return sel.sort_values("date").reset_index(drop=True)


def days_by_series(rows: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """rule_days() for every (source, metric) at once: one groupby, not a scan per rule."""
    if not len(rows):
        return {}
    return {(str(key[0]), str(key[1])): g.sort_values("date").reset_index(drop=True)
            for key, g in rows.groupby(["source", "metric"], sort=False)}


def cumulative_quantity(days: pd.DataFrame, aggregation: str,
                        now_us: int | None = None) -> list[Decimal | None]:
    """Per day: the month's quantity up to and including that day.

    None before any sample and, when `now_us` is given, for days that have not begun yet
    (so a chart of a month in progress stops at today instead of running flat to its end).
    """
    out: list[Decimal | None] = []
    total: Decimal | None = None
    for start, inc, mx, n in zip(days["day_start_us"], days["increase"], days["max"],
                                 days["samples"], strict=True):
        if now_us is not None and start >= now_us:
            out.append(None)
            continue
        if aggregation == "increase":
            total = (total or Decimal(0)) + to_decimal(inc)
        elif n > 0:
            value = to_decimal(mx)
            total = value if total is None or value > total else total
        out.append(None if total is None else plain(total))
    return out


@exact_decimals
def billing_table(rows: pd.DataFrame, rules: Sequence[BillingRule], period: Period,
                  *, now: datetime) -> pd.DataFrame:
    """One row per rule for the month `period`, from series_day_rows() rows (pure).

    `now` decides whether the month is in progress: then the month-to-date figures stop
    at today and a projection to month end is added.
    """
    month = period.start.strftime("%Y-%m")
    now_us = to_micros(now)
    in_progress = period.start_us <= now_us < period.end_us
    records = []
    grouped = days_by_series(rows)
    for rule in rules:
        days = grouped.get((rule.source, rule.metric))
        if days is None:
            days = rule_days(rows, rule)
        totals = combine_days(days) if len(days) else None
        samples = int(totals["samples"]) if totals else 0
        cum = cumulative_quantity(days, rule.aggregation) if len(days) else []
        quantity = next((c for c in reversed(cum) if c is not None), Decimal(0))
        overage, amount = charge(quantity, rule)
        cov = (coverage_pct(int(totals["covered_us"]), int(totals["length_us"]))
               if totals else 0.0)

        # Month to date: days that started by now (all days once the month is over).
        started = [d for d, s in zip(period.days, period.bounds[:-1], strict=True)
                   if s <= now_us]
        mtd_cum = [c for c in cum[:len(started)] if c is not None]
        mtd_q = mtd_cum[-1] if mtd_cum else Decimal(0)
        mtd_amount = charge(mtd_q, rule)[1]

        projected_q: Decimal | None = None
        projected_amount: Decimal | None = None
        used_up: date | None = None
        used_up_projected = False
        for d, c in zip(period.days, cum, strict=False):
            if c is not None and c >= rule.included and c > 0:
                used_up = d
                break
        if in_progress:
            elapsed = now_us - period.start_us
            length = period.end_us - period.start_us
            if rule.aggregation == "increase":
                # Linear run rate of the month so far; a plan cycle reset would show as one.
                projected_q = (mtd_q * length / elapsed).quantize(
                    Decimal(1), rounding=ROUND_HALF_UP) if elapsed > 0 else mtd_q
                if used_up is None and mtd_q > 0 and rule.included > mtd_q:
                    at_us = period.start_us + int(elapsed * rule.included / mtd_q)
                    if at_us < period.end_us:
                        used_up = us_to_datetime(at_us, period.tz).date()
                        used_up_projected = True
            else:
                # A peak cannot be extrapolated: the highest value so far is the projection.
                projected_q = mtd_q
            projected_amount = charge(projected_q, rule)[1]
        records.append({
            "month": month, "source": rule.source, "metric": rule.metric,
            "aggregation": rule.aggregation, "quantity": quantity, "included": rule.included,
            "overage": overage, "unit_price": rule.unit_price, "amount": amount,
            "currency": rule.currency, "coverage_pct": cov, "samples": samples,
            "resets": int(totals["resets"]) if totals else 0,
            "mtd_quantity": mtd_q, "mtd_amount": mtd_amount,
            "projected_quantity": projected_q, "projected_amount": projected_amount,
            "included_used_up_on": used_up, "used_up_projected": used_up_projected,
        })
    return pd.DataFrame.from_records(records, columns=BILLING_COLUMNS)

