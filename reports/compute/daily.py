"""Pure report arithmetic on numpy arrays and DataFrames (SPEC section 5); no I/O here.

The unit of work is `aggregate_days`: one row per (series, local day) holding everything
the daily report needs and everything a month needs (sums, extremes, counts, covered
time, last values), so monthly figures are derived from the day rows alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, assert_never

import numpy as np
import pandas as pd

from etl.textutil import round_readable
from etl.vendors.types import MetricType
from reports.compute.dayrows import float_column

US_PER_SECOND = 1_000_000
WARNING_PCT = 75.0
CRITICAL_PCT = 90.0
# Counter readings up to this size are summed as exact int64 (float64 holds them exactly).
_EXACT_INT_LIMIT = 2.0**53
# Quantities (an interval series' apportioned sum) are printed half-up to 4 places (SPEC 10).
QUANTITY_STEP = Decimal("0.0001")

# Columns of an aggregate_days() row, in order.
DAY_COLUMNS = [
    "day_start_us", "day_end_us", "samples", "min", "max", "sum", "last_limit", "peak_pct",
    "increase", "resets", "covered_us", "twa_num", "warning_us", "critical_us",
    "first_at_us", "first_value", "last_at_us", "last_value",
]
# Columns of the daily report (SPEC 6, then extras), in order.
DAILY_COLUMNS = [
    "date", "source", "metric", "samples", "min", "max", "mean", "limit", "peak_pct",
    "increase", "resets", "coverage_pct", "provisional",
    # extras
    "metric_type", "twa", "warning_minutes", "critical_minutes",
]


def prepare_samples(t: np.ndarray, value: np.ndarray, limit: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort by time and keep the first of equal timestamps (the stored one wins, SPEC 4)."""
    t = np.asarray(t, dtype=np.int64)
    value = np.asarray(value, dtype=np.float64)
    lim = (np.full(len(t), np.nan) if limit is None
           else np.asarray(limit, dtype=np.float64))
    if len(t) > 1 and not (np.all(np.diff(t) > 0)):
        order = np.argsort(t, kind="stable")
        t, value, lim = t[order], value[order], lim[order]
        keep = np.concatenate(([True], np.diff(t) != 0))
        t, value, lim = t[keep], value[keep], lim[keep]
    return t, value, lim


# Most decimal places tried when reading fractional counter readings as exact decimals.
_MAX_DECIMALS = 9


def decimal_scale(value: np.ndarray, prev_value: float | None = None) -> int | None:
    """The smallest power of ten that turns every reading into an exact integer, or None.

    Vendors send decimal text: 1000000000.1 is stored as the nearest double, and differences
    of such doubles carry binary noise (0.19999992847442627, not 0.2). When every reading
    is the nearest double to k / 10**d with |k| < 2**53, the integers k are exact and so is
    every increment and sum of them; dividing once at the end rounds to the decimal's double.
    """
    v = np.asarray(value, dtype=np.float64)
    if prev_value is not None:
        p = float(prev_value)
        if not (math.isfinite(p) and p.is_integer() and abs(p) < _EXACT_INT_LIMIT):
            v = np.append(v, p)  # the rare case: checked with the readings below
    # Integral readings, the common case: one pass, no copies.
    if np.all(np.abs(v) < _EXACT_INT_LIMIT) and np.all(v == np.rint(v)):
        return 1
    if not np.all(np.isfinite(v)):
        return None
    # Most readings settle at a small d: only the ones that do not are tried further.
    rest = v
    for d in range(1, _MAX_DECIMALS + 1):
        scale = 10.0**d
        k = np.rint(rest * scale)
        rest = rest[(k / scale != rest) | (np.abs(k) >= _EXACT_INT_LIMIT)]
        if not len(rest):
            break
    else:
        return None
    # A reading exact at fewer places must stay exact at d (|k| near 2**53 may not).
    k = np.rint(v * 10.0**d)
    if np.any(np.abs(k) >= _EXACT_INT_LIMIT) or np.any(k / 10.0**d != v):
        return None
    # The integral prev_value skipped above is exact at any d whose k stay below 2**53.
    if prev_value is not None and abs(float(prev_value)) * 10.0**d >= _EXACT_INT_LIMIT:
        return None
    return 10**d


