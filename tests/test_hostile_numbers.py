"""Hostile numbers (issue 12): too large to bill is refused at the edge, and reports of any
stored history finish."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from etl.cli import cli
from etl.config import parse_config
from etl.errors import ConfigError
from etl.store.writer import store_observations
from etl.vendors import ParseContext
from etl.vendors import get as adapter
from etl.vendors.types import Observation, SampleValue
from reports.compute.daily import aggregate_days
from reports.frames import billing_frame, daily_frame

NOW = datetime(2027, 1, 1, tzinfo=UTC)


def config_text(url: str, unit_price: str = '"0.002"') -> str:
    return (f'database_url = "{url}"\n\n'
            '[[sources]]\nname = "rules"\nkind = "nected"\napi_key_env = "UNSET_NK_12"\n'
            'interval_seconds = 300\n\n'
            '[[billing]]\nsource = "rules"\nmetric = "invocations"\naggregation = "increase"\n'
            f'included = 100\nunit_price = {unit_price}\n')


def nected_line(when: str, invocations: str) -> str:
    return ('{"source": "rules", "observed_at": "' + when + '", "body": {"data": '
            '{"invocations": ' + invocations + '}, "code": "success"}}')


def nected(when: datetime, value: float) -> Observation:
    body = json.dumps({"data": {"invocations": value}, "code": "success"})
    return Observation("rules", "nected", when, body, (SampleValue("invocations", value),),
                       origin="import")


@pytest.mark.parametrize("reading", ["1e308", "18446744073709551616", "1000000000000001",
                                     "1e400", "1" + "0" * 400])
def test_a_reading_too_large_to_bill_is_refused_by_the_adapter(reading: str) -> None:
    body = json.loads('{"data": {"invocations": ' + reading + '}, "code": "success"}')
    with pytest.raises(Exception, match="data.invocations: .*") as caught:
        adapter("nected").parse(body, ParseContext("rules", observed_at=NOW))
    assert type(caught.value).__name__ == "ParseError"


def test_the_largest_billable_reading_is_stored() -> None:
    body = {"data": {"invocations": 10**15}, "code": "success"}
    obs = adapter("nected").parse(body, ParseContext("rules", observed_at=NOW))
    assert obs.samples[0].value == 1e15


def test_import_refuses_huge_readings_by_line_and_billing_finishes(
    empty_db_url: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(config_text(empty_db_url))
    archive = tmp_path / "a.jsonl"
    archive.write_text("\n".join([
        nected_line("2026-11-21T10:00:00Z", "1000"),
        nected_line("2026-11-21T10:05:00Z", "1e308"),
        nected_line("2026-11-21T10:10:00Z", "18446744073709551616"),
        nected_line("2026-11-21T10:15:00Z", "2000"),
    ]) + "\n")
    imported = CliRunner().invoke(cli, ["--config", str(cfg), "import", str(archive)])
    assert imported.exit_code == 1
    assert f"{archive}:2: body: data.invocations: 1e+308 is above 10^15" in imported.output
    assert f"{archive}:3: body: data.invocations: " in imported.output
    assert "2 new samples" in imported.output
    out = tmp_path / "out"
    report = CliRunner().invoke(cli, ["--config", str(cfg), "report", "billing", "--month",
                                      "2026-11", "--format", "csv", "--out", str(out)])
    assert report.exit_code == 0, report.output
    row = (out / "billing-2026-11.csv").read_text().splitlines()[1].split(",")
    # increase 2000 - 1000 = 1000; overage 900 x 0.002 = 1.80
    assert row[4:9] == ["1000", "100", "900", "0.002", "1.80"]


def test_reports_leave_out_a_huge_reading_already_stored(engine: Engine) -> None:
    """History written before the check (or by hand) must not stop any report."""
    config = parse_config({
        "sources": [{"name": "rules", "kind": "nected", "api_key_env": "NK_12",
                     "interval_seconds": 300}],
        "billing": [{"source": "rules", "metric": "invocations", "aggregation": "increase",
                     "included": 100, "unit_price": "0.002"}],
    })
    day = datetime(2026, 11, 21, tzinfo=UTC)
    with engine.begin() as conn:
        store_observations(conn, [
            nected(day.replace(hour=10), 1000.0),
            nected(day.replace(hour=11), 1e308),
            nected(day.replace(hour=12), float(2**64)),
            nected(day.replace(hour=13), 2000.0),
            nected(day.replace(hour=14), float("inf")) if engine.dialect.name == "postgresql"
            else nected(day.replace(hour=14), 3e300),
        ])
    billed = billing_frame(engine, config, "2026-11", now=NOW)
    assert (str(billed.loc[0, "quantity"]), str(billed.loc[0, "amount"])) == ("1000", "1.80")
    daily = daily_frame(engine, config, date(2026, 11, 21), date(2026, 11, 21))
    assert (int(daily.loc[0, "samples"]), float(daily.loc[0, "max"])) == (2, 2000.0)
    # A second, warm report (from the stored rollups) gives the same.
    again = billing_frame(engine, config, "2026-11", now=NOW)
    assert str(again.loc[0, "amount"]) == "1.80"


def test_the_largest_reading_at_the_largest_price_is_billed_to_the_cent(engine: Engine) -> None:
    config = parse_config({
        "sources": [{"name": "rules", "kind": "nected", "api_key_env": "NK_12",
                     "interval_seconds": 300}],
        "billing": [{"source": "rules", "metric": "invocations", "aggregation": "increase",
                     "included": 0, "unit_price": "1000000000000000"}],
    })
    day = datetime(2026, 11, 21, tzinfo=UTC)
    with engine.begin() as conn:
        store_observations(conn, [nected(day.replace(hour=10), 0.0),
                                  nected(day.replace(hour=11), 1e15)])
    billed = billing_frame(engine, config, "2026-11", now=NOW)
    # 10^15 units x 10^15 per unit: 10^30, which the default 28 digits cannot quantize.
    assert str(billed.loc[0, "amount"]) == "1" + "0" * 30 + ".00"


def test_a_day_of_huge_counter_increments_does_not_wrap_around() -> None:
    # 20,000 readings in one day alternating 10^15 and 0: 9,999 increments of 10^15 (the
    # first reading adds 0, every 0 is a reset adding 0): 9.999e18, past int64's 9.22e18.
    n = 20_000
    t = np.arange(n, dtype=np.int64) * 4_000_000
    value = np.where(np.arange(n) % 2 == 0, 1e15, 0.0)
    day = aggregate_days(t, value, None, np.array([0, 86_400_000_000]),
                         metric_type="counter", staleness_us=600_000_000)
    assert float(day.loc[0, "increase"]) == 9999e15
    assert int(day.loc[0, "resets"]) == 10_000  # each of the 10,000 zeros


@pytest.mark.parametrize("key,value,needle", [
    ("unit_price", '"1e999999999"', "billing[0].unit_price"),
    ("unit_price", '"1e16"', "billing[0].unit_price"),
    ("unit_price", "1e300", "billing[0].unit_price"),
    ("unit_price", '"0.0000000000001"', "billing[0].unit_price"),
    ("unit_price", '"-1e-999999999"', "billing[0].unit_price"),
    ("included", "1" + "0" * 40, "billing[0].included"),
    ("included", '"9e999999"', "billing[0].included"),
])
def test_config_billing_numbers_too_large_to_bill_are_refused(
    tmp_path: Path, key: str, value: str, needle: str
) -> None:
    cfg = tmp_path / "c.toml"
    text = config_text(f"sqlite:///{tmp_path / 'u.db'}")
    text = text.replace('unit_price = "0.002"', f"unit_price = {value}") if key == "unit_price" \
        else text.replace("included = 100", f"included = {value}")
    cfg.write_text(text)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "report", "billing", "--month",
                                      "2026-11", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert f"{needle}: " in result.output and "10^15" in result.output
    assert "Traceback" not in result.output


def test_config_billing_numbers_at_the_bounds_are_accepted() -> None:
    config = parse_config({
        "sources": [{"name": "rules", "kind": "nected", "api_key_env": "NK_12"}],
        "billing": [{"source": "rules", "metric": "invocations", "aggregation": "increase",
                     "included": 10**15, "unit_price": "0.000000000001"}],
    })
    assert str(config.billing[0].unit_price) == "1E-12"


@pytest.mark.parametrize("key", ["interval_seconds", "staleness_seconds", "timeout_seconds"])
@pytest.mark.parametrize("value", [1e300, 10**30, 366 * 86400 + 1])
def test_source_durations_beyond_a_year_are_refused(key: str, value: float) -> None:
    entry = {"name": "rules", "kind": "nected", "api_key_env": "NK_12", key: value}
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [entry]})
    [problem] = caught.value.problems
    assert problem.startswith(f"sources.rules.{key}: ") and "(366 days)" in problem
