"""Many series at once (issue 26, very wide vendors): the vectorised day rows give exactly
what `aggregate_days` gives each series on its own, for gauges and counters, and the daily
table built column-wise exactly what `day_report_values` gives each row."""

from __future__ import annotations

import math
from decimal import Decimal
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
from tests.factories import examples

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


@settings(max_examples=examples(200), deadline=None)
@given(SERIES, STALENESS)
def test_counters_at_once_equal_each_series_on_its_own_with_resets_and_predecessors(
        series: list[dict[str, Any]], staleness: int) -> None:
    assert_same(at_once(series, MetricType.COUNTER, staleness),
                per_series(series, MetricType.COUNTER, staleness))


@settings(max_examples=examples(200), deadline=None)
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


@settings(max_examples=examples(100), deadline=None)
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


# Billing reads each series' month of day rows as numpy columns (dayrows.DayRows) instead of
# a DataFrame per series: every figure must be what the DataFrame gave.
AGGREGATIONS = ["increase", "sum", "peak", "last", "twa", "unit_hours"]


def old_days_by_series(rows: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """The per-series DataFrames billing built before (one stable sort by date)."""
    ordered = rows.sort_values("date", kind="stable")
    return {(str(k[0]), str(k[1])): ordered.iloc[at].reset_index(drop=True)
            for k, at in ordered.groupby(["source", "metric"], sort=False).indices.items()}


def dated(days: list[list[dict[str, Any]]], mtype: str, blanks: bool,
          newest_first: bool = True) -> list[dict[str, Any]]:
    """Day rows with real dates, newest first (so the sort matters) or oldest first (as
    series_day_rows lists them); NaN as None if `blanks` (a stored rollup read back before
    NaN was kept)."""
    from datetime import date, timedelta
    out = []
    for p, rows in enumerate(days):
        for j, row in (reversed if newest_first else list)(list(enumerate(rows))):
            if blanks:
                row = {k: None if isinstance(v, float) and math.isnan(v) and k != "twa_num"
                       else v for k, v in row.items()}
            out.append({"source": "acme", "metric": f"{mtype}:{p}", "metric_type": mtype,
                        "date": date(2026, 9, 1) + timedelta(days=j), **row})
    return out


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(st.one_of(one_series(INTEGRAL), one_series(DECIMAL), one_series(ANY_FLOAT)),
                max_size=6),
       st.lists(one_series(ANY_FLOAT), max_size=6), STALENESS, st.booleans(),
       st.sampled_from(["newest first", "oldest first", "by day"]))
def test_billing_figures_from_numpy_columns_equal_those_from_each_series_dataframe(
        counters: list[dict[str, Any]], gauges: list[dict[str, Any]], staleness: int,
        blanks: bool, order: str) -> None:
    # Each series' rows newest first (sorted by date first), oldest first (as the day rows
    # frame lists them: taken as they are), or all series' first days, then their second
    # ones: the same rows, series and order as one stable sort by date gives.
    from reports.compute.billing import period_counts
    from reports.compute.daily import combine_days
    from reports.compute.dayrows import split_series
    from reports.compute.quantities import cumulative_quantities
    for s in gauges:
        s["prev"] = None
    newest = order == "newest first"
    records = (dated(per_series(counters, MetricType.COUNTER, staleness), "counter", blanks,
                     newest)
               + dated(per_series(gauges, MetricType.GAUGE, staleness), "gauge", blanks,
                       newest))
    if order == "by day":
        records.sort(key=lambda r: r["date"])
    elif order == "oldest first":  # every other series from its second day: listed later
        first_day = min((r["date"] for r in records), default=None)
        records = [r for r in records
                   if r["date"] != first_day or not r["metric"].endswith(("1", "3", "5"))]
    if not records:
        assert split_series(pd.DataFrame()) == {}
        return
    rows = pd.DataFrame.from_records(records)
    old, new = old_days_by_series(rows), split_series(rows)
    assert list(new) == list(old)
    for key, frame in old.items():
        cols = new[key]
        assert len(cols) == len(frame)
        want, got = combine_days(frame), combine_days(cols)
        assert list(got) == list(want)
        assert all(same(got[k], want[k]) for k in want), key
        counts = {k: want[k] for k in ("samples", "resets", "covered_us", "length_us")}
        assert period_counts(cols) == counts and period_counts(frame) == counts
        for agg in AGGREGATIONS:
            if blanks and agg == "last":
                continue  # None readings: a stored row never lacks a last value it had
            assert cumulative_quantities(cols, agg) == cumulative_quantities(frame, agg)
            mid = int(frame["day_start_us"].iloc[len(frame) // 2]) + 1
            assert (cumulative_quantities(cols, agg, now_us=mid)
                    == cumulative_quantities(frame, agg, now_us=mid))
        half = cols.rows(1, len(cols))
        assert same(combine_days(half)["samples"],
                    combine_days(frame.iloc[1:].reset_index(drop=True))["samples"])


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.one_of(st.floats(), st.integers(-10**17, 10**17).map(float),
                          st.integers(-10**9, 10**9).map(lambda k: k / 1000)), max_size=50))
