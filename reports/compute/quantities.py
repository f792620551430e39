"""A billing rule's quantity from a month's day rows and samples, by aggregation (SPEC 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from etl.config import Aggregation
from reports.compute.pricing import PRICING_CONTEXT, plain

US_PER_SECOND = 1_000_000
SECONDS_PER_HOUR = 3600
QUANTITY_STEP = Decimal("0.0001")
# Aggregations that add up over the month (extrapolated by a projection); the others are a
# level (a peak, a percentile, an average, a last reading) that the month so far projects as is.
ACCUMULATING = frozenset({Aggregation.INCREASE, Aggregation.UNIT_HOURS, Aggregation.SUM})
# Aggregations the stored day rollups cannot give: they need the month's sample values.
FROM_SAMPLES = frozenset({Aggregation.P95})


def to_decimal(x: Any) -> Decimal:
    """An exact Decimal for an int, a float (its shortest repr) or a Decimal."""
    # The two classes day rows hold first: a month of 200 rules reads 6,000 figures.
    if x.__class__ is float:
        return Decimal(repr(x))
    if x.__class__ is int:
        return Decimal(x)
    if isinstance(x, Decimal):
        return x
    if isinstance(x, int | np.integer):
        return Decimal(int(x))
    return Decimal(repr(float(x)))


def round_quantity(q: Decimal) -> Decimal:
    """A quantity as priced and printed: half-up to 4 places, no trailing zeros (SPEC 5)."""
    # The context passed, not entered: the same figures, without a context switch per call.
    return plain(q.quantize(QUANTITY_STEP, rounding=ROUND_HALF_UP, context=PRICING_CONTEXT))


def nearest_rank_p95(values: np.ndarray) -> float | None:
    """The value at 1-based rank ⌈0.95 × n⌉ of the sorted values (None when there are none)."""
    n = len(values)
    if n == 0:
        return None
    rank = -(-95 * n // 100)  # exact ⌈0.95 n⌉ in integers: 0.95 * 20 is 19.000000000000004
    return float(np.partition(np.asarray(values, dtype=np.float64), rank - 1)[rank - 1])


class _Day(NamedTuple):
    """The day-row figures a quantity reads (columns of daily.DAY_COLUMNS)."""

    day_start_us: int
    day_end_us: int
    samples: int
    increase: Any
    max: float
    last_value: float
    twa_num: float
    covered_us: int


def _day_rows(days: pd.DataFrame | Mapping[str, np.ndarray]) -> list[_Day]:
    # Whole columns as Python values, then zipped: a month of day rows per series, and
    # pandas' own row iteration costs more than the arithmetic (2 ms a series). A column the
    # aggregation does not read may be absent.
    n = len(days)
    columns = (days[name].tolist() if name in days else [None] * n for name in _Day._fields)
    return list(map(_Day._make, zip(*columns, strict=True)))


def cumulative_quantities(days: pd.DataFrame | Mapping[str, np.ndarray], aggregation: Aggregation, *,
                          sample_t: np.ndarray | None = None,
                          sample_value: np.ndarray | None = None,
                          now_us: int | None = None) -> list[Decimal | None]:
    """Per day row: the month's quantity up to the end of that day, not yet rounded.

    `days` are aggregate_days() rows of one series in date order (a DataFrame, or columns:
    dayrows.DayRows). p95 also needs the month's
    samples (`sample_t` in epoch microseconds, `sample_value`). None before any sample (and,
    with `now_us`, for days that have not begun). twa: time-weighted average over the covered
    time so far; unit_hours: its integral in value × hours (each sample holds until the next
    one or until it goes stale, as the daily `twa` column).
    """
    aggregation = Aggregation(aggregation)  # a plain "peak" works too
    out: list[Decimal | None] = []
    total: Decimal | None = None
    twa_num = 0.0
    covered = 0
    last: Any = None
    t = np.asarray(sample_t if sample_t is not None else [], dtype=np.int64)
    v = np.asarray(sample_value if sample_value is not None else [], dtype=np.float64)
    for row in _day_rows(days):
        start = int(row.day_start_us)
        if now_us is not None and start >= now_us:
            out.append(None)
            continue
        samples = int(row.samples)
        if aggregation in (Aggregation.INCREASE, Aggregation.SUM):
            # An interval series' day `increase` is its apportioned bucket sum (SPEC 10).
            total = (total or Decimal(0)) + to_decimal(row.increase)
        elif aggregation is Aggregation.PEAK:
            if samples:
                value = to_decimal(row.max)
                total = value if total is None or value > total else total
        elif aggregation is Aggregation.LAST:
            if samples:
                last = row.last_value
            total = None if last is None else to_decimal(last)
        elif aggregation in (Aggregation.TWA, Aggregation.UNIT_HOURS):
            twa_num += float(row.twa_num)
            covered += int(row.covered_us)
            if covered:
                with localcontext(PRICING_CONTEXT):  # exact enough that half-up is not fooled
                    integral = to_decimal(twa_num)  # value x seconds
                    total = (integral * US_PER_SECOND / covered
                             if aggregation is Aggregation.TWA else integral / SECONDS_PER_HOUR)
        elif aggregation is Aggregation.P95:  # of the samples up to this day's end
            upto = int(np.searchsorted(t, int(row.day_end_us), side="left"))
            p = nearest_rank_p95(v[:upto])
            total = None if p is None else to_decimal(p)
        out.append(total)
    return out


def month_quantity(cumulative: Sequence[Decimal | None]) -> Decimal:
    """The month's quantity, rounded (SPEC 5): the last cumulative figure, 0 when none."""
    return round_quantity(next((c for c in reversed(cumulative) if c is not None), Decimal(0)))
