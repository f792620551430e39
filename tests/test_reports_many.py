"""Many series at once (issue 26, very wide vendors): the vectorised day rows give exactly
what `aggregate_days` gives each series on its own, for gauges and counters, and the daily
table built column-wise exactly what `day_report_values` gives each row."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.vendors.types import MetricType
from reports.compute.daily import DAILY_COLUMNS, aggregate_days, day_report_values
from reports.compute.many import aggregate_days_many
from reports.compute.table import daily_table

DAY_US = 86_400 * 1_000_000
BOUNDS = np.array([DAY_US * k for k in range(10, 14)], dtype=np.int64)  # three days


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types; NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def per_series(series: list[dict[str, Any]], mtype: MetricType, staleness: int
               ) -> list[list[dict[str, Any]]]:
    return [aggregate_days(np.array(s["t"], dtype=np.int64), np.array(s["v"], dtype=float),
                           np.array(s["lim"], dtype=float), BOUNDS, metric_type=mtype,
                           staleness_us=staleness, prev_value=s["prev"]).to_dict("records")
            for s in series]


def at_once(series: list[dict[str, Any]], mtype: MetricType, staleness: int
            ) -> list[list[dict[str, Any]]]:
    pos = np.concatenate([[p] * len(s["t"]) for p, s in enumerate(series)] + [[]])
    cat = {k: np.concatenate([np.asarray(s[k], dtype=float) for s in series] + [np.zeros(0)])
           for k in ("t", "v", "lim")}
    return aggregate_days_many(pos.astype(np.int64), cat["t"].astype(np.int64), cat["v"],
                               cat["lim"], len(series), BOUNDS, metric_type=mtype,
                               staleness_us=staleness, prev_values=[s["prev"] for s in series])


def assert_same(got: list[list[dict[str, Any]]], want: list[list[dict[str, Any]]]) -> None:
    assert len(got) == len(want)
    for p, (g_rows, w_rows) in enumerate(zip(got, want, strict=True)):
        assert len(g_rows) == len(w_rows), p
        for g, w in zip(g_rows, w_rows, strict=True):
            assert list(g) == list(w)
            bad = {k: (g[k], w[k]) for k in w if not same(g[k], w[k])}
            assert not bad, (p, bad)


# Times from a day before the period to its end (some before it: coverage and predecessors
# only), on a minute grid so equal timestamps happen; readings of every kind a vendor sends.
TIMES = st.integers(9 * 24 * 60, 13 * 24 * 60 + 30).map(lambda m: m * 60_000_000)
INTEGRAL = st.integers(0, 10**6).map(float)
DECIMAL = st.integers(0, 10**7).map(lambda k: k / 100)
ANY_FLOAT = st.floats(-1e6, 1e9, allow_nan=False, allow_infinity=False)
LIMIT = st.one_of(st.just(math.nan), st.just(0.0), st.floats(1, 2e6))


def one_series(values: st.SearchStrategy[float]) -> st.SearchStrategy[dict[str, Any]]:
    return st.lists(st.tuples(TIMES, values, LIMIT), max_size=40).flatmap(
        lambda rows: st.fixed_dictionaries({
            "t": st.just([r[0] for r in rows]), "v": st.just([r[1] for r in rows]),
            "lim": st.just([r[2] for r in rows]),
            "prev": st.one_of(st.none(), INTEGRAL, DECIMAL)}))


SERIES = st.lists(st.one_of(one_series(INTEGRAL), one_series(DECIMAL), one_series(ANY_FLOAT)),
                  min_size=0, max_size=12)
STALENESS = st.sampled_from([1, 60_000_000, 900_000_000, DAY_US, 3 * DAY_US])


@settings(max_examples=200, deadline=None)
@given(SERIES, STALENESS)
def test_counters_at_once_equal_each_series_on_its_own_with_resets_and_predecessors(
        series: list[dict[str, Any]], staleness: int) -> None:
    assert_same(at_once(series, MetricType.COUNTER, staleness),
                per_series(series, MetricType.COUNTER, staleness))


@settings(max_examples=200, deadline=None)
@given(SERIES, STALENESS)
def test_gauges_at_once_equal_each_series_on_its_own(series: list[dict[str, Any]],
                                                     staleness: int) -> None:
    for s in series:
        s["prev"] = None
    assert_same(at_once(series, MetricType.GAUGE, staleness),
                per_series(series, MetricType.GAUGE, staleness))


def test_a_counter_that_resets_mid_day_has_the_same_increase_and_resets_at_once() -> None:
    h = 3_600_000_000
    t0 = int(BOUNDS[0])
    series = [
        {"t": [t0 + h, t0 + 2 * h, t0 + 3 * h], "v": [100.0, 130.0, 20.0], "lim": [math.nan] * 3,
         "prev": 90.0},
        {"t": [t0 + h], "v": [5.0], "lim": [math.nan], "prev": None},
        {"t": [], "v": [], "lim": [], "prev": None},
    ]
    got = at_once(series, MetricType.COUNTER, 900_000_000)
    # 90 -> 100 -> 130 adds 40, then the reset to 20 adds 20: 60 with one reset.
    assert (got[0][0]["increase"], got[0][0]["resets"]) == (60, 1)
    assert (got[1][0]["increase"], got[1][0]["samples"]) == (0, 1)
    assert got[2][0]["samples"] == 0 and got[2][0]["covered_us"] == 0
    assert_same(got, per_series(series, MetricType.COUNTER, 900_000_000))


def test_interval_series_are_refused_as_aggregate_days_refuses_them() -> None:
    with pytest.raises(ValueError, match="buckets"):
        aggregate_days_many(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                            np.zeros(0), None, 1, BOUNDS, metric_type=MetricType.INTERVAL,
                            staleness_us=1)


def row_path_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The daily table a row at a time, as day_report_values defines each row (the old path)."""
    records = [{"date": r["date"], "source": r["source"], "metric": r["metric"],
                "metric_type": r["metric_type"],
                **day_report_values(r, MetricType(r["metric_type"]))}
               for r in rows.to_dict("records")]
    df = pd.DataFrame.from_records(records, columns=DAILY_COLUMNS)
    for col in ("samples", "increase", "resets"):
        try:
            df[col] = df[col].astype("Int64")
        except (TypeError, ValueError):
            df[col] = df[col].astype("Float64")
    for col in ("min", "max", "mean", "limit", "peak_pct", "coverage_pct", "twa",
                "warning_minutes", "critical_minutes"):
        df[col] = df[col].astype("Float64")
    return df


