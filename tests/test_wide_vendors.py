"""Very wide vendors (issue 26): a daily report charts only the series a person reads first
(near their limits, billed, busiest; a bounded number), every series stays in its table."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from etl.vendors.types import MetricType, Observation, SampleValue
from reports.compute import charted
from reports.compute.charted import charted_rows
from reports.jobs import build_daily
from tests.factories import http_json_config, store


def day_table(rows: list[tuple[str, float | None, float | None, float | None]]) -> pd.DataFrame:
    """One day's rows: (metric, peak_pct, increase, max) of source `acme`."""
    return pd.DataFrame([{"source": "acme", "metric": m, "peak_pct": p, "increase": i, "max": x}
                         for m, p, i, x in rows])


def test_with_few_series_every_one_is_charted() -> None:
    table = day_table([("a", None, 1, 1), ("b", 95, None, 9), ("c", None, None, None)])
    assert charted_rows(table, [], most=3) == [0, 1, 2]


def test_near_limit_first_then_billed_then_busiest_in_table_order() -> None:
    table = day_table([
        ("quiet", None, 1, 1),        # 0
        ("gauge75", 75.0, None, 8),   # 1 near its limit (at the warning line, 75 %)
        ("billed", None, 2, 2),       # 2 billed, not busy
        ("busy", None, 500, 500),     # 3 busiest counter
        ("gauge99", 99.5, None, 9),   # 4 nearest its limit
        ("gauge74", 74.9, None, 700), # 5 below the warning line, a high level
        ("busy2", None, 400, 400),    # 6
    ])
    billed = [("acme", "billed"), ("other", "busy2")]  # another source's metric is not this one
    assert charted_rows(table, billed, most=4) == [1, 2, 3, 4]
    assert charted_rows(table, billed, most=2) == [1, 4]
    assert charted_rows(table, billed, most=5) == [1, 2, 3, 4, 6]


def test_a_wide_vendors_daily_html_charts_the_bounded_few_and_tables_every_series(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(charted, "MAX_CHARTS", 3)
    config = http_json_config("http://127.0.0.1:9")
    for hour in (1, 13):
        at = datetime(2026, 12, 5, hour, tzinfo=UTC)
        samples = [SampleValue("used", 9.5, 10.0, None, MetricType.GAUGE)] + [
            SampleValue(f"tokens:m{i}", float(i * hour), None, None, MetricType.COUNTER)
            for i in range(40)]
        store(engine, [Observation("acme", "http_json", at, "{}", tuple(samples), at)])
    (csv_path, html_path) = build_daily(engine, config, date(2026, 12, 5), date(2026, 12, 5),
                                        formats=["csv", "html"], out_dir=tmp_path)
    html = html_path.read_text()
    assert html.count("<svg") == 3
    captions = [part.split("</figcaption>")[0].rsplit(">", 1)[-1]
                for part in html.split("<figcaption")[1:]]
    # 95 % of its limit, then the busiest counters: m39 rose 39 x 12 = 468, m38 456.
    assert captions == ["acme / used", "acme / tokens:m38", "acme / tokens:m39"]
    assert "charts for 3 of 41 series: those near their limits, billed or busiest; every " \
           "series is in the table" in html
    assert html.count("acme / tokens:m") == 2 and html.count(">tokens:m") == 40
    assert len(csv_path.read_text().splitlines()) == 42