def test_csv_cells_of_a_float_column_are_each_floats_own_cell(values: list[float]) -> None:
    from reports.render.csv import _float_cell, _float_cells
    assert _float_cells(np.array(values, dtype=np.float64)) == [_float_cell(v) for v in values]


# A few values, repeated: columns of limits, counts and names repeat theirs.
_FEW_FLOATS = st.sampled_from([0.0, -0.0, 1.0, 0.5, 100.0, 1e-5, 1e16, 2.0**60, -3.25,
                               float("nan"), float("inf"), -float("inf"), 0.1 + 0.2])


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.one_of(_FEW_FLOATS, st.floats()), max_size=60),
       st.lists(st.one_of(st.sampled_from([0, 1, -1, 1440, 2**63 - 1, -2**63]),
                          st.integers(-2**63, 2**63 - 1)), max_size=60),
       st.lists(st.one_of(st.sampled_from(["ws-001", "=cmd", "a,b", "", "@x", "é"]),
                          st.text(max_size=5)), max_size=60),
       st.lists(st.booleans(), max_size=60))
def test_column_cells_format_each_distinct_value_as_each_value_alone(
        floats: list[float], ints: list[int], texts: list[str], missing: list[bool]) -> None:
    # Float, integer (plain and nullable) and text columns, each with values repeated and
    # some missing: the cells are format_cell of each value, as one value at a time gave.
    from reports.render.csv import column_cells, format_cell
    gaps = missing[:len(ints)] + [False] * (len(ints) - len(missing[:len(ints)]))
    nullable = pd.array([None if m else v for v, m in zip(ints, gaps, strict=True)],
                        dtype="Int64")
    for col in (pd.Series(floats, dtype="float64"), pd.Series(floats, dtype="Float64"),
                pd.Series(ints, dtype="int64"), pd.Series(nullable),
                pd.Series(texts, dtype="str"),
                pd.Series([None if m else t for t, m in zip(texts, missing, strict=False)],
                          dtype="str")):
        assert column_cells(col) == [format_cell(v) for v in col.tolist()]


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.one_of(st.floats(-1e15, 1e15), st.integers(-10**9, 10**9).map(
    lambda k: k / 100)), max_size=40),
       st.lists(st.one_of(st.integers(0, 2**62), st.integers(0, 10**9).map(
           lambda k: k * 600_000)), max_size=40))
def test_readable_peaks_and_band_minutes_at_once_equal_one_at_a_time(
        peaks: list[float], micros: list[int]) -> None:
    from etl.textutil import round_readable
    from reports.compute.daily import minutes_of
    from reports.compute.table import minutes_many, readable_many
    got = readable_many(np.array(peaks, dtype=np.float64)).tolist()
    assert all(same(g, round_readable(p)) and math.copysign(1, g) == math.copysign(
        1, round_readable(p)) for g, p in zip(got, peaks, strict=True))
    assert minutes_many(np.array(micros, dtype=np.int64)).tolist() == [
        minutes_of(u) for u in micros]


