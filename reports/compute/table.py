"""The daily report table (SPEC 6) from day rows, whole columns at a time (issue 26)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from etl.textutil import round_readable
from etl.vendors.types import MetricType
from reports.compute.daily import DAILY_COLUMNS, US_PER_SECOND, day_report_values, minutes_of


def daily_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The daily report table (DAILY_COLUMNS): counts Int64, measures Float64, <NA> = n/a.

    `rows`: one per series and day, with columns source, metric, metric_type, date, then
    DAY_COLUMNS (as reports.pipelines.days.series_day_rows returns them). Whole columns at
    once (a wide vendor has 100,000 rows a day, issue 26), each figure exactly what
    `day_report_values` gives its row; rows it cannot take so (fractional increases, missing
    counts) go through `day_report_values` one at a time.
    """
    fast = _daily_columns(rows)
    if fast is not None:
        return fast
    records = []
    for row in rows.to_dict("records"):
        vals = day_report_values(row, MetricType(row["metric_type"]))
        records.append({"date": row["date"], "source": row["source"], "metric": row["metric"],
                        "metric_type": row["metric_type"], **vals})
    return _typed(pd.DataFrame.from_records(records, columns=DAILY_COLUMNS),
                 ints=("samples", "increase", "resets"),
                 floats=("min", "max", "mean", "limit", "peak_pct", "coverage_pct", "twa",
                         "warning_minutes", "critical_minutes"))


_INT_FIGURES = ("samples", "increase", "resets", "covered_us", "warning_us", "critical_us",
                "day_start_us", "day_end_us")


def _daily_columns(rows: pd.DataFrame) -> pd.DataFrame | None:
    """daily_table's columns computed column-wise, or None where only the row path is exact."""
    if not len(rows) or any(rows[c].dtype.kind != "i" for c in _INT_FIGURES):
        return None
    mtype = rows["metric_type"].to_numpy(dtype=object)
    counter = mtype == MetricType.COUNTER.value
    gauge = mtype == MetricType.GAUGE.value
    if not (counter | gauge | (mtype == MetricType.INTERVAL.value)).all():
        return None
    ints = {c: rows[c].to_numpy(dtype=np.int64) for c in _INT_FIGURES}
    length = ints["day_end_us"] - ints["day_start_us"]
    covered = ints["covered_us"]
    # Exact integer half-up rounding below needs 20,000 x covered to fit in int64.
    if covered.min() < 0 or covered.max() >= 2**62 // 20_000 or length.max() >= 2**61:
        return None

    def floats(col: str) -> np.ndarray:
        return pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=np.float64,
                                                                   na_value=np.nan)

    samples = ints["samples"]
    has = samples > 0
    nan = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(has, floats("sum") / samples, nan)
        twa = np.where(gauge & (covered > 0), floats("twa_num") * US_PER_SECOND / covered, nan)
    lim = floats("last_limit")
    peak = floats("peak_pct")
    peaks = np.full(len(rows), nan)
    shown = np.flatnonzero(has & ~np.isnan(peak))
    peaks[shown] = readable_many(peak[shown])
    # coverage_pct: covered x 100 / length half-up to 2 places, in exact integers (the same
    # as the Decimal quotient: no quotient of day lengths lies within 1e-25 of a half).
    pos = length > 0
    q = (2 * covered * 10_000 + length) // np.where(pos, 2 * length, 1)
    coverage = np.where(pos, q / 100.0, 0.0)
    minutes = {}
    for col in ("warning_us", "critical_us"):
        out = np.full(len(rows), nan)
        idx = np.flatnonzero(gauge)
        out[idx] = minutes_many(ints[col][idx])
        minutes[col] = out
    not_gauge = ~gauge
    table = pd.DataFrame({
        "date": rows["date"].to_numpy(dtype=object),
        "source": _text(rows["source"]),
        "metric": _text(rows["metric"]),
        "samples": pd.array(samples, dtype="Int64"),
        "min": _float64(np.where(has, floats("min"), nan)),
        "max": _float64(np.where(has, floats("max"), nan)),
        "mean": _float64(mean),
        "limit": _float64(np.where(has, lim, nan)),
        "peak_pct": _float64(peaks),
        "increase": pd.arrays.IntegerArray(np.where(not_gauge, ints["increase"], 0), gauge),
        "resets": pd.arrays.IntegerArray(np.where(counter, ints["resets"], 0), ~counter),
        "coverage_pct": _float64(coverage),
        "provisional": np.full(len(rows), nan),
        "metric_type": _text(rows["metric_type"]),
        "twa": _float64(twa),
        "warning_minutes": _float64(minutes["warning_us"]),
        "critical_minutes": _float64(minutes["critical_us"]),
    }, columns=DAILY_COLUMNS)
    return table


def _text(col: pd.Series) -> Any:
    """A column of names as the table takes it (pandas infers the type of the others).

    As it is when already of the type pandas infers for Python strings: 9,000 rows' names
    turned into Python strings and back into pandas' own were 0.5 % of a warm month.
    """
    global _NAMES
    if _NAMES is None:
        _NAMES = pd.Series(["name"]).dtype
    return col.array if col.dtype == _NAMES else col.to_numpy(dtype=object)


_NAMES: Any = None  # the dtype pandas gives a column of Python strings


def readable_many(values: np.ndarray) -> np.ndarray:
    """[round_readable(v) for v in values], without a call for values at 2 places already.

    round_readable rounds to 2 places or more; a double that is the nearest one to k/100
    (below 1e13, where its error is far below half of 0.01) comes back unchanged.
    """
    out = np.asarray(values, dtype=np.float64).copy()
    with np.errstate(invalid="ignore", over="ignore"):
        other = ~((np.rint(out * 100) / 100 == out) & (np.abs(out) < 1e13))
    at = np.flatnonzero(other)
    out[at] = [round_readable(x) for x in out[at].tolist()]
    return out


def minutes_many(us: np.ndarray) -> np.ndarray:
    """[minutes_of(u) for u in us] (int64 microseconds), exact whole hundredths at once.

    A multiple of 0.01 minute (600,000 us) is k/100 minutes: k / 100 is the double nearest
    to it, which is what Python's round to 2 places of us / 60,000,000 gives.
    """
    us = np.asarray(us, dtype=np.int64)
    out = np.empty(len(us))
    exact = (us % 600_000 == 0) & (np.abs(us) < 2**52)
    out[exact] = (us[exact] // 600_000) / 100.0
    at = np.flatnonzero(~exact)
    out[at] = [minutes_of(u) for u in us[at].tolist()]
    return out


def _float64(values: np.ndarray) -> Any:
    """A Float64 column, NaN as <NA> (as astype("Float64") turns the row path's None)."""
    return pd.arrays.FloatingArray(np.nan_to_num(values, nan=0.0), np.isnan(values))


def _typed(df: pd.DataFrame, ints: Sequence[str], floats: Sequence[str]) -> pd.DataFrame:
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
