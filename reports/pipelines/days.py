"""The first step of every report: day rows per configured series, from rollups or samples."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine

from etl.config import Config
from etl.store.rollups import RollupStore
from etl.vendors.types import MetricType
from reports.compute.daily import DAY_COLUMNS, aggregate_days, needs_prev_value
from reports.compute.intervals import aggregate_interval_days, is_provisional
from reports.periods import US_PER_SECOND, Period
from reports.read.history import read_buckets, read_reads
from reports.read.samples import (
    item_series,
    read_prev_value,
    read_samples,
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
    for src in config.sources:
        vendor = src.vendor
        staleness_us = int(round(src.staleness * US_PER_SECOND))
        metrics = list(vendor.metrics)
        if only is not None:
            metrics += [m for s, m in only if s == src.name and m not in vendor.metrics]
        elif vendor.series_metrics and engine is not None and until_us is not None:
            metrics += item_series(engine, src.name, until_us)
        for metric in metrics:
            mtype = vendor.metric_type_of(metric)
            if mtype is None or (only is not None and (src.name, metric) not in only):
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
    """
    ids = series_ids(engine)
    refuse_retired(engine, [ids[k] for s in series if (k := (s.source, s.metric)) in ids],
                   period.start_us)
    rollups = (RollupStore(engine, rollup_tz, period.start_us, period.end_us)
               if rollup_tz is not None else None)
    days = period.days
    frames = []
    records: list[dict[str, object]] = []
    with nullcontext(snapshot) if snapshot is not None else read_snapshot(engine) as conn:
        for info in series:
            sid = ids.get((info.source, info.metric))
            for i in range(0, len(days), chunk_days):
                j = min(i + chunk_days, len(days))
                bounds = period.bounds[i:j + 1]
                read_from = int(bounds[0]) - info.staleness_us
                if info.history:
                    # Never rolled up: coverage and revisions move with every read.
                    agg = _history_days(conn, sid, info, bounds)
                elif sid is None:
                    empty = np.zeros(0)
                    agg = aggregate_days(np.zeros(0, dtype=np.int64), empty, empty, bounds,
                                         metric_type=info.metric_type,
                                         staleness_us=info.staleness_us)
                elif rollups is not None and (cached := rollups.get(
                        sid, [str(d) for d in days[i:j]], info.staleness_us / US_PER_SECOND)):
                    _label(records, info, days[i:j], cached)
                    continue
                else:
                    arr = read_samples(conn, sid, read_from, int(bounds[-1]))
                    prev = (read_prev_value(conn, sid, read_from)
                            if needs_prev_value(info.metric_type) else None)
                    agg = aggregate_days(arr.t, arr.value, arr.limit, bounds,
                                         metric_type=info.metric_type,
                                         staleness_us=info.staleness_us, prev_value=prev)
                    if rollups is not None:
                        computed = agg.to_dict("records")
                        rollups.put(sid, [str(d) for d in days[i:j]], bounds.tolist(),
                                    info.staleness_us / US_PER_SECOND, computed)
                        _label(records, info, days[i:j], computed)
                        continue
                if rollups is not None:
                    _label(records, info, days[i:j], agg.to_dict("records"))
                    continue
                agg.insert(0, "date", days[i:j])
                agg.insert(0, "metric_type", info.metric_type.value)
                agg.insert(0, "metric", info.metric)
                agg.insert(0, "source", info.source)
                frames.append(agg)
    if rollups is not None:
        rollups.flush()
        # Hundreds of small frames cost more than the rows: build one frame from records.
        return pd.DataFrame.from_records(
            records, columns=["source", "metric", "metric_type", "date", *DAY_COLUMNS])
    if not frames:
        return pd.DataFrame(columns=["source", "metric", "metric_type", "date", *DAY_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def _history_days(conn: Connection, sid: int | None, info: SeriesInfo,
                  bounds: np.ndarray) -> pd.DataFrame:
    """Day rows of a history series from its buckets and its source's read ranges."""
    lo, hi = int(bounds[0]), int(bounds[-1])
    empty = np.zeros(0, dtype=np.int64)
    start, end, value = ((empty, empty, np.zeros(0)) if sid is None
                         else read_buckets(conn, sid, lo, hi))
    return aggregate_interval_days(start, end, value, bounds, read_reads(conn, info.source, lo, hi),
                                   apportioned=info.metric_type == MetricType.INTERVAL)


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


def _label(records: list[dict[str, object]], info: SeriesInfo, days: Sequence[date],
           rows: Sequence[dict[str, object]]) -> None:
    """Append day rows with the columns that say whose and which day they are."""
    for day, row in zip(days, rows, strict=True):
        records.append({"source": info.source, "metric": info.metric,
                        "metric_type": info.metric_type.value, "date": day, **row})