@settings(max_examples=examples(300), deadline=None)
@given(st.dictionaries(st.sampled_from(["min", "max", "sum", "increase", "first_value",
                                        "last_value", "samples", "day_start_us"]),
                       st.one_of(st.floats(), st.integers(-2**63, 2**63 - 1), st.none()),
                       min_size=1))
def test_a_stored_day_row_reads_back_as_json_reads_it(row: dict[str, Any]) -> None:
    # Rows are json.dumps of aggregate_days() rows: their integers are int64 counts.
    import json

    from etl.store.rollups import decode_row
    from etl.vendors.parsing import MAX_READING
    text = json.dumps(row)
    got, want = decode_row(text), json.loads(text)
    lo, hi = want.get("min") or 0, want.get("max") or 0
    if lo < -MAX_READING or hi > MAX_READING:
        assert got is None
        return
    assert got is not None and list(got) == list(want)
    assert all(same(got[k], want[k]) for k in want)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.lists(ANY_FLOAT, max_size=300), max_size=8))
def test_running_sums_restart_at_each_series_as_its_own_cumsum(series: list[list[float]]) -> None:
    from reports.compute.many import _segmented_cumsum
    x = np.array([v for s in series for v in s], dtype=np.float64)
    starts = np.cumsum([0] + [len(s) for s in series])
    want = [v for s in series for v in np.cumsum(np.array(s, dtype=np.float64)).tolist()]
    assert _segmented_cumsum(x, starts).tolist() == want


STORED_FIGURE = st.one_of(st.floats(), st.integers(-2**63, 2**63 - 1), st.none(),
                          st.integers(-2**70, 2**70))


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["min", "max", "sum", "increase", "samples",
                                                  "first_value", "day_start_us"]),
                                STORED_FIGURE, min_size=1), max_size=6))
def test_a_month_of_stored_day_rows_reads_back_as_each_row_alone_reads(
        rows: list[dict[str, Any]]) -> None:
    # Read at once (one JSON array), the rows are what decode_row gives each text, None
    # (rebuild) for a reading beyond MAX_READING, whatever orjson refuses read by json.
    import json

    from etl.store.rollups import decode_row, decode_rows
    texts = [json.dumps(row) for row in rows]
    got, want = decode_rows(texts), [decode_row(text) for text in texts]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None and w is not None:
            assert list(g) == list(w) and all(same(g[k], w[k]) for k in w)


def _frame_of_dicts(series: list[Any], rows: list[list[dict[str, Any]]], days: list[Any]
                    ) -> pd.DataFrame:
    """The day rows' frame as built before (a dict per row), the reference for _frame."""
    from reports.compute.daily import DAY_COLUMNS
    records: list[dict[str, object]] = []
    for info, series_rows in zip(series, rows, strict=True):
        labels = {"source": info.source, "metric": info.metric,
                  "metric_type": info.metric_type.value}
        records += [{**labels, "date": day, **row}
                    for day, row in zip(days, series_rows, strict=True)]
    return pd.DataFrame.from_records(
        records, columns=["source", "metric", "metric_type", "date", *DAY_COLUMNS])


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.lists(st.dictionaries(st.sampled_from(["samples", "min", "max", "increase",
                                                          "first_at_us", "last_value"]),
                                         st.one_of(st.floats(), st.integers(0, 2**62),
                                                   st.none(), st.integers(-2**70, 2**70),
                                                   st.booleans())),
                         min_size=3, max_size=3), min_size=1, max_size=4), st.booleans())
