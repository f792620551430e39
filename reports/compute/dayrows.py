"""Day rows of one series as plain numpy columns: a frame without pandas' per-call cost."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd


class DayRows(Mapping[str, np.ndarray]):
    """Read-only columns of equal length (numpy arrays), the day rows of one series.

    What `combine_days`, `cumulative_quantities` and the billing table read of a DataFrame
    of aggregate_days() rows (a column by name, `in`, `len`), without the DataFrame: a warm
    billing report reads 200 series' month of rows, and pandas' cost per column access and
    slice was most of its time (issue 25). Each array is exactly the DataFrame column's
    `to_numpy()`, so `.tolist()` and iteration give the same values.
    """

    __slots__ = ("_cols", "_n")

    def __init__(self, cols: Mapping[str, np.ndarray], n: int) -> None:
        self._cols = dict(cols)
        self._n = n

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols)

    def __len__(self) -> int:
        """The number of rows (as a DataFrame's len), not of columns."""
        return self._n

    def rows(self, lo: int, hi: int) -> DayRows:
        """Rows lo..hi-1 (views, no copies)."""
        lo, hi = max(lo, 0), min(hi, self._n)
        return DayRows({k: v[lo:hi] for k, v in self._cols.items()}, max(hi - lo, 0))


def split_series(rows: pd.DataFrame) -> dict[tuple[str, str], DayRows]:
    """Each (source, metric)'s rows of a series_day_rows() frame, in date order.

    One sort and one conversion per column for the whole table; the same rows, in the same
    order, as a stable sort by date of each series' own rows.
    """
    if not len(rows):
        return {}
    cols = {name: rows[name].to_numpy() for name in rows.columns}
    groups = pd.Series(np.arange(len(rows))).groupby(
        [cols["source"], cols["metric"]], sort=False).indices
    first = _in_date_order(cols["date"], groups)
    if first is None:  # some series' rows out of date order: sort them all
        order = np.argsort(rows["date"].to_numpy(dtype=object), kind="stable")
        cols = {name: col[order] for name, col in cols.items()}
        groups = pd.Series(np.arange(len(rows))).groupby(
            [cols["source"], cols["metric"]], sort=False).indices
    else:
        # Each series' rows as the sort leaves them, and the series in the order their
        # first rows take after it (by date, then place).
        groups = {key: groups[key] for key in sorted(groups, key=first.__getitem__)}
    return {(str(key[0]), str(key[1])): DayRows({k: v[part] for k, v in cols.items()}, len(at))
            for key, at in groups.items() for part in (_part(at),)}


def _part(at: np.ndarray) -> np.ndarray | slice:
    """Rows at these places (ascending): a slice (views, no copies) where they are contiguous."""
    lo, hi = int(at[0]), int(at[-1]) + 1
    return slice(lo, hi) if hi - lo == len(at) else at


def _in_date_order(dates: np.ndarray, groups: Mapping[Any, np.ndarray]
                   ) -> dict[Any, tuple[Any, int]] | None:
    """Each series' first (date, place), if each one's rows are in date order already.

    A day rows frame lists each series' days in order (series_day_rows): sorting 6,000
    dates (Python objects) and reordering every column was a quarter of a warm billing
    table. None if any series' rows are not in order (or their dates do not compare).
    """
    at = np.concatenate(list(groups.values()))
    mine = dates[at]
    try:
        later = mine[1:] >= mine[:-1]
    except TypeError:
        return None
    starts = np.cumsum([len(g) for g in groups.values()])[:-1]  # a series' first row
    later[starts - 1] = True
    if not bool(np.all(later)):
        return None
    return {key: (dates[g[0]], int(g[0])) for key, g in groups.items()}


def float_column(col: Any) -> np.ndarray:
    """A column of readings as float64, a missing one (None, <NA>) as NaN."""
    if isinstance(col, pd.Series):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(col)
    if arr.dtype == np.float64:
        return arr
    return pd.Series(arr).to_numpy(dtype=np.float64, na_value=np.nan)