def needs_prev_value(metric_type: MetricType) -> bool:
    """Whether a series' figures need the reading just before the period (SPEC 5)."""
    match metric_type:
        case MetricType.COUNTER:
            return True  # the period's first increase is from the reading before it
        case MetricType.GAUGE | MetricType.INTERVAL:
            return False
        case _:
            assert_never(metric_type)


def counter_increments(value: np.ndarray, prev_value: float | None
                       ) -> tuple[np.ndarray, np.ndarray, int]:
    """Per sample: what it adds to the counter's increase, whether it was a reset, the scale.

    `v_i - v_{i-1}` when the counter did not go down, else `v_i` (a reset); the first sample
    of a series (no `prev_value`) adds 0. With a scale (see `decimal_scale`) the increments
    are exact int64 in units of 1/scale (scale 1: integral readings); otherwise they are
    float64 differences and the scale is 1.
    """
    scale = decimal_scale(value, prev_value)
    prev: float | None
    if scale == 1:
        v = np.asarray(value, dtype=np.float64).astype(np.int64)
        prev = prev_value
    elif scale is not None:
        v = np.rint(np.asarray(value, dtype=np.float64) * scale).astype(np.int64)
        prev = None if prev_value is None else float(np.rint(float(prev_value) * scale))
    else:
        v = np.asarray(value, dtype=np.float64)
        prev = prev_value
    if len(v) == 0:
        return v, np.zeros(0, dtype=bool), scale or 1
    before = np.empty_like(v)
    before[1:] = v[:-1]
    before[0] = prev if prev is not None else v[0]
    reset = v < before
    inc = np.where(reset, v, v - before)
    return inc, reset, scale or 1


def unscale(total: np.ndarray, scale: int) -> np.ndarray:
    """Exact scaled sums back in reading units: int64 when integral readings, else float64."""
    if scale == 1 or total.dtype.kind == "f":
        return total
    # One correctly rounded division: the double nearest to the exact decimal.
    return total / float(scale)


def _cum_weighted(a: np.ndarray, length: np.ndarray, weight: np.ndarray,
                  x: np.ndarray) -> np.ndarray:
    """Integral of a step function up to each x: interval i = [a_i, a_i+length_i) at weight_i.

    The intervals are disjoint and sorted, so this is a prefix sum plus the partial interval.
    """
    if len(a) == 0:
        return np.zeros(len(x), dtype=weight.dtype)
    full = weight * length
    cum = np.concatenate((np.zeros(1, dtype=full.dtype), np.cumsum(full)))
    k = np.searchsorted(a, x, side="right") - 1
    kk = np.clip(k, 0, len(a) - 1)
    part = np.clip(x - a[kk], 0, length[kk]) * weight[kk]
    out = cum[kk] + part
    return np.where(k >= 0, out, 0).astype(full.dtype)


def _day_increments(value: np.ndarray, prev_value: float | None, pos: np.ndarray,
                    starts: np.ndarray, nonempty: np.ndarray,
                    ndays: int) -> tuple[np.ndarray, np.ndarray]:
    """A counter's increase and resets per day (SPEC 5), summed exactly day by day."""
    inc, reset, scale = counter_increments(value, prev_value)
    if inc.dtype.kind == "i" and len(inc) and float(np.abs(inc).max()) * len(inc) >= 2.0**63:
        # So many large increments that an exact int64 sum could wrap around: float64
        # cannot wrap (it rounds instead, at figures no bill can use exactly anyway).
        inc, scale = inc / float(scale), 1
    # Each day's increments summed on their own: a difference of running float sums
    # would carry the rounding of every earlier day into this one.
    day_inc = np.zeros(ndays, dtype=inc.dtype)
    if len(starts):
        day_inc[nonempty] = np.add.reduceat(inc[pos[0]:pos[-1]], starts)
    rs = np.concatenate(([0], np.cumsum(reset.astype(np.int64))))
    return unscale(day_inc, scale), rs[pos[1:]] - rs[pos[:-1]]