def labelled(days: list[list[dict[str, Any]]], mtype: str) -> list[dict[str, Any]]:
    return [{"source": "acme", "metric": f"m:{p}", "metric_type": mtype, "date": f"d{j}", **row}
            for p, rows in enumerate(days) for j, row in enumerate(rows)]


@settings(max_examples=100, deadline=None)
@given(st.lists(one_series(INTEGRAL), max_size=8), st.lists(one_series(ANY_FLOAT), max_size=8),
       STALENESS)
def test_the_daily_table_column_wise_equals_each_rows_figures(
        counters: list[dict[str, Any]], gauges: list[dict[str, Any]], staleness: int) -> None:
    for s in gauges:
        s["prev"] = None
    records = (labelled(per_series(counters, MetricType.COUNTER, staleness), "counter")
               + labelled(per_series(gauges, MetricType.GAUGE, staleness), "gauge"))
    if not records:
        return
    rows = pd.DataFrame.from_records(records)
    pd.testing.assert_frame_equal(daily_table(rows), row_path_table(rows))
    # Interval rows (SPEC 10) with whole increases take the same columns.
    rows["metric_type"] = ["interval" if m == "counter" else m for m in rows["metric_type"]]
    pd.testing.assert_frame_equal(daily_table(rows), row_path_table(rows))


def test_a_fractional_counter_increase_keeps_its_decimals_in_the_daily_table() -> None:
    series = [{"t": [int(BOUNDS[0]) + 1, int(BOUNDS[0]) + 2], "v": [0.1, 0.3],
               "lim": [math.nan] * 2, "prev": None}]
    rows = pd.DataFrame.from_records(
        labelled(per_series(series, MetricType.COUNTER, 60_000_000), "counter"))
    table = daily_table(rows)
    assert table["increase"].dtype == "Float64" and table["increase"].tolist()[0] == 0.2
    pd.testing.assert_frame_equal(table, row_path_table(rows))
