"""Very wide vendors (issue 26): a daily report charts only the series a person reads first
(near their limits, billed, busiest; a bounded number), every series stays in its table."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, event

from etl.alerts.readings import latest_samples
from etl.vendors.types import MetricType, Observation, SampleValue
from reports.compute import charted
from reports.compute.charted import MAX_CHARTS, charted_rows
from reports.jobs import build_daily
from reports.pipelines import daily, write_daily
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


# Enough series that per-series statements (3 a series) or charts would show in the counts
# asserted below, few enough to store and report in a second or two.
WIDE = 300
HOURS = (1, 7, 13, 19)


def store_wide(engine: Engine) -> None:
    """`WIDE` counter series tokens:m0.. over 2026-12-05, 4 polls; m7 resets at 19:00."""
    for poll, hour in enumerate(HOURS):
        at = datetime(2026, 12, 5, hour, tzinfo=UTC)
        samples = [SampleValue("used", 2.0 + poll, 10.0, None, MetricType.GAUGE)] + [
            SampleValue(f"tokens:m{i}", 3.0 if (i == 7 and poll == 3) else float(i * (poll + 1)),
                        None, None, MetricType.COUNTER) for i in range(WIDE)]
        store(engine, [Observation("acme", "http_json", at, "{}", tuple(samples), at)])


def test_a_daily_report_of_300_series_has_each_ones_figures_and_a_table_of_every_series(
    engine: Engine, tmp_path: Path,
) -> None:
    config = http_json_config("http://127.0.0.1:9")
    store_wide(engine)
    (csv_path, html_path) = build_daily(engine, config, date(2026, 12, 5), date(2026, 12, 5),
                                        out_dir=tmp_path)
    rows = {r["metric"]: r for r in csv.DictReader(csv_path.open())}
    assert len(rows) == WIDE + 1
    stale_s = Decimal(str(config.sources[0].staleness))
    coverage = min(4 * stale_s, Decimal(86400)) * 100 / 86400
    cov_text = str(float(coverage.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)))
    # m299 rose 299 x 4 - 299 (its first reading starts the series): 897, no reset.
    assert {k: rows["tokens:m299"][k] for k in ("samples", "min", "max", "increase", "resets")} \
        == {"samples": "4", "min": "299", "max": "1196", "increase": "897", "resets": "0"}
    assert rows["tokens:m299"]["coverage_pct"].rstrip("0").rstrip(".") \
        == cov_text.rstrip("0").rstrip(".")
    # m7: 7, 14, 21, then 3 (a reset adds its reading): 14 + 3 = 17, one reset.
    assert (rows["tokens:m7"]["increase"], rows["tokens:m7"]["resets"]) == ("17", "1")
    assert (rows["tokens:m0"]["increase"], rows["tokens:m0"]["max"]) == ("0", "0")
    # The gauge: 2, 3, 4, 5 of a limit of 10, so a 50 % peak; mean 3.5.
    assert (rows["used"]["mean"], rows["used"]["peak_pct"], rows["used"]["limit"]) \
        == ("3.5", "50", "10")
    html = html_path.read_text()
    assert html.count("<svg") == MAX_CHARTS
    assert html.count(">tokens:m") == WIDE  # every series in the table
    assert "Other series" not in html


def test_past_its_bound_the_daily_table_lists_the_series_that_matter_and_sums_up_the_rest(
    engine: Engine, tmp_path: Path,
) -> None:
    config = http_json_config("http://127.0.0.1:9")
    store_wide(engine)
    result = daily(engine, config, date(2026, 12, 5), date(2026, 12, 5))
    (csv_path, html_path) = write_daily(result, ["csv", "html"], tmp_path, table_rows=50)
    assert len(csv_path.read_text().splitlines()) == WIDE + 2  # header, gauge, every series
    html = html_path.read_text()
    # The 50 busiest counters listed (no series near a limit, none billed), the rest not.
    listed = sorted(int(part.split("<")[0]) for part in html.split(">tokens:m")[1:])
    assert listed == list(range(WIDE - 50, WIDE))
    assert f"the table lists 50 of {WIDE + 1} series" in html
    # The other series summed up per metric: how many, and their exact total increase.
    others = WIDE - 50
    total = sum(3 * i for i in range(others)) - 21 + 17  # m7's reset
    assert ">tokens (other series)<" in html and ">used (other series)<" in html
    assert f">{others:,}<" in html and f">{total:,}<" in html


class Statements:
    """Counts the statements SQLAlchemy sends on an engine while in the `with` block."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.count = engine, 0

    def _seen(self, *_: object) -> None:
        self.count += 1

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def test_a_wide_sources_day_rows_and_rollups_take_a_bounded_number_of_statements(
    engine: Engine,
) -> None:
    config = http_json_config("http://127.0.0.1:9")
    store_wide(engine)
    with Statements(engine) as cold:
        first = daily(engine, config, date(2026, 12, 5), date(2026, 12, 5)).table
    store(engine, [Observation("acme", "http_json", datetime(2026, 12, 5, 20, tzinfo=UTC), "{}",
                               (SampleValue("tokens:m5", 100.0, None, None, MetricType.COUNTER),),
                               datetime(2026, 12, 5, 20, tzinfo=UTC))])
    with Statements(engine) as warm:
        again = daily(engine, config, date(2026, 12, 5), date(2026, 12, 5)).table
    # One statement per series (a read, a previous value, a rollup DELETE) was 3 x WIDE and
    # more: 900 here.
    assert cold.count < 100 and warm.count < 100
    assert len(first) == len(again) == WIDE + 1
    m5 = again[again["metric"] == "tokens:m5"].iloc[0]
    assert (m5["samples"], m5["increase"]) == (5, 95)  # 5, 10, 15, 20, then 100


def test_the_latest_sample_of_every_series_is_read_in_one_statement(engine: Engine) -> None:
    store_wide(engine)
    with Statements(engine) as seen, engine.connect() as conn:
        latest = latest_samples(conn)
    assert seen.count == 1
    assert len(latest) == WIDE + 1
    assert (latest[("acme", "tokens:m7")].value, latest[("acme", "tokens:m9")].value) == (3.0, 36.0)
    assert latest[("acme", "used")].limit == 10.0
    assert latest[("acme", "used")].observed_at == datetime(2026, 12, 5, 19, tzinfo=UTC)
