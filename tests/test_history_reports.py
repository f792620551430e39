"""Reports of history series (SPEC 10 "Numbers"): day rows apportioned by time, sum billing, provisional."""

from __future__ import annotations

import csv
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from etl.config import Config, parse_config
from etl.errors import ConfigError
from reports.pipelines.billing import billing, write_billing
from reports.pipelines.daily import daily, write_daily
from tests.factories import HISTORY_SOURCE_TOML, history_page, store

D20 = datetime(2026, 11, 20, tzinfo=UTC)
H = timedelta(hours=1)
BILLING = """
[[billing]]
source = "openai"
metric = "tokens:gpt-4o"
aggregation = "sum"
included = 100
unit_price = "0.01"
currency = "USD"
"""


def _config(extra: str = BILLING) -> Config:
    return parse_config(tomllib.loads(HISTORY_SOURCE_TOML + extra))


def _seed(engine: Engine, *, late_read: bool) -> None:
    # The third bucket straddles midnight: 6 of its 12 hours fall on each day.
    buckets = [(D20, D20 + 12 * H, {"gpt-4o": 120}), (D20 + 12 * H, D20 + 18 * H, {"gpt-4o": 60}),
               (D20 + 18 * H, D20 + 30 * H, {"gpt-4o": 90})]
    store(engine, [history_page(D20 + 32 * H, (D20, D20 + 48 * H), buckets)])
    if late_read:  # the 20th read again more than `lookback` (1 d) after it ended
        store(engine, [history_page(D20 + 49 * H, (D20, D20 + 24 * H), buckets[:2])])


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_daily_rows_apportion_a_straddling_bucket_and_say_what_is_provisional(
        engine: Engine, tmp_path: Path) -> None:
    _seed(engine, late_read=True)
    result = daily(engine, _config(), date(2026, 11, 20), date(2026, 11, 22))
    write_daily(result, ["csv"], tmp_path)
    rows = [_csv(tmp_path / f"daily-2026-11-{d}.csv")[0] for d in (20, 21, 22)]
    picked = [{k: r[k] for k in ("metric", "samples", "min", "max", "mean", "increase",
                                 "resets", "limit", "coverage_pct", "provisional")}
              for r in rows]
    assert picked == [
        {"metric": "tokens:gpt-4o", "samples": "3", "min": "60", "max": "120", "mean": "90",
         "increase": "225", "resets": "", "limit": "", "coverage_pct": "100",
         "provisional": "false"},
        # Read until 08:00 of the 21st only: a third of the day, still revisable.
        {"metric": "tokens:gpt-4o", "samples": "1", "min": "90", "max": "90", "mean": "90",
         "increase": "45", "resets": "", "limit": "", "coverage_pct": "33.33",
         "provisional": "true"},
        {"metric": "tokens:gpt-4o", "samples": "0", "min": "", "max": "", "mean": "",
         "increase": "0", "resets": "", "limit": "", "coverage_pct": "0",
         "provisional": "true"},
    ]


def test_a_day_read_only_within_lookback_of_its_end_is_provisional(engine: Engine) -> None:
    _seed(engine, late_read=False)
    table = daily(engine, _config(), date(2026, 11, 20), date(2026, 11, 20)).table
    assert table["provisional"].tolist() == ["true"]


def test_billing_sum_is_the_apportioned_bucket_total_of_the_month(
        engine: Engine, tmp_path: Path) -> None:
    _seed(engine, late_read=True)
    result = billing(engine, _config(), date(2026, 11, 1),
                     now=datetime(2026, 12, 10, tzinfo=UTC))
    write_billing(result, ["csv"], tmp_path)
    (row,) = _csv(tmp_path / "billing-2026-11.csv")
    assert {k: row[k] for k in ("aggregation", "quantity", "overage", "amount",
                                "provisional")} == {
        "aggregation": "sum", "quantity": "270", "overage": "170", "amount": "1.70",
        # November was not read a day after it ended.
        "provisional": "true"}