def test_the_day_rows_frame_has_the_values_and_types_a_frame_of_dicts_has(
        figures: list[list[dict[str, Any]]], complete: bool) -> None:
    # Rows hold every figure (as computed or stored now) or some only (stored before a
    # column existed): the frame built a column at a time (or from tuples where it cannot
    # be) equals the one built from dicts, also for ints beyond 64 bits, None and bools.
    from datetime import date

    from reports.compute.daily import DAY_COLUMNS
    from reports.pipelines.days import SeriesInfo, _frame
    days = [date(2026, 9, d) for d in (1, 2, 3)]
    series = [SeriesInfo(f"s{i}", "m", "gauge", MetricType.GAUGE, 0) for i in range(len(figures))]
    rows = [[({c: row.get(c, float(i)) for c in DAY_COLUMNS} if complete else row)
             for i, row in enumerate(day_rows)] for day_rows in figures]
    got, want = _frame(series, rows, days), _frame_of_dicts(series, rows, days)
    pd.testing.assert_frame_equal(got, want)
    assert all(same(g, w) for c in want for g, w in zip(got[c].tolist(), want[c].tolist(),
                                                        strict=True))
    # Then some of the same row objects again, in another order (the billing report's rows
    # after the daily ones'): a column of ints and floats may hold ints only now.
    again = list(reversed(range(len(series))))[::2]
    sub_series, sub_rows = [series[i] for i in again], [rows[i] for i in again]
    got, want = _frame(sub_series, sub_rows, days), _frame_of_dicts(sub_series, sub_rows, days)
    pd.testing.assert_frame_equal(got, want)
    assert all(same(g, w) for c in want for g, w in zip(got[c].tolist(), want[c].tolist(),
                                                        strict=True))


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(st.decimals(allow_nan=False, allow_infinity=False, places=8),
                 st.floats(-1e12, 1e12, allow_nan=False).map(lambda f: Decimal(repr(f))),
                 st.integers(-10**20, 10**20).map(Decimal)))
def test_a_quantity_rounds_as_it_does_inside_the_pricing_context(q: Decimal) -> None:
    from decimal import ROUND_HALF_UP, localcontext

    from reports.compute.pricing import PRICING_CONTEXT, plain
    from reports.compute.quantities import QUANTITY_STEP, round_quantity
    with localcontext(PRICING_CONTEXT):
        want = plain(q.quantize(QUANTITY_STEP, rounding=ROUND_HALF_UP))
    got = round_quantity(q)
    assert str(got) == str(want)


CSV_CELL = st.one_of(st.text(alphabet=st.sampled_from(list('ab,"\r\n\x00 -.1é')), max_size=4),
                     st.sampled_from(["", "0", "1.5", "2026-09-01", "ws-001"]))


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(1, 4).flatmap(lambda k: st.tuples(
    st.lists(CSV_CELL, min_size=k, max_size=k),
    st.lists(st.lists(CSV_CELL, min_size=k, max_size=k), max_size=6))),
    st.lists(st.lists(st.integers(0, 5), max_size=6), max_size=3))
