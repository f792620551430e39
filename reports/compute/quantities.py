"""A billing rule's quantity from a month's day rows and samples, by aggregation (SPEC 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

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
    n = len(days)

    def column(name: str) -> list[Any]:
        # Only the columns the aggregation reads, as Python values: a month of 200 rules'
        # day rows, where a record per row cost more than the arithmetic. A column the
        # aggregation does not need may be absent.
        return days[name].tolist() if name in days else [None] * n

    begun = ([True] * n if now_us is None
             else [int(start) < now_us for start in column("day_start_us")])
    if aggregation in (Aggregation.INCREASE, Aggregation.SUM):
        # An interval series' day `increase` is its apportioned bucket sum (SPEC 10).
        return _running_sums(begun, column("increase"))
    if aggregation is Aggregation.PEAK:
        return _running_peaks(begun, column("samples"), column("max"))
    if aggregation is Aggregation.LAST:
        return _last_readings(begun, column("samples"), column("last_value"))
    if aggregation in (Aggregation.TWA, Aggregation.UNIT_HOURS):
        return _time_weighted(begun, column("twa_num"), column("covered_us"),
                              hours=aggregation is Aggregation.UNIT_HOURS)
    if aggregation is Aggregation.P95:  # of the samples up to each day's end
        return _running_p95(begun, column("day_end_us"), sample_t, sample_value)
    return [None] * n


def _running_sums(begun: list[bool], increases: list[Any]) -> list[Decimal | None]:
    out: list[Decimal | None] = []
    total: Decimal | None = None
    for ok, increase in zip(begun, increases, strict=True):
        if ok:
            total = (total or Decimal(0)) + to_decimal(increase)
        out.append(total if ok else None)
    return out


def _running_peaks(begun: list[bool], samples: list[Any], maxima: list[Any]
                   ) -> list[Decimal | None]:
    out: list[Decimal | None] = []
    total: Decimal | None = None
    top: Any = None  # the float `total` was made from (None: not made from a float)
    for ok, count, most in zip(begun, samples, maxima, strict=True):
        if ok and int(count):
            if top is not None and most.__class__ is float and most == most:
                # Floats (not NaN) order as the decimals of their shortest reprs: a Decimal
                # only for a new peak, not for each day.
                if most > top:
                    top, total = most, to_decimal(most)
            else:
                value = to_decimal(most)
                if total is None or value > total:
                    total = value
                    top = most if most.__class__ is float and most == most else None
        out.append(total if ok else None)
    return out


def _last_readings(begun: list[bool], samples: list[Any], lasts: list[Any]
                   ) -> list[Decimal | None]:
    out: list[Decimal | None] = []
    last: Any = None
    for ok, count, value in zip(begun, samples, lasts, strict=True):
        if ok and int(count):
            last = value
        out.append(None if not ok or last is None else to_decimal(last))
    return out


def _time_weighted(begun: list[bool], nums: list[Any], covers: list[Any], *, hours: bool
                   ) -> list[Decimal | None]:
    out: list[Decimal | None] = []
    total: Decimal | None = None
    twa_num = 0.0
    covered = 0
    for ok, num, cov in zip(begun, nums, covers, strict=True):
        if ok:
            twa_num += float(num)
            covered += int(cov)
            if covered:
                with localcontext(PRICING_CONTEXT):  # exact enough that half-up is not fooled
                    integral = to_decimal(twa_num)  # value x seconds
                    total = (integral / SECONDS_PER_HOUR if hours
                             else integral * US_PER_SECOND / covered)
        out.append(total if ok else None)
    return out


def _running_p95(begun: list[bool], ends: list[Any], sample_t: np.ndarray | None,
                 sample_value: np.ndarray | None) -> list[Decimal | None]:
    t = np.asarray(sample_t if sample_t is not None else [], dtype=np.int64)
    v = np.asarray(sample_value if sample_value is not None else [], dtype=np.float64)
    out: list[Decimal | None] = []
    total: Decimal | None = None
    for ok, end in zip(begun, ends, strict=True):
        if ok:
            p = nearest_rank_p95(v[:int(np.searchsorted(t, int(end), side="left"))])
            total = None if p is None else to_decimal(p)
        out.append(total if ok else None)
    return out


def month_quantity(cumulative: Sequence[Decimal | None]) -> Decimal:
    """The month's quantity, rounded (SPEC 5): the last cumulative figure, 0 when none."""
    return round_quantity(next((c for c in reversed(cumulative) if c is not None), Decimal(0)))