def aggregate_days(t: np.ndarray, value: np.ndarray, limit: np.ndarray | None,
                   bounds: np.ndarray, *, metric_type: MetricType, staleness_us: int,
                   prev_value: float | None = None) -> pd.DataFrame:
    """One row per day [bounds[j], bounds[j+1]) of one series (columns: DAY_COLUMNS).

    The samples may start before bounds[0]: those only count for coverage (they cover
    `staleness_us` after them) and as predecessors of counter samples. `prev_value` is the
    counter reading just before the first given sample (None: the series starts here).
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    ndays = len(bounds) - 1
    t, value, lim = prepare_samples(t, value, limit)
    t, value, lim = t[t < bounds[-1]], value[t < bounds[-1]], lim[t < bounds[-1]]
    pos = np.searchsorted(t, bounds, side="left")
    counts = np.diff(pos)
    nonempty = counts > 0
    first_idx, last_idx = pos[:-1], pos[1:] - 1

    out: dict[str, np.ndarray] = {
        "day_start_us": bounds[:-1].copy(),
        "day_end_us": bounds[1:].copy(),
        "samples": counts.astype(np.int64),
    }
    nan = np.full(ndays, np.nan)
    vin = value[pos[0]:pos[-1]]
    starts = (pos[:-1] - pos[0])[nonempty]
    mins, maxs, sums, peaks = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(lim > 0, value / lim * 100.0, np.nan)
    if len(starts):
        mins[nonempty] = np.minimum.reduceat(vin, starts)
        maxs[nonempty] = np.maximum.reduceat(vin, starts)
        sums[nonempty] = np.add.reduceat(vin, starts)
        peaks[nonempty] = np.fmax.reduceat(pct[pos[0]:pos[-1]], starts)
    out.update(min=mins, max=maxs, sum=sums, peak_pct=peaks)

    # Last limit seen within the day: index of the latest sample with a limit so far.
    has_lim = ~np.isnan(lim)
    last_lim_idx = np.maximum.accumulate(np.where(has_lim, np.arange(len(lim)), -1)) \
        if len(lim) else np.zeros(0, dtype=np.int64)
    last_limit = nan.copy()
    if nonempty.any():
        k = last_lim_idx[last_idx[nonempty]]
        ok = k >= first_idx[nonempty]
        vals = np.where(ok, lim[np.maximum(k, 0)], np.nan)
        last_limit[nonempty] = vals
    out["last_limit"] = last_limit

    match metric_type:
        case MetricType.COUNTER:
            out["increase"], out["resets"] = _day_increments(value, prev_value, pos, starts,
                                                             nonempty, ndays)
        case MetricType.GAUGE:
            out["increase"] = np.zeros(ndays, dtype=np.int64)
            out["resets"] = np.zeros(ndays, dtype=np.int64)
        case MetricType.INTERVAL:
            # Buckets have ends and read ranges that samples lack (SPEC 10).
            raise ValueError("interval series are aggregated from their buckets, "
                             "not from samples")
        case _:
            assert_never(metric_type)

    # Each sample holds until the next one or until it goes stale: disjoint intervals whose
    # union is the union of the [t, t + staleness) windows.
    a = t
    if len(a):
        b = np.minimum(np.append(t[1:], np.iinfo(np.int64).max), t + staleness_us)
        length = b - a
    else:
        length = np.zeros(0, dtype=np.int64)
    one = np.ones(len(a), dtype=np.int64)
    out["covered_us"] = np.diff(_cum_weighted(a, length, one, bounds))
    out["twa_num"] = np.diff(_cum_weighted(a, length, value, bounds)) / US_PER_SECOND
    warn = np.nan_to_num(pct, nan=-1.0)
    out["warning_us"] = np.diff(_cum_weighted(a, length, (warn >= WARNING_PCT).astype(np.int64),
                                              bounds))
    out["critical_us"] = np.diff(_cum_weighted(a, length,
                                               (warn >= CRITICAL_PCT).astype(np.int64), bounds))

    out.update(first_last(t, value, nonempty, first_idx, last_idx))
    return pd.DataFrame(out, columns=DAY_COLUMNS)


def first_last(t: np.ndarray, value: np.ndarray, nonempty: np.ndarray, first_idx: np.ndarray,
               last_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each segment's first_at_us, last_at_us, first_value, last_value (-1 and NaN if empty).

    `first_idx`/`last_idx`: each segment's first and last sample in `t`/`value`.
    """
    n = len(nonempty)
    if not len(t):
        return {"first_at_us": np.full(n, -1, dtype=np.int64),
                "last_at_us": np.full(n, -1, dtype=np.int64),
                "first_value": np.full(n, np.nan), "last_value": np.full(n, np.nan)}
    fi = np.where(nonempty, first_idx, 0)
    li = np.where(nonempty, last_idx, 0)
    return {"first_at_us": np.where(nonempty, t[fi], -1),
            "last_at_us": np.where(nonempty, t[li], -1),
            "first_value": np.where(nonempty, value[fi], np.nan),
            "last_value": np.where(nonempty, value[li], np.nan)}


