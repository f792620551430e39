"""Day rows of history series (SPEC 10 "Numbers"): buckets apportioned to days, read coverage.

An interval bucket `[start, end)` with value v adds v × (overlap with the day) / (bucket
length) to the day's `increase`, kept exact (a Decimal) so that a billing period's `sum` is
rounded once, not day by day; the daily report rounds it half-up to 4 places
(daily.round4). `samples`, `min`, `max`,
`mean` are over the buckets overlapping the day. Coverage is the share of the day inside
the union of the source's read ranges, each counting up to when it was read.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd

from reports.compute.daily import DAY_COLUMNS


def read_intervals(start: np.ndarray, end: np.ndarray, read_at: np.ndarray
                   ) -> list[tuple[int, int]]:
    """The union of read ranges, each cut at its read time, as sorted disjoint (a, b) in us."""
    stop = np.minimum(np.asarray(end, dtype=np.int64), np.asarray(read_at, dtype=np.int64))
    spans = sorted((int(a), int(b)) for a, b in zip(start, stop, strict=True) if b > a)
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def covered_us(spans: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Microseconds of [lo, hi) inside the disjoint `spans`."""
    return sum(max(0, min(b, hi) - max(a, lo)) for a, b in spans)


def is_provisional(start: np.ndarray, end: np.ndarray, read_at: np.ndarray, lo: int, hi: int,
                   lookback_us: int) -> bool:
    """True unless all of [lo, hi) was read at least `lookback_us` after `hi` (SPEC 10)."""
    late = np.asarray(read_at, dtype=np.int64) >= hi + lookback_us
    spans = read_intervals(np.asarray(start)[late], np.asarray(end)[late],
                           np.asarray(read_at)[late])
    return covered_us(spans, lo, hi) < hi - lo


def apportion(value: float, overlap_us: int, length_us: int) -> Decimal:
    """The value × overlap / length, exact (SPEC 10): a bucket inside the period counts whole."""
    if overlap_us >= length_us:
        return Decimal(repr(float(value)))
    return Decimal(repr(float(value))) * overlap_us / length_us


def aggregate_interval_days(start: np.ndarray, end: np.ndarray, value: np.ndarray,
                            bounds: np.ndarray, reads: tuple[np.ndarray, np.ndarray, np.ndarray],
                            *, apportioned: bool = True) -> pd.DataFrame:
    """One row per day [bounds[j], bounds[j+1]) of one history series (DAY_COLUMNS).

    `start`, `end` (epoch us) and `value` are its buckets, sorted by start; `reads` the
    source's read ranges (start, end, read at). `apportioned` (interval metrics): `increase`
    is the apportioned sum, an exact Decimal (not rounded: SPEC 10 rounds a billing
    period's sum once); False (bucket gauges): `increase` 0 and the day's time-weighted
    figures come from the buckets' levels held over their bucket.
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    spans = read_intervals(*reads)
    rows = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        inside = (start < hi) & (end > lo)
        s, e, v = start[inside], end[inside], value[inside]
        n = len(v)
        total = Decimal(0)
        twa = 0.0
        for a, b, x in zip(s.tolist(), e.tolist(), v.tolist(), strict=True):
            overlap = min(b, hi) - max(a, lo)
            if apportioned:
                total += apportion(x, overlap, b - a)
            else:
                twa += x * overlap / 1_000_000
        rows.append({
            "day_start_us": lo, "day_end_us": hi, "samples": n,
            "min": float(v.min()) if n else np.nan, "max": float(v.max()) if n else np.nan,
            "sum": float(v.sum()) if n else np.nan, "last_limit": np.nan, "peak_pct": np.nan,
            "increase": total if apportioned else 0, "resets": 0,
            "covered_us": covered_us(spans, lo, hi), "twa_num": twa, "warning_us": 0,
            "critical_us": 0,
            "first_at_us": int(s[0]) if n else -1, "first_value": float(v[0]) if n else np.nan,
            "last_at_us": int(s[-1]) if n else -1, "last_value": float(v[-1]) if n else np.nan,
        })
    return pd.DataFrame.from_records(rows, columns=DAY_COLUMNS)
