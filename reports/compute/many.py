"""Day rows of many series of one source at once (SPEC 5): `aggregate_days` without a loop.

A very wide vendor has 100,000 per-item series (issue 26): one numpy pass over all their
samples replaces 100,000 calls of `reports.compute.daily.aggregate_days`, with the same
figures to the last bit. The series are laid end to end on one virtual time line (series
`p` at offset `p * span`), so each (series, day) is one segment of one sorted array, and the
sums a series' own code would do in sequence are done in the same sequence (running sums
restart at each series). Series whose counter readings are not integral (decimal scales,
SPEC 5), whose increments could overflow int64, or batches whose time line would not fit in
int64, are computed by `aggregate_days` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, assert_never

import numpy as np

from etl.vendors.types import MetricType
from reports.compute.daily import (
    CRITICAL_PCT,
    DAY_COLUMNS,
    US_PER_SECOND,
    WARNING_PCT,
    aggregate_days,
    first_last,
)

_EXACT_INT_LIMIT = 2.0**53
_KEY_LIMIT = 2**62


def aggregate_days_many(pos: np.ndarray, t: np.ndarray, value: np.ndarray,
                        limit: np.ndarray | None, nseries: int, bounds: np.ndarray, *,
                        metric_type: MetricType, staleness_us: int,
                        prev_values: Sequence[float | None] | None = None
                        ) -> list[list[dict[str, Any]]]:
    """Per series 0..nseries-1: its day rows, exactly `aggregate_days(...).to_dict("records")`.

    `pos[i]` is the series of sample i (times `t` in epoch us, readings `value`, plan limits
    `limit`, NaN for none); the samples may come in any order. `bounds`: the days' instants
    (us). `prev_values[p]`: series p's counter reading before its first sample (None: none).
    Raises ValueError for interval series (they are aggregated from buckets).
    """
    if metric_type is MetricType.INTERVAL:
        raise ValueError("interval series are aggregated from their buckets, not from samples")
    bounds = np.asarray(bounds, dtype=np.int64)
    prevs: list[float | None] = list(prev_values) if prev_values is not None else [None] * nseries
    pos = np.asarray(pos, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    value = np.asarray(value, dtype=np.float64)
    lim = np.full(len(t), np.nan) if limit is None else np.asarray(limit, dtype=np.float64)
    # Series order, then time; the first of equal timestamps wins (as prepare_samples).
    # Reads come in that order already, distinct: checking costs far less than sorting.
    dpos, dt = np.diff(pos), np.diff(t)
    if not ((dpos > 0) | ((dpos == 0) & (dt > 0))).all():
        order = np.lexsort((t, pos))
        pos, t, value, lim = pos[order], t[order], value[order], lim[order]
        if len(t) > 1:
            keep = np.concatenate(([True], (np.diff(t) != 0) | (np.diff(pos) != 0)))
            pos, t, value, lim = pos[keep], t[keep], value[keep], lim[keep]
    inside = t < bounds[-1]
    if not inside.all():
        pos, t, value, lim = pos[inside], t[inside], value[inside], lim[inside]

    origin = int(min(int(t.min()) if len(t) else int(bounds[0]), int(bounds[0])))
    # Room for every sample's staleness window before the next series begins.
    span = int(bounds[-1]) - origin + int(staleness_us) + 1
    slow = np.zeros(nseries, dtype=bool)
    if span * max(nseries, 1) >= _KEY_LIMIT:
        slow[:] = True
        return _with_slow(slow, None, pos, t, value, lim, bounds, metric_type,
                          staleness_us, prevs)
    rows = _fast(pos, t, value, lim, nseries, bounds, origin, span, metric_type,
                 staleness_us, prevs, slow)
    return _with_slow(slow, rows, pos, t, value, lim, bounds, metric_type, staleness_us, prevs)


def _with_slow(slow: np.ndarray, rows: list[list[dict[str, Any]]] | None, pos: np.ndarray,
               t: np.ndarray, value: np.ndarray, lim: np.ndarray, bounds: np.ndarray,
               metric_type: MetricType, staleness_us: int, prevs: list[float | None]
               ) -> list[list[dict[str, Any]]]:
    """Fill in the series the fast path left to aggregate_days (its own exact arithmetic)."""
    out = rows if rows is not None else [[] for _ in range(len(slow))]
    if not slow.any():
        return out
    starts = np.searchsorted(pos, np.arange(len(slow) + 1), side="left")
    for p in np.flatnonzero(slow).tolist():
        a, b = int(starts[p]), int(starts[p + 1])
        out[p] = aggregate_days(t[a:b], value[a:b], lim[a:b], bounds, metric_type=metric_type,
                                staleness_us=staleness_us,
                                prev_value=prevs[p]).to_dict("records")
    return out


def _segmented_cumsum(x: np.ndarray, series_start: np.ndarray) -> np.ndarray:
    """Per element: the running sum of its series up to and including it, summed in order.

    Exactly `np.cumsum` of each series on its own (no carry from earlier series): series of
    like lengths go in one 2-D cumsum along rows, padded with zeros after their end.
    """
    out = np.empty_like(x)
    lengths = np.diff(series_start)
    if not len(x):
        return out
    some = np.flatnonzero(lengths > 0)
    if len(x) >= 64 * len(some):
        # Long series (a month of minute samples): one cumsum each costs less than padding.
        for p in some.tolist():
            a, b = int(series_start[p]), int(series_start[p + 1])
            np.cumsum(x[a:b], out=out[a:b])
        return out
    # Lengths grouped by powers of two: padding costs at most as much again.
    group = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    for g in np.unique(group[lengths > 0]).tolist():
        members = np.flatnonzero((group == g) & (lengths > 0))
        width = int(lengths[members].max())
        starts, lens = series_start[members], lengths[members]
        col = np.arange(width)
        valid = col[None, :] < lens[:, None]
        idx = np.where(valid, starts[:, None] + col[None, :], 0)
        block = np.where(valid, x[idx], np.zeros(1, dtype=x.dtype))
        sums = np.cumsum(block, axis=1)
        out[idx[valid]] = sums[valid]
    return out


def _fast(pos: np.ndarray, t: np.ndarray, value: np.ndarray, lim: np.ndarray, nseries: int,
          bounds: np.ndarray, origin: int, span: int, metric_type: MetricType,
          staleness_us: int, prevs: list[float | None], slow: np.ndarray
          ) -> list[list[dict[str, Any]]]:
    ndays = len(bounds) - 1
    nb = ndays + 1
    key = pos * span + (t - origin)
    # Each series' bounds on the virtual line; between two series a gap segment holds the
    # next series' samples before the period (coverage and counter predecessors only).
    vb = (np.arange(nseries, dtype=np.int64)[:, None] * span
          + (bounds - origin)[None, :]).ravel()
    at = np.searchsorted(key, vb, side="left")
    series_start = np.searchsorted(pos, np.arange(nseries + 1), side="left")
    counts = np.diff(at)  # segment s = p * nb + j: day j of series p (j == ndays: a gap)
    nseg = len(counts)
    real = (np.arange(nseg) % nb) != ndays
    nonempty = counts > 0
    seg_first = at[:-1]
    seg_last = at[1:] - 1
    starts = seg_first[nonempty]

    nan = np.full(nseg, np.nan)
    mins, maxs, sums, peaks = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(lim > 0, value / lim * 100.0, np.nan)
    if len(starts):
        lo = int(starts[0])
        mins[nonempty] = np.minimum.reduceat(value[lo:], starts - lo)
        maxs[nonempty] = np.maximum.reduceat(value[lo:], starts - lo)
        sums[nonempty] = np.add.reduceat(value[lo:], starts - lo)
        peaks[nonempty] = np.fmax.reduceat(pct[lo:], starts - lo)

    has_lim = ~np.isnan(lim)
    last_lim_idx = (np.maximum.accumulate(np.where(has_lim, np.arange(len(lim)), -1))
                    if len(lim) else np.zeros(0, dtype=np.int64))
    last_limit = nan.copy()
    if nonempty.any():
        k = last_lim_idx[seg_last[nonempty]]
        ok = k >= seg_first[nonempty]
        last_limit[nonempty] = np.where(ok, lim[np.maximum(k, 0)], np.nan)

    cols: dict[str, np.ndarray] = {
        "day_start_us": np.tile(bounds[:-1], nseries),
        "day_end_us": np.tile(bounds[1:], nseries),
        "samples": counts[real].astype(np.int64),
        "min": mins[real], "max": maxs[real], "sum": sums[real], "last_limit": last_limit[real],
        "peak_pct": peaks[real],
    }
    match metric_type:
        case MetricType.COUNTER:
            inc, reset = _counter_increments(pos, value, series_start, nseries, prevs, slow)
            day_inc = np.zeros(nseg, dtype=np.int64)
            if len(starts):
                day_inc[nonempty] = np.add.reduceat(inc[lo:], starts - lo)
            rs = np.concatenate(([0], np.cumsum(reset.astype(np.int64))))
            cols["increase"] = day_inc[real]
            cols["resets"] = (rs[at[1:]] - rs[at[:-1]])[real]
        case MetricType.GAUGE:
            cols["increase"] = np.zeros(nseries * ndays, dtype=np.int64)
            cols["resets"] = np.zeros(nseries * ndays, dtype=np.int64)
        case MetricType.INTERVAL:  # refused by the caller
            raise ValueError("interval series are aggregated from their buckets")
        case _:
            assert_never(metric_type)

    # Each sample holds until the series' next one or until it goes stale (as aggregate_days).
    if len(key):
        nxt = np.append(key[1:], np.iinfo(np.int64).max)
        last_of_series = np.append(pos[1:] != pos[:-1], True)
        nxt[last_of_series] = np.iinfo(np.int64).max
        length = np.minimum(nxt, key + staleness_us) - key
    else:
        length = np.zeros(0, dtype=np.int64)
    warn = np.nan_to_num(pct, nan=-1.0)
    one = np.ones(len(key), dtype=np.int64)
    for name, weight in (("covered_us", one), ("twa_num", value),
                         ("warning_us", (warn >= WARNING_PCT).astype(np.int64)),
                         ("critical_us", (warn >= CRITICAL_PCT).astype(np.int64))):
        f = _cum_weighted_many(key, length, weight, vb, series_start).reshape(nseries, nb)
        d = np.diff(f, axis=1)[:, :ndays].ravel()
        cols[name] = d / US_PER_SECOND if name == "twa_num" else d

    cols.update(first_last(t, value, nonempty[real], seg_first[real], seg_last[real]))
    return _records(cols, nseries, ndays, slow)


def _counter_increments(pos: np.ndarray, value: np.ndarray, series_start: np.ndarray,
                        nseries: int, prevs: list[float | None], slow: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """reports.compute.daily.counter_increments of every series with integral readings.

    Others (a decimal scale, a fractional or huge reading before the period, increments
    whose exact sum could wrap) are marked in `slow`; their entries here are unused.
    """
    integral = (np.abs(value) < _EXACT_INT_LIMIT) & (value == np.rint(value))
    bad = np.bincount(pos, weights=~integral, minlength=nseries)
    prev_arr = np.zeros(nseries)
    has_prev = np.zeros(nseries, dtype=bool)
    for p, prev in enumerate(prevs):
        if prev is None:
            continue
        pv = float(prev)
        if not (np.isfinite(pv) and pv.is_integer() and abs(pv) < _EXACT_INT_LIMIT):
            slow[p] = True
        else:
            prev_arr[p], has_prev[p] = pv, True
    slow |= bad > 0
    v = np.where(integral, value, 0.0).astype(np.int64)
    if not len(v):
        return v, np.zeros(0, dtype=bool)
    before = np.empty_like(v)
    before[1:] = v[:-1]
    firsts = series_start[:-1][np.diff(series_start) > 0]
    fp = pos[firsts]
    before[firsts] = np.where(has_prev[fp], prev_arr[fp].astype(np.int64), v[firsts])
    reset = v < before
    inc = np.where(reset, v, v - before)
    # As aggregate_days: so many large increments that an exact int64 sum could wrap.
    sizes = np.diff(series_start)
    most = np.zeros(nseries)
    some = sizes > 0
    most[some] = np.maximum.reduceat(np.abs(inc).astype(np.float64), series_start[:-1][some])
    slow |= most * sizes >= 2.0**63
    return inc, reset


def _cum_weighted_many(a: np.ndarray, length: np.ndarray, weight: np.ndarray, x: np.ndarray,
                       series_start: np.ndarray) -> np.ndarray:
    """reports.compute.daily._cum_weighted of each series at its own bounds `x`.

    `x` holds nseries runs of bounds in order, each run inside its own series' stretch of
    the virtual line; running sums restart at every series.
    """
    nseries = len(series_start) - 1
    nb = len(x) // max(nseries, 1)
    full = weight * length
    if not len(a):
        return np.zeros(len(x), dtype=weight.dtype)
    cum = _segmented_cumsum(full, series_start)
    k = np.searchsorted(a, x, side="right") - 1
    first = np.repeat(series_start[:-1], nb)
    own = k >= first  # a sample of this series at or before x
    kk = np.clip(k, 0, len(a) - 1)
    part = np.clip(x - a[kk], 0, length[kk]) * weight[kk]
    # cum[k] of aggregate_days counts the samples up to k-1 of the series: prefix before k.
    before = np.where(kk > first, cum[np.maximum(kk - 1, 0)], np.zeros(1, dtype=cum.dtype))
    out = before + part
    return np.where(own, out, 0).astype(full.dtype)


def _records(cols: dict[str, np.ndarray], nseries: int, ndays: int, slow: np.ndarray
             ) -> list[list[dict[str, Any]]]:
    """Per series its day rows as plain-Python dicts (ints and floats, as pandas' to_dict)."""
    names = DAY_COLUMNS
    lists = [cols[n].tolist() for n in names]
    out: list[list[dict[str, Any]]] = []
    for p in range(nseries):
        if slow[p]:
            out.append([])
            continue
        base = p * ndays
        out.append([dict(zip(names, [c[base + j] for c in lists], strict=True))
                    for j in range(ndays)])
    return out
