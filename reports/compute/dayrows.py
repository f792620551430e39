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
    order = np.argsort(rows["date"].to_numpy(dtype=object), kind="stable")
    cols = {name: rows[name].to_numpy()[order] for name in rows.columns}
    groups = pd.Series(np.arange(len(rows))).groupby(
        [cols["source"], cols["metric"]], sort=False).indices
    return {(str(key[0]), str(key[1])): DayRows({k: v[at] for k, v in cols.items()}, len(at))
            for key, at in groups.items()}


def float_column(col: Any) -> np.ndarray:
    """A column of readings as float64, a missing one (None, <NA>) as NaN."""
    if isinstance(col, pd.Series):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(col)
    if arr.dtype == np.float64:
        return arr
    return pd.Series(arr).to_numpy(dtype=np.float64, na_value=np.nan)
