"""Pure report arithmetic on numpy arrays and DataFrames (SPEC section 5); no I/O here.

The unit of work is `aggregate_days`: one row per (series, local day) holding everything
the daily report needs and everything a month needs (sums, extremes, counts, covered
time, last values), so monthly figures are derived from the day rows alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd

US_PER_SECOND = 1_000_000
WARNING_PCT = 75.0
CRITICAL_PCT = 90.0
# Counter readings up to this size are summed as exact int64 (float64 holds them exactly).
_EXACT_INT_LIMIT = 2.0**53

# Columns of an aggregate_days() row, in order.
DAY_COLUMNS = [
    "day_start_us", "day_end_us", "samples", "min", "max", "sum", "last_limit", "peak_pct",
    "increase", "resets", "covered_us", "twa_num", "warning_us", "critical_us",
    "first_at_us", "first_value", "last_at_us", "last_value",
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


def counter_increments(value: np.ndarray, prev_value: float | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: what it adds to the counter's increase, and whether it was a reset.

    `v_i - v_{i-1}` when the counter did not go down, else `v_i` (a reset); the first sample
    of a series (no `prev_value`) adds 0. Integral readings stay exact int64.
    """
    exact = bool(
        len(value) == 0
        or (np.all(np.isfinite(value)) and np.all(value == np.rint(value))
            and np.all(np.abs(value) < _EXACT_INT_LIMIT))
    ) and (prev_value is None or (float(prev_value).is_integer()
                                  and abs(prev_value) < _EXACT_INT_LIMIT))
    v = value.astype(np.int64) if exact else value.astype(np.float64)
    if len(v) == 0:
        return v, np.zeros(0, dtype=bool)
    before = np.empty_like(v)
    before[1:] = v[:-1]
    before[0] = (int(prev_value) if exact else prev_value) if prev_value is not None else v[0]
    reset = v < before
    inc = np.where(reset, v, v - before)
    return inc, reset


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


