"""The first step of every report: day rows per configured series, from rollups or samples."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date
from operator import itemgetter

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine

from etl.config import Config
from etl.store.rollups import RollupStore, gc_paused
from etl.vendors.types import MetricType
from reports.compute.daily import DAY_COLUMNS, needs_prev_value
from reports.compute.intervals import aggregate_interval_days, is_provisional
from reports.compute.many import aggregate_days_many
from reports.periods import US_PER_SECOND, Period
from reports.read.history import read_buckets, read_reads
from reports.read.samples import (
    item_series,
    read_prev_values,
    read_samples_many,
    read_snapshot,
    refuse_retired,
    series_ids,
)

# Days read per query: bounds memory at millions of samples per series and month (a month
# of minute samples is about 45,000 rows, 1 MB); fewer, larger reads cost less per row.
CHUNK_DAYS = 31


@dataclass(frozen=True)
class SeriesInfo:
    """A configured (source, metric) and how to read it."""

    source: str
    metric: str
    kind: str
    metric_type: MetricType
    staleness_us: int
    # History sources (SPEC 10): buckets and read ranges instead of instants and staleness.
    history: bool = False
    lookback_us: int = 0


def configured_series(config: Config, only: Sequence[tuple[str, str]] | None = None,
                      *, engine: Engine | None = None, until_us: int | None = None
                      ) -> list[SeriesInfo]:
    """Every configured (source, metric), in config order (or just those in `only`).

    A source's fixed metrics come first, then its per-item series (`NAME:KEY`, SPEC 7):
    those named in `only`, or, given `engine` and `until_us`, every one seen in history
    before `until_us` (the end of the report's period).
    """
    found = []
    # `only` by source and as a set: a billing report names 200 series of 200 sources.
    named: dict[str, list[str]] = {}
    for s, m in only or ():
        named.setdefault(s, []).append(m)
    wanted = None if only is None else set(only)
    for src in config.sources:
        vendor = src.vendor
        staleness_us = int(round(src.staleness * US_PER_SECOND))
        metrics = list(vendor.metrics)
        if only is not None:
            metrics += [m for m in named.get(src.name, ()) if m not in vendor.metrics]
        elif vendor.series_metrics and engine is not None and until_us is not None:
            metrics += item_series(engine, src.name, until_us)
        for metric in metrics:
            mtype = vendor.metric_type_of(metric)
            if mtype is None or (wanted is not None and (src.name, metric) not in wanted):
                continue
            history = vendor.history
            found.append(SeriesInfo(
                src.name, metric, src.kind, mtype, staleness_us, history is not None,
                0 if history is None else history.window.lookback.seconds * US_PER_SECOND))
    return found


def series_day_rows(engine: Engine, series: Sequence[SeriesInfo], period: Period,
                    *, chunk_days: int = CHUNK_DAYS, rollup_tz: str | None = None,
                    snapshot: Connection | None = None) -> pd.DataFrame:
    """aggregate_days() rows for each series and local day of `period` (zero rows too).

    Columns: source, metric, metric_type, date, then compute.DAY_COLUMNS. These rows alone
    are enough to build any longer period (see compute.combine_days). With `rollup_tz`
    (the configured zone's name), day rows come from the stored rollups where they are
    fresh, and the ones computed here are stored (etl.store.rollups). `snapshot`: a
    read_snapshot() connection the caller reads more through (default: one of its own).
    Series of one kind and staleness are read and computed many at a time
    (`aggregate_days_many`: a wide vendor's 100,000 series in a few queries, issue 26).
    """
    # Tens of thousands of plain rows (decoded or computed) and no cycles: collections
    # their allocations trigger scan every live object (see gc_paused).
    with gc_paused():
        return _series_day_rows(engine, series, period, chunk_days, rollup_tz, snapshot)


def _series_day_rows(engine: Engine, series: Sequence[SeriesInfo], period: Period,
                     chunk_days: int, rollup_tz: str | None, snapshot: Connection | None
                     ) -> pd.DataFrame:
    ids = series_ids(engine)
    refuse_retired(engine, [ids[k] for s in series if (k := (s.source, s.metric)) in ids],
                   period.start_us)
    wanted = [ids[k] for s in series if not s.history and (k := (s.source, s.metric)) in ids]
    rollups = (RollupStore(engine, rollup_tz, period.start_us, period.end_us,
                           wanted if len(wanted) < len(ids) else None)
               if rollup_tz is not None else None)
    days = period.days
    # Per series (in `series` order), its day rows chunk by chunk.
    rows: list[list[dict[str, object]]] = [[] for _ in series]
    groups: dict[tuple[MetricType, int], list[int]] = {}
    with nullcontext(snapshot) if snapshot is not None else read_snapshot(engine) as conn:
        for n, info in enumerate(series):
            if info.history:
                sid = ids.get((info.source, info.metric))
                for i in range(0, len(days), chunk_days):
                    bounds = period.bounds[i:min(i + chunk_days, len(days)) + 1]
                    # Never rolled up: coverage and revisions move with every read.
                    rows[n] += _history_days(conn, sid, info, bounds).to_dict("records")
            else:
                groups.setdefault((info.metric_type, info.staleness_us), []).append(n)
        for i in range(0, len(days), chunk_days):
            j = min(i + chunk_days, len(days))
            bounds = period.bounds[i:j + 1]
            day_keys = [str(d) for d in days[i:j]]
            for (mtype, staleness_us), members in groups.items():
                todo = []
                for n in members:
                    sid = ids.get((series[n].source, series[n].metric))
                    if sid is not None and rollups is not None and (cached := rollups.get(
                            sid, day_keys, staleness_us / US_PER_SECOND)):
                        rows[n] += cached
                    else:
                        todo.append((n, sid))
                for n, got in _computed(conn, todo, bounds, mtype, staleness_us):
                    sid = ids.get((series[n].source, series[n].metric))
                    if rollups is not None and sid is not None:
                        rollups.put(sid, day_keys, bounds.tolist(),
                                    staleness_us / US_PER_SECOND, got)
                    rows[n] += got
    if rollups is not None:
        rollups.flush()
    return _frame(series, rows, days)


def _frame(series: Sequence[SeriesInfo], rows: Sequence[Sequence[dict[str, object]]],
           days: Sequence[date]) -> pd.DataFrame:
    """One frame of every series' day rows, labelled with whose and which day they are."""
    fast = _frame_columns(series, rows, days)
    if fast is not None:
        return pd.DataFrame(fast, columns=_FRAME_COLUMNS)
    # Hundreds of small frames cost more than the rows: build one frame from records, as
    # tuples (a missing figure NaN, as from_records makes it of dicts): no dict per row.
    records: list[tuple[object, ...]] = []
    figures = itemgetter(*DAY_COLUMNS)
    for info, series_rows in zip(series, rows, strict=True):
        labels = (info.source, info.metric, info.metric_type.value)
        try:
            records += [(*labels, day, *figures(row))
                        for day, row in zip(days, series_rows, strict=True)]
        except KeyError:  # a row stored before a column existed
            records += [(*labels, day, *[row.get(c, _NAN) for c in DAY_COLUMNS])
                        for day, row in zip(days, series_rows, strict=True)]
    if not records:
        return pd.DataFrame(columns=["source", "metric", "metric_type", "date", *DAY_COLUMNS])
    return pd.DataFrame.from_records(
        records, columns=["source", "metric", "metric_type", "date", *DAY_COLUMNS])


_NAN = float("nan")
_FRAME_COLUMNS = ["source", "metric", "metric_type", "date", *DAY_COLUMNS]


def _frame_columns(series: Sequence[SeriesInfo], rows: Sequence[Sequence[dict[str, object]]],
                   days: Sequence[date]) -> dict[str, object] | None:
    """_frame's columns built a column at a time, or None where only its records path is sure.

    The same frame as from_records makes of the rows (a warm month's 9,000 rows: its
    conversion of tuples to typed columns was a fifth of the reports' time): figures that
    are all ints become int64, ints and floats float64; anything else (a missing key, a
    None, a numpy scalar, an int beyond 64 bits) is left to the records path.
    """
    n_days = len(days)
    if not series or any(len(series_rows) != n_days for series_rows in rows):
        return None  # no rows, or a length the records path refuses (zip strict)
    global _last_built
    flat = [row for series_rows in rows for row in series_rows]
    if not flat:
        return None
    out: dict[str, object] = {
        "source": [info.source for info in series for _ in days],
        "metric": [info.metric for info in series for _ in days],
        "metric_type": [info.metric_type.value for info in series for _ in days],
        "date": np.array(list(days) * len(series), dtype=object),
    }
    # Rows the last frame was built from (stored rows are shared, read-only, by decode_rows:
    # the billing report's are the daily reports'): their figures are taken from its
    # columns, where a column held one kind of value (a part of it holds the same kind).
    last = _last_built
    at: np.ndarray | None = None
    if last is not None:
        found = list(map(last.at.get, map(id, flat)))
        at = None if None in found else np.array(found, dtype=np.intp)
    pure: dict[str, np.ndarray] = {}
    for name in DAY_COLUMNS:
        if at is not None and last is not None and name in last.columns:
            out[name] = pure[name] = last.columns[name][at]
            continue
        try:
            typed = _typed(list(map(itemgetter(name), flat)))
        except KeyError:  # a row stored before a column existed
            return None
        if typed is None:
            return None
        out[name] = typed[0]
        if typed[1]:
            pure[name] = typed[0]
    if len(flat) <= _BUILT_MOST:
        # The rows are kept with their positions: while they live, no other object has
        # their ids.
        _last_built = _Built(flat, dict(zip(map(id, flat), range(len(flat)), strict=True)),
                             pure)
    return out


def _typed(values: list[object]) -> tuple[np.ndarray, bool] | None:
    """The column from_records makes of these figures, and whether they are of one kind.

    None for figures it keeps as objects (or that only it types surely).
    """
    kinds = set(map(type, values))
    try:
        if kinds <= _INT:
            return np.array(values, dtype=np.int64), True
        if kinds <= _INT_FLOAT:
            if int in kinds and not all(-_WIDE <= v < _WIDE for v in values  # type: ignore[operator]
                                        if v.__class__ is int):
                return None  # beyond int64: records keep such a column as objects
            return np.array(values, dtype=np.float64), kinds == _FLOAT
    except OverflowError:
        return None
    return None


@dataclass(frozen=True)
class _Built:
    """The rows the last frame was built from, their positions, its single-kind columns."""

    rows: list[dict[str, object]]
    at: dict[int, int]
    columns: dict[str, np.ndarray]


_last_built: _Built | None = None
_BUILT_MOST = 30_000  # rows kept at most (as etl.store.rollups.MEMO_MOST)
_FLOAT = frozenset({float})


_INT = frozenset({int})
_INT_FLOAT = frozenset({int, float})
_WIDE = 2**63

# Rows read per query at most, roughly (series per query adapt to the rows each one had):
# bounds memory at a wide vendor's 100,000 series and at a month of minute samples alike.
BATCH_ROWS = 1_000_000
_FIRST_BATCH = 64
_MOST_BATCH = 4096  # SQLite allows 32,766 bound values, PostgreSQL 65,535


def _computed(conn: Connection, todo: Sequence[tuple[int, int | None]], bounds: np.ndarray,
              mtype: MetricType, staleness_us: int
              ) -> Iterator[tuple[int, list[dict[str, object]]]]:
    """(series position, day rows) of each (position, series id) in `todo`, many at a time."""
    read_from = int(bounds[0]) - staleness_us
    size, i = _FIRST_BATCH, 0
    while i < len(todo):
        batch = todo[i:i + size]
        i += len(batch)
        sids = [sid for _, sid in batch if sid is not None]
        arr = read_samples_many(conn, sids, read_from, int(bounds[-1]))
        prevs = (read_prev_values(conn, sids, read_from) if needs_prev_value(mtype) else {})
        where = {sid: k for k, (_, sid) in enumerate(batch) if sid is not None}
        # Each sample's place in the batch, through the sorted ids (not a lookup per sample).
        known = np.array(sorted(where), dtype=np.int64)
        place = np.array([where[s] for s in known.tolist()], dtype=np.int64)
        pos = place[np.searchsorted(known, arr.sid)] if len(arr.sid) else arr.sid
        got = aggregate_days_many(pos, arr.t, arr.value, arr.limit, len(batch), bounds,
                                  metric_type=mtype, staleness_us=staleness_us,
                                  prev_values=[None if sid is None else prevs.get(sid)
                                               for _, sid in batch])
        yield from ((n, day_rows) for (n, _), day_rows in zip(batch, got, strict=True))
        per_series = max(len(arr.t) / max(len(batch), 1), 1.0)
        size = int(min(size * 4, _MOST_BATCH, max(BATCH_ROWS // per_series, 1)))


def _history_days(conn: Connection, sid: int | None, info: SeriesInfo,
                  bounds: np.ndarray) -> pd.DataFrame:
    """Day rows of a history series from its buckets and its source's read ranges."""
    lo, hi = int(bounds[0]), int(bounds[-1])
    empty = np.zeros(0, dtype=np.int64)
    start, end, value = ((empty, empty, np.zeros(0)) if sid is None
                         else read_buckets(conn, sid, lo, hi))
    return aggregate_interval_days(start, end, value, bounds, read_reads(conn, info.source, lo, hi),
                                   apportioned=info.metric_type == MetricType.INTERVAL)


def history_sources(config: Config) -> frozenset[str]:
    """The configured sources that read history (SPEC 10): provisional_text's None for others."""
    return frozenset(s.name for s in config.sources if s.vendor.history is not None)


def provisional_text(conn: Connection, config: Config, source: str, lo_us: int,
                     hi_us: int) -> str | None:
    """`true`/`false` for a history source's period [lo_us, hi_us) (SPEC 10), else None.

    Provisional unless all of the period was read at least `lookback` after its end.
    """
    src = next((s for s in config.sources if s.name == source), None)
    history = src.vendor.history if src is not None else None
    if history is None:
        return None
    reads = read_reads(conn, source, lo_us, hi_us)
    lookback_us = history.window.lookback.seconds * US_PER_SECOND
    return "true" if is_provisional(*reads, lo_us, hi_us, lookback_us) else "false"
