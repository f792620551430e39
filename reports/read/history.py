"""Read history series (SPEC 10): a series' buckets and its source's read ranges, in epoch us."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import Connection, select

from etl.store.history import MAX_BUCKET, read_ranges
from etl.store.models import Sample
from etl.timefmt import from_micros, to_micros

Reads = tuple[np.ndarray, np.ndarray, np.ndarray]


def read_buckets(conn: Connection, series_id: int, lo_us: int, hi_us: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, value) of the series' buckets overlapping [lo_us, hi_us), by start."""
    lo, hi = from_micros(lo_us), from_micros(hi_us)
    rows = conn.execute(select(Sample.observed_at, Sample.bucket_end, Sample.value).where(
        Sample.series_id == series_id, Sample.observed_at < hi,
        Sample.observed_at > lo - MAX_BUCKET - timedelta(microseconds=1),
    ).order_by(Sample.observed_at)).all()
    kept = [(to_micros(a), to_micros(b), v) for a, b, v in rows if b is not None and b > lo]
    return (np.array([r[0] for r in kept], dtype=np.int64),
            np.array([r[1] for r in kept], dtype=np.int64),
            np.array([r[2] for r in kept], dtype=np.float64))


def read_reads(conn: Connection, source: str, lo_us: int, hi_us: int) -> Reads:
    """(start, end, read at) of the source's read ranges overlapping [lo_us, hi_us)."""
    found = read_ranges(conn, source, from_micros(lo_us), from_micros(hi_us))
    return (np.array([to_micros(a) for a, _, _ in found], dtype=np.int64),
            np.array([to_micros(b) for _, b, _ in found], dtype=np.int64),
            np.array([to_micros(c) for _, _, c in found], dtype=np.int64))