def aggregate_days(t: np.ndarray, value: np.ndarray, limit: np.ndarray | None,
                   bounds: np.ndarray, *, metric_type: str, staleness_us: int,
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

    if metric_type == "counter":
        inc, reset = counter_increments(value, prev_value)
        cs = np.concatenate((np.zeros(1, dtype=inc.dtype), np.cumsum(inc)))
        out["increase"] = cs[pos[1:]] - cs[pos[:-1]]
        rs = np.concatenate(([0], np.cumsum(reset.astype(np.int64))))
        out["resets"] = rs[pos[1:]] - rs[pos[:-1]]
    else:
        out["increase"] = np.zeros(ndays, dtype=np.int64)
        out["resets"] = np.zeros(ndays, dtype=np.int64)

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

    fi = np.where(nonempty, first_idx, 0)
    li = np.where(nonempty, last_idx, 0)
    if len(t):
        out["first_at_us"] = np.where(nonempty, t[fi], -1)
        out["last_at_us"] = np.where(nonempty, t[li], -1)
        out["first_value"] = np.where(nonempty, value[fi], np.nan)
        out["last_value"] = np.where(nonempty, value[li], np.nan)
    else:
        out["first_at_us"] = np.full(ndays, -1, dtype=np.int64)
        out["last_at_us"] = np.full(ndays, -1, dtype=np.int64)
        out["first_value"] = nan.copy()
        out["last_value"] = nan.copy()
    return pd.DataFrame(out, columns=DAY_COLUMNS)


def combine_days(days: pd.DataFrame) -> dict[str, Any]:
    """The figures of a longer period from its consecutive day rows (one series)."""
    n = len(days)
    samples = int(days["samples"].sum()) if n else 0
    with_samples = days[days["samples"] > 0]
    lims = days["last_limit"].dropna()
    length_us = int(days["day_end_us"].iloc[-1] - days["day_start_us"].iloc[0]) if n else 0
    covered = int(days["covered_us"].sum()) if n else 0
    return {
        "period_start_us": int(days["day_start_us"].iloc[0]) if n else 0,
        "period_end_us": int(days["day_end_us"].iloc[-1]) if n else 0,
        "samples": samples,
        "min": float(with_samples["min"].min()) if len(with_samples) else np.nan,
        "max": float(with_samples["max"].max()) if len(with_samples) else np.nan,
        "sum": float(with_samples["sum"].sum()) if len(with_samples) else np.nan,
        "last_limit": float(lims.iloc[-1]) if len(lims) else np.nan,
        "peak_pct": float(days["peak_pct"].max()) if days["peak_pct"].notna().any() else np.nan,
        "increase": _exact_sum(days["increase"]),
        "resets": int(days["resets"].sum()) if n else 0,
        "covered_us": covered,
        "length_us": length_us,
        "twa_num": float(days["twa_num"].sum()) if n else 0.0,
        "warning_us": int(days["warning_us"].sum()) if n else 0,
        "critical_us": int(days["critical_us"].sum()) if n else 0,
    }


def _exact_sum(col: pd.Series) -> int | float:
    # int64 sums stay exact; only non-integral counters are summed as floats.
    if col.dtype.kind in "iu":
        return int(col.sum())
    return float(col.sum())


def coverage_pct(covered_us: int, length_us: int) -> float:
    """Share of the period inside the sample windows, x100, rounded half-up to 2 places."""
    if length_us <= 0:
        return 0.0
    pct = Decimal(int(covered_us) * 100) / Decimal(int(length_us))
    return float(pct.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def day_report_values(row: Mapping[str, Any], metric_type: str) -> dict[str, Any]:
    """The daily report's figures (SPEC 6 columns + extras) from one aggregate row."""
    r = row
    samples = int(r["samples"])
    covered = int(r["covered_us"])
    length = int(r["day_end_us"]) - int(r["day_start_us"])
    is_counter = metric_type == "counter"
    has_lim = samples > 0 and not pd.isna(r["last_limit"])
    out: dict[str, Any] = {
        "samples": samples,
        "min": _num(r["min"]) if samples else None,
        "max": _num(r["max"]) if samples else None,
        "mean": _num(float(r["sum"]) / samples) if samples else None,
        "limit": _num(r["last_limit"]) if has_lim else None,
        "peak_pct": round(float(r["peak_pct"]), 2)
        if samples and not pd.isna(r["peak_pct"]) else None,
        "increase": _int_or_float(r["increase"]) if is_counter else None,
        "resets": int(r["resets"]) if is_counter else None,
        "coverage_pct": coverage_pct(covered, length),
        "twa": (_num(float(r["twa_num"]) * US_PER_SECOND / covered)
                if not is_counter and covered > 0 else None),
        "warning_minutes": (_minutes(r["warning_us"]) if not is_counter else None),
        "critical_minutes": (_minutes(r["critical_us"]) if not is_counter else None),
    }
    return out


def _num(x: Any) -> int | float | None:
    """A plain number: integral values as int so they print without '.0'."""
    if x is None or pd.isna(x):
        return None
    f = float(x)
    if f.is_integer() and abs(f) < _EXACT_INT_LIMIT:
        return int(f)
    return f


def _int_or_float(x: Any) -> int | float:
    if isinstance(x, int | np.integer):
        return int(x)
    f = float(x)
    return int(f) if f.is_integer() else f


def _minutes(us: Any) -> float:
    return round(int(us) / (60 * US_PER_SECOND), 2)


def period_report_values(totals: Mapping[str, Any], metric_type: str) -> dict[str, Any]:
    """The same figures as `day_report_values` for a combined period (from combine_days)."""
    row = dict(totals)
    row["day_start_us"] = totals["period_start_us"]
    row["day_end_us"] = totals["period_end_us"]
    return day_report_values(row, metric_type)
