"""The reports as DataFrames: read the samples a period needs and run the pure computations.

These are what the CLI, the scheduler's nightly job and notebooks call; `reports.jobs`
turns them into files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from etl.config import Config
from etl.store.rollups import RollupStore
from etl.vendors import KINDS
from reports.compute.billing import SampleMap, billing_table
from reports.compute.daily import DAY_COLUMNS, aggregate_days, day_report_values
from reports.compute.quantities import FROM_SAMPLES
from reports.compute.reconcile import reconcile_table
from reports.periods import (
    US_PER_SECOND,
    Period,
    days_period,
    month_period,
    parse_month,
    resolve_tz,
)
from reports.read.invoice import read_invoice
from reports.read.samples import (
    read_prev_value,
    read_samples,
    read_series_samples,
    series_ids,
)

DAILY_COLUMNS = [
    "date", "source", "metric", "samples", "min", "max", "mean", "limit", "peak_pct",
    "increase", "resets", "coverage_pct",
    # extras
    "metric_type", "twa", "warning_minutes", "critical_minutes",
]
# Days read per query: bounds memory at millions of samples per series and month (a month
# of minute samples is about 45,000 rows, 1 MB); fewer, larger reads cost less per row.
CHUNK_DAYS = 31


@dataclass(frozen=True)
class SeriesInfo:
    """A configured (source, metric) and how to read it."""

    source: str
    metric: str
    kind: str
    metric_type: str
    staleness_us: int


def configured_series(config: Config, only: Sequence[tuple[str, str]] | None = None
                      ) -> list[SeriesInfo]:
    """Every configured (source, metric), in config order (or just those in `only`)."""
    found = []
    for src in config.sources:
        for metric, mtype in KINDS[src.kind].metrics.items():
            if only is not None and (src.name, metric) not in only:
                continue
            found.append(SeriesInfo(src.name, metric, src.kind, mtype,
                                    int(round(src.staleness * US_PER_SECOND))))
    return found


def series_day_rows(engine: Engine, series: Sequence[SeriesInfo], period: Period,
                    *, chunk_days: int = CHUNK_DAYS, rollup_tz: str | None = None
                    ) -> pd.DataFrame:
    """aggregate_days() rows for each series and local day of `period` (zero rows too).

    Columns: source, metric, metric_type, date, then compute.DAY_COLUMNS. These rows alone
    are enough to build any longer period (see compute.combine_days). With `rollup_tz`
    (the configured zone's name), day rows come from the stored rollups where they are
    fresh, and the ones computed here are stored (etl.store.rollups).
    """
    ids = series_ids(engine)
    rollups = (RollupStore(engine, rollup_tz, period.start_us, period.end_us)
               if rollup_tz is not None else None)
    days = period.days
    frames = []
    records: list[dict[str, object]] = []
    with engine.connect() as conn:
        for info in series:
            sid = ids.get((info.source, info.metric))
            for i in range(0, len(days), chunk_days):
                j = min(i + chunk_days, len(days))
                bounds = period.bounds[i:j + 1]
                read_from = int(bounds[0]) - info.staleness_us
                if sid is None:
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
                            if info.metric_type == "counter" else None)
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
                agg.insert(0, "metric_type", info.metric_type)
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


def _label(records: list[dict[str, object]], info: SeriesInfo, days: Sequence[date],
           rows: Sequence[dict[str, object]]) -> None:
    """Append day rows with the columns that say whose and which day they are."""
    for day, row in zip(days, rows, strict=True):
        records.append({"source": info.source, "metric": info.metric,
                        "metric_type": info.metric_type, "date": day, **row})


def daily_from_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The daily report table (SPEC 6 columns, then extras) from series_day_rows() rows."""
    records = []
    for row in rows.to_dict("records"):
        vals = day_report_values(row, str(row["metric_type"]))
        records.append({"date": row["date"], "source": row["source"], "metric": row["metric"],
                        "metric_type": row["metric_type"], **vals})
    return typed(pd.DataFrame.from_records(records, columns=DAILY_COLUMNS),
                 ints=("samples", "increase", "resets"),
                 floats=("min", "max", "mean", "limit", "peak_pct", "coverage_pct", "twa",
                         "warning_minutes", "critical_minutes"))


def typed(df: pd.DataFrame, ints: Sequence[str], floats: Sequence[str]) -> pd.DataFrame:
    """Nullable dtypes: counts stay exact integers, 'not applicable' is <NA>."""
    for col in ints:
        try:
            df[col] = df[col].astype("Int64")
        except (TypeError, ValueError):
            # A counter with fractional readings: keep its exact float sum.
            df[col] = df[col].astype("Float64")
    for col in floats:
        df[col] = df[col].astype("Float64")
    return df


def _tz_name(config: Config, tz: str | None) -> str:
    name = tz or config.timezone
    resolve_tz(name)
    return name


def rollup_tz(config: Config, tz: str | None) -> str | None:
    """The zone whose daily rollups a report reads and fills: the one it reports in.

    Rollups are kept per zone, so a report in another zone (`--tz`) is cold once and warm
    after; a write invalidates the affected days of every zone (etl.store.rollups.invalidate_dirty).
    """
    return tz or config.timezone


def daily_frame(engine: Engine, config: Config, start: date, end: date,
                tz: str | None = None, *, rollups: bool = True) -> pd.DataFrame:
    """The daily report rows for local days start..end (both included), in `tz` or the config's.

    `rollups=False` computes every day from raw samples and stores nothing.
    """
    zone = resolve_tz(_tz_name(config, tz))
    period = days_period(start, end + timedelta(days=1), zone)
    return daily_from_rows(series_day_rows(engine, configured_series(config), period,
                                           rollup_tz=rollup_tz(config, tz) if rollups else None))


@dataclass(frozen=True)
class BillingInputs:
    """What a month's billing table is computed from: the month, its day rows, samples."""

    period: Period
    rows: pd.DataFrame  # series_day_rows() of the series the billing rules name
    samples: SampleMap  # the month's samples of the rules whose quantity needs them (p95)

    def table(self, config: Config, now: datetime) -> pd.DataFrame:
        """compute.billing.billing_table of these inputs (one row per rule)."""
        return billing_table(self.rows, config.billing, self.period, now=now,
                             samples=self.samples)


def billing_inputs(engine: Engine, config: Config, month: date, tz: str | None = None,
                   *, rollups: bool = True) -> BillingInputs:
    """Read what the billing rules need over the month (local `month` in `tz`).

    Day rows come from the rollups where fresh (`rollups`), as for the daily report; a
    quantity no day row can give (quantities.FROM_SAMPLES: p95) has its samples read.
    """
    zone = resolve_tz(_tz_name(config, tz))
    period = month_period(month, zone)
    wanted = [(r.source, r.metric) for r in config.billing]
    rows = series_day_rows(engine, configured_series(config, wanted), period,
                           rollup_tz=rollup_tz(config, tz) if rollups else None)
    samples = read_series_samples(
        engine, [(r.source, r.metric) for r in config.billing
                 if r.aggregation in FROM_SAMPLES], period.start_us, period.end_us)
    return BillingInputs(period, rows, samples)


def billing_frame(engine: Engine, config: Config, month: str | date, tz: str | None = None,
                  *, now: datetime | None = None, rollups: bool = True) -> pd.DataFrame:
    """One row per billing rule for the month (YYYY-MM), SPEC 6 columns then extras."""
    first = parse_month(month) if isinstance(month, str) else month.replace(day=1)
    return billing_inputs(engine, config, first, tz, rollups=rollups).table(
        config, now or datetime.now(UTC))


def reconcile_frame(engine: Engine, config: Config, month: str, invoice: Path | str,
                    *, tolerance_pct: float = 1.0, tz: str | None = None,
                    now: datetime | None = None) -> pd.DataFrame:
    """Metered (billing_frame) against the invoice CSV's lines for `month`."""
    first = parse_month(month)
    lines = read_invoice(Path(invoice))
    billed = billing_frame(engine, config, first, tz, now=now)
    return reconcile_table(billed, lines, first.strftime("%Y-%m"),
                                         tolerance_pct=tolerance_pct)