def test_csv_parts_are_what_the_csv_writer_writes_for_any_cells(
        table: tuple[list[str], list[list[str]]], parts: list[list[int]]) -> None:
    # Cells joined by commas where none needs quoting, the writer's own text where one does.
    import csv
    import io

    from reports.render.csv import csv_parts
    header, rows = table
    parts = [[i for i in part if i < len(rows)] for part in parts]
    columns = [[row[k] for row in rows] for k in range(len(header))]

    def written(table_rows: list[list[str]]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(table_rows)
        return buf.getvalue()

    want = [written([header] + [rows[i] for i in part]) for part in parts]
    assert csv_parts(header, columns, parts, len(rows)) == want


def per_row_cumulative(days: dict[str, list[Any]], aggregation: str, sample_t: np.ndarray,
                       sample_value: np.ndarray, now_us: int | None) -> list[Decimal | None]:
    """cumulative_quantities as it was before: a record per day row, every aggregation in one
    loop (the reference for the per-aggregation loops)."""
    from decimal import localcontext

    from etl.config import Aggregation
    from reports.compute.pricing import PRICING_CONTEXT
    from reports.compute.quantities import nearest_rank_p95, to_decimal
    agg = Aggregation(aggregation)
    out: list[Decimal | None] = []
    total: Decimal | None = None
    twa_num, covered, last = 0.0, 0, None
    for i in range(len(days["day_start_us"])):
        row = {k: v[i] for k, v in days.items()}
        if now_us is not None and int(row["day_start_us"]) >= now_us:
            out.append(None)
            continue
        samples = int(row["samples"])
        if agg in (Aggregation.INCREASE, Aggregation.SUM):
            total = (total or Decimal(0)) + to_decimal(row["increase"])
        elif agg is Aggregation.PEAK:
            if samples:
                value = to_decimal(row["max"])
                total = value if total is None or value > total else total
        elif agg is Aggregation.LAST:
            if samples:
                last = row["last_value"]
            total = None if last is None else to_decimal(last)
        elif agg in (Aggregation.TWA, Aggregation.UNIT_HOURS):
            twa_num += float(row["twa_num"])
            covered += int(row["covered_us"])
            if covered:
                with localcontext(PRICING_CONTEXT):
                    integral = to_decimal(twa_num)
                    total = (integral * 1_000_000 / covered if agg is Aggregation.TWA
                             else integral / 3600)
        elif agg is Aggregation.P95:
            upto = int(np.searchsorted(sample_t, int(row["day_end_us"]), side="left"))
            p = nearest_rank_p95(sample_value[:upto])
            total = None if p is None else to_decimal(p)
        out.append(total)
    return out


DAY_FIGURES = st.fixed_dictionaries({
    "samples": st.integers(0, 3),
    "increase": st.one_of(st.integers(-10**18, 10**18), ANY_FLOAT, st.floats(0, 1e-3),
                          st.decimals(places=6, min_value=-10**9, max_value=10**9)),
    "max": st.one_of(ANY_FLOAT, st.sampled_from([0.0, -0.0, 1e-7, 2.5, math.inf, -math.inf]),
                     st.integers(-10**6, 10**6)),
    "last_value": st.one_of(ANY_FLOAT, st.none()),
    "twa_num": ANY_FLOAT,
    "covered_us": st.integers(0, DAY_US),
})


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(DAY_FIGURES, max_size=8), st.sampled_from(AGGREGATIONS + ["p95"]),
       st.lists(st.tuples(st.integers(10 * DAY_US, 20 * DAY_US), ANY_FLOAT), max_size=40),
       st.one_of(st.none(), st.integers(10 * DAY_US, 20 * DAY_US)), st.booleans())
def test_a_rules_cumulative_quantities_are_what_a_record_per_day_row_gave(
        figures: list[dict[str, Any]], aggregation: str, samples: list[tuple[int, float]],
        now_us: int | None, frame: bool) -> None:
    # Exactly the same Decimals, digit for digit, as the loop over one record per day row,
    # for every aggregation, days before and after `now`, from a DataFrame or columns.
    from etl.config import Aggregation
    from reports.compute.dayrows import DayRows
    from reports.compute.quantities import cumulative_quantities
    keys = ["samples", "increase", "max", "last_value", "twa_num", "covered_us"]
    days = {k: [f[k] for f in figures] for k in keys}
    days["day_start_us"] = [(10 + i) * DAY_US for i in range(len(figures))]
    days["day_end_us"] = [(11 + i) * DAY_US for i in range(len(figures))]
    ordered = sorted(samples)
    t = np.array([s[0] for s in ordered], dtype=np.int64)
    v = np.array([s[1] for s in ordered], dtype=np.float64)
    given_days: Any = (pd.DataFrame(days) if frame and figures else
                       DayRows({k: np.array(x, dtype=object if k in ("increase", "last_value")
                                             else None) for k, x in days.items()},
                               len(figures)))
    # The values each row holds as the function gets them (a frame reads None as NaN).
    want = per_row_cumulative({k: given_days[k].tolist() for k in days}, aggregation, t, v,
                              now_us)
    got = cumulative_quantities(given_days, Aggregation(aggregation), sample_t=t, sample_value=v,
                                now_us=now_us)
    assert [None if g is None else str(g) for g in got] == [
        None if w is None else str(w) for w in want]