def combine_days(days: pd.DataFrame | Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The figures of a longer period from its consecutive day rows (one series).

    `days`: aggregate_days() rows as a DataFrame or as columns (dayrows.DayRows).
    """
    n = len(days)
    if n == 0:
        return {"period_start_us": 0, "period_end_us": 0, "samples": 0, "min": np.nan,
                "max": np.nan, "sum": np.nan, "last_limit": np.nan, "peak_pct": np.nan,
                "increase": _exact_sum(days["increase"]), "resets": 0, "covered_us": 0,
                "length_us": 0, "twa_num": 0.0, "warning_us": 0, "critical_us": 0}
    # Plain arrays, not pandas reductions: this runs once per series and period on a month
    # of rows, where pandas' per-call overhead was most of a warm billing report's time.
    col = {name: np.asarray(days[name]) for name in (
        "day_start_us", "day_end_us", "samples", "resets", "covered_us", "warning_us",
        "critical_us")}
    # Readings as floats, a missing one (None from a stored rollup) as NaN.
    col.update({name: float_column(days[name]) for name in (
        "min", "max", "sum", "last_limit", "peak_pct", "twa_num")})
    with_samples = col["samples"] > 0
    some = bool(with_samples.any())
    lims = col["last_limit"][~np.isnan(col["last_limit"])]
    return {
        "period_start_us": int(col["day_start_us"][0]),
        "period_end_us": int(col["day_end_us"][-1]),
        "samples": int(col["samples"].sum()),
        # NaN-skipping reductions, as pandas' min/max/sum over the days with samples.
        "min": float(np.fmin.reduce(col["min"][with_samples])) if some else np.nan,
        "max": float(np.fmax.reduce(col["max"][with_samples])) if some else np.nan,
        "sum": _nan_sum(col["sum"][with_samples]) if some else np.nan,
        "last_limit": float(lims[-1]) if len(lims) else np.nan,
        "peak_pct": float(np.fmax.reduce(col["peak_pct"])),
        "increase": _exact_sum(days["increase"]),
        "resets": int(col["resets"].sum()),
        "covered_us": int(col["covered_us"].sum()),
        "length_us": int(col["day_end_us"][-1] - col["day_start_us"][0]),
        "twa_num": _nan_sum(col["twa_num"]),
        "warning_us": int(col["warning_us"].sum()),
        "critical_us": int(col["critical_us"].sum()),
    }


def _nan_sum(values: np.ndarray) -> float:
    # pandas' sum(skipna=True): NaN as 0, then numpy's own summation (same order, same float).
    return float(np.where(np.isnan(values), 0.0, values).sum())


def _exact_sum(col: pd.Series | np.ndarray) -> int | float | Decimal:
    # Exact Decimals (interval series' apportioned sums) stay exact: rounded once, later.
    if isinstance(col, np.ndarray) and col.dtype.kind == "i":
        return sum(col.tolist())  # ints: their exact sum (as exact_total, without Decimals)
    total = exact_total(col)
    if total == total.to_integral_value():
        return int(total)
    return total if any(isinstance(x, Decimal) for x in col) else float(total)


def exact_total(values: Iterable[Any]) -> Decimal:
    """The exact decimal sum of day figures as printed (each float's shortest repr).

    This is the sum a spreadsheet gets from the daily CSV, and the billing quantity, so a
    month's increase is exactly the sum of its days. One term per day, not per sample.
    """
    total = Decimal(0)
    for x in values:
        if isinstance(x, int | np.integer):
            total += int(x)
        elif isinstance(x, Decimal):
            total += x
        elif not pd.isna(x):
            total += Decimal(repr(float(x)))
    return Decimal(int(total)) if total == total.to_integral_value() else total.normalize()


def coverage_pct(covered_us: int, length_us: int) -> float:
    """Share of the period inside the sample windows, x100, rounded half-up to 2 places."""
    if length_us <= 0:
        return 0.0
    pct = Decimal(int(covered_us) * 100) / Decimal(int(length_us))
    return float(pct.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def day_report_values(row: Mapping[str, Any], metric_type: MetricType) -> dict[str, Any]:
    """The daily report's figures (SPEC 6 columns + extras) from one aggregate row.

    Counters have an increase and resets; gauges a time-weighted average and minutes in the
    warning and critical bands (SPEC 5). The other type's columns are None.
    """
    r = row
    samples = int(r["samples"])
    covered = int(r["covered_us"])
    length = int(r["day_end_us"]) - int(r["day_start_us"])
    has_lim = samples > 0 and not pd.isna(r["last_limit"])
    out: dict[str, Any] = {
        "samples": samples,
        "min": _num(r["min"]) if samples else None,
        "max": _num(r["max"]) if samples else None,
        "mean": _num(float(r["sum"]) / samples) if samples else None,
        "limit": _num(r["last_limit"]) if has_lim else None,
        "peak_pct": round_readable(float(r["peak_pct"]))
        if samples and not pd.isna(r["peak_pct"]) else None,
        "increase": None, "resets": None,
        "coverage_pct": coverage_pct(covered, length),
        "twa": None, "warning_minutes": None, "critical_minutes": None,
    }
    match metric_type:
        case MetricType.COUNTER:
            out.update(increase=_int_or_float(r["increase"]), resets=int(r["resets"]))
        case MetricType.GAUGE:
            out.update(twa=_num(float(r["twa_num"]) * US_PER_SECOND / covered)
                       if covered > 0 else None,
                       warning_minutes=minutes_of(r["warning_us"]),
                       critical_minutes=minutes_of(r["critical_us"]))
        case MetricType.INTERVAL:
            # The buckets' use apportioned to the day (SPEC 10), exact until here; no
            # resets, no bands.
            out.update(increase=round4(r["increase"]))
        case _:
            assert_never(metric_type)
    return out


def _num(x: Any) -> int | float | None:
    """A plain number: integral values as int so they print without '.0'."""
    if x is None or pd.isna(x):
        return None
    f = float(x)
    if f.is_integer() and abs(f) < _EXACT_INT_LIMIT:
        return int(f)
    return f


def round4(x: Any) -> int | float:
    """A quantity half-up to 4 places (SPEC 10), as a plain int or float for the report.

    `x` an exact Decimal (an interval series' apportioned sum), an int or a float.
    """
    q = x if isinstance(x, Decimal) else Decimal(int(x)) if isinstance(
        x, int | np.integer) else Decimal(repr(float(x)))
    r = q.quantize(QUANTITY_STEP, rounding=ROUND_HALF_UP)
    return int(r) if r == r.to_integral_value() else float(r)


def _int_or_float(x: Any) -> int | float:
    if isinstance(x, int | np.integer):
        return int(x)
    f = float(x)
    return int(f) if f.is_integer() else f


def minutes_of(us: Any) -> float:
    """Microseconds as minutes, rounded to 2 places (Python's correctly rounded round)."""
    return round(int(us) / (60 * US_PER_SECOND), 2)


def period_report_values(totals: Mapping[str, Any], metric_type: MetricType) -> dict[str, Any]:
    """The same figures as `day_report_values` for a combined period (from combine_days)."""
    row = dict(totals)
    row["day_start_us"] = totals["period_start_us"]
    row["day_end_us"] = totals["period_end_us"]
    return day_report_values(row, metric_type)
