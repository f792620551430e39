"""Report arithmetic on plain arrays: days in a zone, counters, coverage, gauge extras."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import InputError
from etl.timefmt import to_micros
from reports.compute.daily import aggregate_days, combine_days, coverage_pct, day_report_values
from reports.periods import days_period, month_period, parse_date, parse_month, resolve_tz
from tests.factories import examples

BERLIN = ZoneInfo("Europe/Berlin")
H = 3600 * 1_000_000  # one hour in microseconds
MIN = 60 * 1_000_000


def us(text: str) -> int:
    return to_micros(datetime.fromisoformat(text).replace(tzinfo=UTC))


def test_berlin_spring_forward_day_has_23_hours_and_starts_at_local_midnight() -> None:
    period = days_period(date(2026, 3, 29), date(2026, 3, 30), BERLIN)
    assert period.start_us == us("2026-03-28T23:00:00")  # 00:00 CET
    assert period.end_us == us("2026-03-29T22:00:00")  # 00:00 CEST next day
    assert list(period.day_seconds()) == [23 * 3600]


def test_berlin_fall_back_day_has_25_hours() -> None:
    period = days_period(date(2026, 10, 24), date(2026, 10, 27), BERLIN)
    assert list(period.day_seconds()) == [24 * 3600, 25 * 3600, 24 * 3600]
    assert period.bounds[1] == us("2026-10-24T22:00:00")
    assert period.bounds[2] == us("2026-10-25T23:00:00")


def test_month_period_covers_every_day_of_the_month() -> None:
    period = month_period(date(2026, 3, 1), BERLIN)
    assert len(period.days) == 31
    assert int(period.day_seconds().sum()) == 31 * 86400 - 3600


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "26-01", "2026-00", "march"])
def test_bad_month_is_an_input_error(bad: str) -> None:
    with pytest.raises(InputError, match="--month"):
        parse_month(bad)


def test_bad_date_and_zone_are_input_errors() -> None:
    with pytest.raises(InputError, match="--date: '2026-02-30'"):
        parse_date("2026-02-30")
    with pytest.raises(InputError, match="Mars/Olympus"):
        resolve_tz("Mars/Olympus")


def day_bounds(n: int, start: str = "2026-05-01T00:00:00") -> np.ndarray:
    return np.array([us(start) + i * 24 * H for i in range(n + 1)], dtype=np.int64)


def test_a_counter_reset_mid_day_adds_the_reading_after_the_reset() -> None:
    b = day_bounds(1)
    t = b[0] + np.array([1, 2, 3, 4]) * H
    rows = aggregate_days(t, np.array([100.0, 150, 30, 50]), None, b,
                          metric_type="counter", staleness_us=600 * 1_000_000, prev_value=90.0)
    # 100-90 + 150-100 + 30 (reset) + 50-30
    assert int(rows["increase"][0]) == 10 + 50 + 30 + 20
    assert int(rows["resets"][0]) == 1
    assert rows["increase"].dtype == np.int64


def test_first_sample_ever_adds_nothing_and_a_gap_goes_to_the_day_after_it() -> None:
    b = day_bounds(4)
    t = np.array([b[0] + 23 * H, b[3] + 1 * H, b[3] + 2 * H])
    rows = aggregate_days(t, np.array([100.0, 400, 410]), None, b,
                          metric_type="counter", staleness_us=600 * 1_000_000)
    assert list(rows["increase"]) == [0, 0, 0, 310]
    assert list(rows["samples"]) == [1, 0, 0, 2]
    assert list(rows["covered_us"]) == [600 * 1_000_000, 0, 0, 2 * 600 * 1_000_000]


def test_duplicates_and_out_of_order_samples_count_once() -> None:
    b = day_bounds(1)
    t = b[0] + np.array([3, 1, 2, 1, 3]) * H
    v = np.array([30.0, 10, 20, 10, 30])
    rows = aggregate_days(t, v, None, b, metric_type="counter", staleness_us=H)
    assert int(rows["samples"][0]) == 3
    assert int(rows["increase"][0]) == 20
    assert int(rows["covered_us"][0]) == 3 * H


def test_gauge_day_figures_time_weighted_average_and_alert_minutes() -> None:
    b = day_bounds(1)
    t = b[0] + np.array([0, 8, 16]) * H
    rows = aggregate_days(t, np.array([50.0, 80, 95]), np.array([100.0, 100, 100]), b,
                          metric_type="gauge", staleness_us=10 * H)
    vals = day_report_values(rows.iloc[0], "gauge")
    assert vals["samples"] == 3
    assert (vals["min"], vals["max"], vals["limit"], vals["peak_pct"]) == (50, 95, 100, 95.0)
    assert vals["mean"] == 75
    assert vals["twa"] == 75  # 8 h at each value
    assert vals["warning_minutes"] == 16 * 60  # 80 and 95 are >= 75 %
    assert vals["critical_minutes"] == 8 * 60  # only 95 is >= 90 %
    assert vals["coverage_pct"] == 100.0
    assert vals["increase"] is None and vals["resets"] is None


def test_twa_differs_from_the_plain_mean_when_samples_are_uneven() -> None:
    b = day_bounds(1)
    t = b[0] + np.array([0, 23]) * H
    rows = aggregate_days(t, np.array([10.0, 100]), np.array([200.0, 200]), b,
                          metric_type="gauge", staleness_us=24 * H)
    vals = day_report_values(rows.iloc[0], "gauge")
    assert vals["mean"] == 55
    assert vals["twa"] == pytest.approx((10 * 23 + 100 * 1) / 24)
    assert vals["limit"] == 200 and vals["peak_pct"] == 50.0


def test_coverage_is_the_union_of_windows_including_a_sample_before_the_day() -> None:
    b = day_bounds(1)
    # One sample 5 minutes before midnight covers the first 5 minutes (10 min staleness);
    # two overlapping windows at noon cover 12:00-12:15.
    t = np.array([b[0] - 5 * MIN, b[0] + 12 * H, b[0] + 12 * H + 5 * MIN])
    rows = aggregate_days(t, np.array([1.0, 2, 3]), None, b,
                          metric_type="gauge", staleness_us=10 * MIN)
    assert int(rows["samples"][0]) == 2
    assert int(rows["covered_us"][0]) == 20 * MIN
    assert day_report_values(rows.iloc[0], "gauge")["coverage_pct"] == round(20 / 1440 * 100, 2)


def test_coverage_rounds_half_up() -> None:
    assert coverage_pct(1, 8) == 12.5
    assert coverage_pct(1, 800) == 0.13  # 0.125 -> 0.13
    assert coverage_pct(0, 10) == 0.0


def naive_increase(t: list[int], v: list[int]) -> tuple[int, int]:
    """The SPEC 5 definition, one sample at a time (first stored value of a timestamp wins)."""
    first: dict[int, int] = {}
    for ti, vi in zip(t, v, strict=True):
        first.setdefault(ti, vi)
    total = resets = 0
    prev = None
    for ti in sorted(first):
        vi = first[ti]
        if prev is not None:
            if vi >= prev:
                total += vi - prev
            else:
                total += vi
                resets += 1
        prev = vi
    return total, resets


@settings(max_examples=examples(150), deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10 * 24 * 60 - 1), st.integers(0, 10**12)),
             min_size=0, max_size=60),
    st.integers(1, 9),
)
def test_daily_increases_add_up_to_the_month(points: list[tuple[int, int]], split: int) -> None:
    b = day_bounds(10)
    t = [int(b[0]) + m * MIN for m, _ in points]
    v = [val for _, val in points]
    days = aggregate_days(np.array(t, dtype=np.int64), np.array(v, dtype=np.float64), None, b,
                          metric_type="counter", staleness_us=30 * MIN)
    whole = aggregate_days(np.array(t, dtype=np.int64), np.array(v, dtype=np.float64), None,
                           b[[0, -1]], metric_type="counter", staleness_us=30 * MIN)
    expected, resets = naive_increase(t, v)
    totals = combine_days(days)
    assert totals["increase"] == int(whole["increase"][0]) == expected
    assert totals["resets"] == resets
    assert totals["covered_us"] == int(whole["covered_us"][0])
    # Reading in chunks (samples from `staleness` before the chunk, plus the reading before
    # them) gives the same day rows: what the database reader does.
    t_arr, v_arr = np.array(t, dtype=np.int64), np.array(v, dtype=np.float64)
    order = np.argsort(t_arr, kind="stable")
    ts, vs = t_arr[order], v_arr[order]
    keep = np.concatenate(([True], np.diff(ts) != 0)) if len(ts) else np.zeros(0, bool)
    ts, vs = ts[keep], vs[keep]
    parts = []
    for lo, hi in ((0, split), (split, 10)):
        start = int(b[lo]) - 30 * MIN
        sel = (ts >= start) & (ts < b[hi])
        before = vs[ts < start]
        parts.append(aggregate_days(ts[sel], vs[sel], None, b[lo:hi + 1],
                                    metric_type="counter", staleness_us=30 * MIN,
                                    prev_value=float(before[-1]) if len(before) else None))
    chunked = np.concatenate([p["increase"].to_numpy() for p in parts])
    assert list(chunked) == list(days["increase"])
    assert list(np.concatenate([p["covered_us"] for p in parts])) == list(days["covered_us"])


def test_cumulative_quantity_stops_at_now_for_a_month_in_progress() -> None:
    import pandas as pd

    from etl.config import Aggregation
    from reports.compute.quantities import cumulative_quantities

    day = 86_400_000_000
    days = pd.DataFrame(
        {
            "day_start_us": [0, day, 2 * day, 3 * day],
            "increase": [5, 7, 0, 0],
            "max": [10.0, 17.0, float("nan"), float("nan")],
            "samples": [2, 2, 0, 0],
        }
    )
    assert cumulative_quantities(days, Aggregation.INCREASE) == [Decimal(5), Decimal(12), Decimal(12), Decimal(12)]
    # "now" is during day 2 (index 1): later days have not begun and are left out.
    assert cumulative_quantities(days, Aggregation.INCREASE, now_us=day + 5) == [Decimal(5), Decimal(12), None, None]
    assert cumulative_quantities(days, Aggregation.PEAK, now_us=day + 5) == [Decimal(10), Decimal(17), None, None]


def test_fractional_counter_adds_the_decimals_the_vendor_sent() -> None:
    from etl.config import Aggregation
    from reports.compute.quantities import cumulative_quantities

    b = day_bounds(2)
    t = np.array([b[0] + 1 * H, b[0] + 2 * H, b[0] + 3 * H, b[1] + 1 * H, b[1] + 2 * H])
    v = np.array([1_000_000_000.1, 1_000_000_000.3, 0.25, 0.75, 1.5])
    rows = aggregate_days(t, v, None, b, metric_type="counter", staleness_us=600 * 1_000_000,
                          prev_value=999_999_999.9)
    # Day 1: 0.2 + 0.2 + 0.25 (reset); day 2: 0.5 + 0.75. The doubles' own difference
    # 1000000000.3 - 1000000000.1 would be 0.19999992847442627.
    assert list(rows["increase"]) == [0.65, 1.25]
    assert list(rows["resets"]) == [1, 0]
    whole = aggregate_days(t, v, None, b[[0, -1]], metric_type="counter",
                           staleness_us=600 * 1_000_000, prev_value=999_999_999.9)
    assert float(whole["increase"][0]) == 1.9
    assert combine_days(rows)["increase"] == 1.9
    assert cumulative_quantities(rows, Aggregation.INCREASE) == [Decimal("0.65"), Decimal("1.9")]
    vals = day_report_values(rows.iloc[0], "counter")
    assert vals["increase"] == 0.65 and vals["resets"] == 1


def test_billing_quantity_and_overage_of_fractional_days_print_without_trailing_zero() -> None:
    import pandas as pd

    from etl.config import Aggregation, BillingRule
    from reports.compute.pricing import charge
    from reports.compute.quantities import cumulative_quantities, month_quantity
    from reports.render.csv import format_cell

    days = pd.DataFrame({"day_start_us": [0, 86_400_000_000], "increase": [100.5, 99.5],
                         "max": [np.nan, np.nan], "samples": [3, 3]})
    cum = cumulative_quantities(days, Aggregation.INCREASE)
    assert cum == [Decimal("100.5"), Decimal(200)]
    assert format_cell(month_quantity(cum)) == "200"  # not 200.0
    rule = BillingRule("rules", "invocations", Aggregation.INCREASE, Decimal(100),
                       Decimal("0.002"), "USD")
    billed = charge(month_quantity(cum), rule)
    assert (format_cell(billed.overage), format_cell(billed.amount)) == ("100", "0.20")


def naive_decimal_days(t: list[int], k: list[int], bounds: np.ndarray) -> list[Decimal]:
    """SPEC 5 one sample at a time on the decimal readings k/100, summed per day."""
    first: dict[int, int] = {}
    for ti, ki in zip(t, k, strict=True):
        first.setdefault(ti, ki)
    days = [Decimal(0)] * (len(bounds) - 1)
    prev = None
    for ti in sorted(first):
        vi = Decimal(first[ti]) / 100
        add = Decimal(0) if prev is None else (vi - prev if vi >= prev else vi)
        j = int(np.searchsorted(bounds, ti, side="right")) - 1
        days[j] += add
        prev = vi
    return days


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10 * 24 * 60 - 1), st.integers(0, 10**11)),
                min_size=0, max_size=60))
def test_fractional_daily_increases_are_exact_decimals_that_add_up_to_the_month(
        points: list[tuple[int, int]]) -> None:
    from etl.config import Aggregation
    from reports.compute.daily import exact_total
    from reports.compute.quantities import cumulative_quantities

    b = day_bounds(10)
    t = [int(b[0]) + m * MIN for m, _ in points]
    hundredths = [k for _, k in points]
    v = np.array([k / 100 for k in hundredths], dtype=np.float64)  # as parsed from JSON text
    days = aggregate_days(np.array(t, dtype=np.int64), v, None, b, metric_type="counter",
                          staleness_us=30 * MIN)
    expected = naive_decimal_days(t, hundredths, b)
    # Each day is the double nearest its exact decimal, so its CSV text is that decimal...
    assert [Decimal(repr(float(x))) for x in days["increase"]] == expected
    # ...and the month (billing quantity, combined days, one whole-period row) is their sum.
    month = sum(expected, Decimal(0))
    assert exact_total(days["increase"]) == month
    cum = cumulative_quantities(days, Aggregation.INCREASE)
    assert cum[-1] == month
    whole = aggregate_days(np.array(t, dtype=np.int64), v, None, b[[0, -1]],
                           metric_type="counter", staleness_us=30 * MIN)
    assert float(whole["increase"][0]) == float(month) == float(combine_days(days)["increase"])


def test_a_day_chart_of_a_series_without_samples_prints_no_warning(
        capfd: pytest.CaptureFixture[str]) -> None:
    import gc
    import warnings

    from reports.render.charts import series_day_chart

    b = day_bounds(1)
    # Garbage of earlier tests in this worker (an engine's pooled connections, say) is
    # collected now, not by a collection inside the block, whose warnings are not this code's.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for metric_type, limit in (("counter", None), ("gauge", None), ("gauge", 100.0)):
            svg = series_day_chart(np.zeros(0, dtype=np.int64), np.zeros(0), start_us=int(b[0]),
                                   end_us=int(b[1]), metric="m", metric_type=metric_type,
                                   limit=limit)
            assert svg.startswith("<svg")
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr().err == ""