def test_billing_sum_is_rounded_once_for_the_period_not_day_by_day(
        engine: Engine, tmp_path: Path) -> None:
    # Ten 7-hour buckets of 1 from the 20th: the days get 24/7, 24/7 and 22/7, printed
    # 3.4286, 3.4286 and 3.1429 (10.0001 together), but the period used exactly 10.
    buckets = [(D20 + 7 * i * H, D20 + 7 * (i + 1) * H, {"gpt-4o": 1}) for i in range(10)]
    store(engine, [history_page(D20 + 96 * H, (D20, D20 + 72 * H), buckets)])
    config = _config()
    write_daily(daily(engine, config, date(2026, 11, 20), date(2026, 11, 22)), ["csv"], tmp_path)
    assert [_csv(tmp_path / f"daily-2026-11-{d}.csv")[0]["increase"] for d in (20, 21, 22)] == [
        "3.4286", "3.4286", "3.1429"]
    write_billing(billing(engine, config, date(2026, 11, 1),
                          now=datetime(2026, 12, 10, tzinfo=UTC)), ["csv"], tmp_path)
    (row,) = _csv(tmp_path / "billing-2026-11.csv")
    assert row["quantity"] == "10"


@pytest.mark.parametrize(("rule", "problem"), [
    (BILLING.replace('"sum"', '"increase"'),
     "billing[0].aggregation: 'tokens:gpt-4o' is an interval metric: use 'sum'"),
])
def test_increase_on_an_interval_metric_is_refused(rule: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(rule)
    assert problem in err.value.problems


def test_sum_on_a_counter_is_refused() -> None:
    text = """
[[sources]]
name = "rules"
kind = "nected"
api_key_env = "K"
[[billing]]
source = "rules"
metric = "invocations"
aggregation = "sum"
"""
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(text))
    assert ("billing[0].aggregation: 'sum' needs an interval metric; 'invocations' is a counter"
            in err.value.problems)


def test_an_interval_series_is_charted_as_one_bar_per_bucket_cut_at_the_day_edge() -> None:
    from reports.render.charts import bucket_day_chart

    us = 3_600_000_000
    day = int(D20.timestamp()) * 1_000_000
    three = bucket_day_chart(np.array([day, day + 12 * us, day + 18 * us]),
                             np.array([day + 12 * us, day + 18 * us, day + 30 * us]),
                             np.array([120.0, 60, 90]), day_start_us=day, day_end_us=day + 24 * us,
                             metric="tokens")
    one = bucket_day_chart(np.array([day]), np.array([day + 12 * us]), np.array([120.0]),
                           day_start_us=day, day_end_us=day + 24 * us, metric="tokens")
    assert three.count('id="patch_') - one.count('id="patch_') == 2


def test_daily_and_billing_html_of_a_history_source_are_written(
        engine: Engine, tmp_path: Path) -> None:
    _seed(engine, late_read=True)
    write_daily(daily(engine, _config(), date(2026, 11, 20), date(2026, 11, 21)), ["html"],
                tmp_path)
    write_billing(billing(engine, _config(), date(2026, 11, 1),
                          now=datetime(2026, 12, 10, tzinfo=UTC)), ["html"], tmp_path)
    settled, revisable = ((tmp_path / f"daily-2026-11-{d}.html").read_text() for d in (20, 21))
    month = (tmp_path / "billing-2026-11.html").read_text()
    assert "<svg" in settled and "<svg" in month
    # Which figures the vendor may still revise, and why (SPEC 10).
    assert "provisional —" not in settled
    assert "openai/tokens:gpt-4o: provisional — the day was not all read" in revisable
    assert "openai/tokens:gpt-4o: provisional — the period was not all read" in month


def test_above_on_an_interval_series_is_its_month_to_date_sum(engine: Engine) -> None:
    import json

    from sqlalchemy import select

    from etl.runtime.alerting import check
    from etl.store.models import AlertEvent

    config = _config(BILLING + '\n[[notifiers]]\nname = "ops"\nkind = "webhook"\n'
                     'url_env = "UNUSED_HOOK"\n[[alerts]]\nname = "tokens-high"\n'
                     'source = "openai"\nmetric = "tokens:gpt-4o"\nabove = 250\n'
                     'notify = ["ops"]\n')
    _seed(engine, late_read=True)
    result = check(engine, config, datetime(2026, 11, 21, 12, tzinfo=UTC), sender=lambda *a: None)
    assert [str(e.transition) for e in result.events] == ["firing"]
    with engine.connect() as conn:
        payload = json.loads(conn.execute(select(AlertEvent.payload)).scalar_one())
    assert (payload["value"], payload["threshold"]) == (270, 250)  # 225 on the 20th, 45 on the 21st
