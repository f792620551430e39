"""The analysts' DataFrame API (reports.api): same figures as the CSV reports, typed, read-only."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

import reports
from etl.config import Config, load_config
from etl.errors import InputError
from etl.runtime.simulated_apis import generate_archive
from etl.store.archive import import_archives
from etl.store.models import RollupDay, RollupDirty, Sample
from reports.jobs import build_billing, build_daily, build_reconcile

BERLIN = "Europe/Berlin"
# Five days around the end of March 2026: Berlin's spring-forward day (2026-03-29, 23 h) and
# the counter's reset at the start of April, with a gap on 2026-03-30.
START = datetime(2026, 3, 27, 22, tzinfo=UTC)
END = datetime(2026, 4, 2, 3, tzinfo=UTC)
GAP = (datetime(2026, 3, 30, 9, tzinfo=UTC), datetime(2026, 3, 30, 15, tzinfo=UTC))
NOW = datetime(2026, 4, 2, 3, tzinfo=UTC)  # April in progress, March over

CONFIG = """\
database_url = "{url}"
timezone = "Europe/Berlin"

[[sources]]
name = "ws-prod"
kind = "wiresocket"
base_url = "http://127.0.0.1:9"
token_env = "API_TEST_UNUSED_TOKEN"
interval_seconds = 300

[[sources]]
name = "rules"
kind = "nected"
base_url = "http://127.0.0.1:9"
api_key_env = "API_TEST_UNUSED_KEY"
interval_seconds = 300

[[billing]]
source = "rules"
metric = "invocations"
aggregation = "increase"
included = 10000
unit_price = "0.002"
currency = "USD"

[[billing]]
source = "ws-prod"
metric = "connections"
aggregation = "peak"
included = 100
unit_price = "0.50"
currency = "USD"
"""


@dataclasses.dataclass
class History:
    engine: Engine
    config: Config
    config_path: Path
    url: str


@pytest.fixture
def history(engine: Engine, tmp_path: Path) -> Iterator[History]:
    """Five days of simulated history (with a gap) imported into each database engine."""
    url = engine.url.render_as_string(hide_password=False)
    config_path = tmp_path / "usage-etl.toml"
    config_path.write_text(CONFIG.format(url=url), encoding="utf-8")
    config = load_config(str(config_path))
    archive = tmp_path / "history.jsonl"
    with archive.open("w", encoding="utf-8") as fh:
        for line in generate_archive(config.sources, START, END, seed=7):
            at = line.get("observed_at") or line["body"]["timestamp"]
            if GAP[0] <= datetime.fromisoformat(at) < GAP[1]:
                continue
            fh.write(json.dumps(line) + "\n")
    assert import_archives(engine, config, [str(archive)]).ok
    yield History(engine, config, config_path, url)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def same(cell: str, value: object) -> bool:
    """A CSV cell against a DataFrame value: empty is <NA>, numbers compare as numbers."""
    if value is None or value is pd.NA or value is pd.NaT or (
            isinstance(value, float) and value != value):
        return cell == ""
    if isinstance(value, bool):
        return cell == ("true" if value else "false")
    if isinstance(value, int | float | Decimal):
        return cell != "" and Decimal(cell) == Decimal(str(value))
    if isinstance(value, pd.Timestamp):
        return cell == value.date().isoformat()
    return cell == str(value)


def assert_frame_matches_csv(df: pd.DataFrame, rows: list[dict[str, str]]) -> None:
    assert len(df) == len(rows)
    for rec, row in zip(df.to_dict("records"), rows, strict=True):
        for col, cell in row.items():
            assert same(cell, rec[col]), (col, cell, rec[col], row)


@pytest.mark.parametrize("day", [date(2026, 3, 29), date(2026, 3, 30), date(2026, 4, 1)])
def test_daily_usage_has_the_figures_of_the_daily_csv(history: History, tmp_path: Path,
                                                      day: date) -> None:
    df = reports.daily_usage(history.engine, day, config=history.config)
    [path] = build_daily(history.engine, history.config, day, day, formats=("csv",),
                         out_dir=tmp_path / "out")
    rows = read_csv(path)
    # Every CSV column (the SPEC ones and the extras) is there with the same value.
    assert set(rows[0]) <= set(df.columns)
    assert_frame_matches_csv(df, rows)
    assert list(df["samples"]) and all(df["samples"] > 0)
    if day == date(2026, 3, 30):
        assert (df["coverage_pct"] < 100).all()  # the gap shows


def test_daily_usage_in_another_zone_matches_the_csv_in_that_zone(history: History,
                                                                 tmp_path: Path) -> None:
    day = date(2026, 3, 31)
    df = reports.daily_usage(history.engine, "2026-03-31", "2026-03-31", tz="America/New_York",
                             config=history.config)
    [path] = build_daily(history.engine, history.config, day, day, tz="America/New_York",
                         formats=("csv",), out_dir=tmp_path / "ny")
    assert_frame_matches_csv(df, read_csv(path))


def test_billing_and_reconcile_have_the_figures_of_their_csvs(history: History,
                                                              tmp_path: Path) -> None:
    b = reports.billing(history.engine, "2026-03", config=history.config, now=NOW)
    [path] = build_billing(history.engine, history.config, "2026-03", formats=("csv",),
                           out_dir=tmp_path / "out", now=NOW)
    assert_frame_matches_csv(b, read_csv(path))
    assert b["quantity"].dtype == "Float64" and b["samples"].dtype == "Int64"
    exact = reports.billing(history.config, "2026-03", now=NOW, decimal=True)
    assert all(isinstance(v, Decimal) for v in exact["amount"])
    assert [float(v) for v in exact["amount"]] == list(b["amount"])

    invoice = tmp_path / "invoice.csv"
    rules = b.set_index(["source", "metric"])
    invoice.write_text(
        "source,month,metric,quantity,amount\n"
        f"rules,2026-03,invocations,{rules.loc[('rules', 'invocations'), 'quantity']:.0f},"
        f"{rules.loc[('rules', 'invocations'), 'amount']:.2f}\n"
        "ws-prod,2026-03,connections,90,0\n"
        "ws-prod,2026-03,documents,5,1.00\n", encoding="utf-8")
    r = reports.reconcile(history.engine, "2026-03", invoice, config=history.config, now=NOW)
    [path] = build_reconcile(history.engine, history.config, "2026-03", invoice,
                             formats=("csv",), out_dir=tmp_path / "out", now=NOW)
    assert_frame_matches_csv(r, read_csv(path))
    status = dict(zip(r["metric"], r["status"], strict=True))
    assert status == {"invocations": "match", "connections": "mismatch",
                      "documents": "missing_metered"}
    assert list(r["status"].cat.categories) == ["match", "mismatch", "missing_invoice",
                                                "missing_metered"]


def test_every_reconcile_entry_point_refuses_bad_tolerance_and_a_wrong_month_invoice(
        history: History, tmp_path: Path) -> None:
    from reports.frames import reconcile_frame

    wrong = tmp_path / "invoice-april.csv"
    wrong.write_text("source,month,metric,quantity,amount\n"
                     "rules,2026-04,invocations,10,0.00\n", encoding="utf-8")
    month = f"{wrong}: no rows for 2026-03 (it has 2026-04)"
    with pytest.raises(InputError) as info:
        reports.reconcile(history.engine, "2026-03", wrong, config=history.config, now=NOW)
    assert str(info.value) == month
    with pytest.raises(InputError) as info:
        build_reconcile(history.engine, history.config, "2026-03", wrong, formats=("csv",),
                        out_dir=tmp_path / "out", now=NOW)
    assert str(info.value) == month
    with pytest.raises(InputError) as info:
        reconcile_frame(history.engine, history.config, "2026-03", wrong, now=NOW)
    assert str(info.value) == month

    # Invoiced 0, where an infinite tolerance would multiply 0 by infinity.
    zero = tmp_path / "invoice-march.csv"
    zero.write_text("source,month,metric,quantity,amount\n"
                    "rules,2026-03,invocations,0,0\n", encoding="utf-8")
    for bad in (float("inf"), float("nan"), -0.5):
        with pytest.raises(InputError, match="tolerance_pct: .* must be a finite number"):
            reports.reconcile(history.engine, "2026-03", zero, tolerance_pct=bad,
                              config=history.config, now=NOW)
        with pytest.raises(InputError, match="--tolerance-pct: .* must be a finite number"):
            build_reconcile(history.engine, history.config, "2026-03", zero,
                            tolerance_pct=bad, formats=("csv",), out_dir=tmp_path / "out",
                            now=NOW)
        with pytest.raises(InputError, match="tolerance_pct: .* must be a finite number"):
            reconcile_frame(history.engine, history.config, "2026-03", zero,
                            tolerance_pct=bad, now=NOW)
    assert not (tmp_path / "out" / "reconcile-2026-03.csv").exists()


def test_month_in_progress_has_a_projection(history: History) -> None:
    b = reports.billing(history.engine, date(2026, 4, 15), config=history.config, now=NOW)
    row = b.set_index("metric").loc["invocations"]
    assert row["month"] == "2026-04"
    assert row["projected_quantity"] > row["mtd_quantity"] > 0


def test_timestamps_are_aware_in_the_requested_zone(history: History) -> None:
    s = reports.load_samples(history.engine, tz="Asia/Kolkata")
    assert str(s["observed_at"].dt.tz) == "Asia/Kolkata"
    first = s["observed_at"].min()
    assert first.tz_convert("UTC") == pd.Timestamp(START)
    assert first.hour == 3 and first.minute == 30  # 22:00 UTC is 03:30 in India

    d = reports.daily_usage(history.engine, "2026-03-28", "2026-03-30", config=history.config)
    assert str(d["date"].dt.tz) == BERLIN
    starts = sorted(set(d["date"]))
    assert [t.hour for t in starts] == [0, 0, 0]
    # 2026-03-29 lasts 23 hours in Berlin.
    assert [(b - a) for a, b in zip(starts, starts[1:], strict=False)] == [
        pd.Timedelta(hours=24), pd.Timedelta(hours=23)]
    assert (d["date"].dt.tz_convert("UTC").iloc[0]
            == pd.Timestamp(datetime(2026, 3, 27, 23, tzinfo=UTC)))

    utc = reports.daily_usage(history.engine, "2026-03-29", tz="UTC", config=history.config)
    assert str(utc["date"].dt.tz) == "UTC"


def test_dtypes_are_typed_for_analysis(history: History) -> None:
    s = reports.load_samples(history.engine)
    assert s["source"].dtype == "category" and s["metric"].dtype == "category"
    assert s["value"].dtype == "float64" and s["limit"].dtype == "Float64"
    gauges = s[s["metric_type"] == "gauge"]
    counters = s[s["metric_type"] == "counter"]
    assert gauges["limit"].notna().all() and counters["limit"].isna().all()
    assert (gauges["pct"] - gauges["value"] / gauges["limit"] * 100).abs().max() < 1e-9
    assert set(gauges["status"].dropna()) <= {"healthy", "warning", "critical"}

    d = reports.daily_usage(history.engine, "2026-03-29", config=history.config)
    assert d["samples"].dtype == "Int64" and d["max"].dtype == "Float64"
    assert d["increase"].dtype == "Int64"
    assert d.loc[d["metric_type"] == "gauge", "increase"].isna().all()


def test_url_engine_config_and_path_are_all_accepted(history: History) -> None:
    by_engine = reports.load_samples(history.engine, source="ws-prod")
    by_url = reports.load_samples(history.url, source="ws-prod")
    by_config = reports.load_samples(history.config, source="ws-prod", tz="UTC")
    pd.testing.assert_frame_equal(by_engine, by_url)
    pd.testing.assert_frame_equal(by_engine, by_config)
    if history.engine.dialect.name == "sqlite":
        by_path = reports.load_samples(Path(history.engine.url.database or ""),
                                       source="ws-prod")
        pd.testing.assert_frame_equal(by_engine, by_path)

    day = "2026-03-31"
    d_engine = reports.daily_usage(history.engine, day, config=history.config_path)
    d_config = reports.daily_usage(history.config, day)
    d_url = reports.daily_usage(history.url, day, config=str(history.config_path))
    pd.testing.assert_frame_equal(d_engine, d_config)
    pd.testing.assert_frame_equal(d_engine, d_url)


def test_config_comes_from_the_environment_by_default(history: History,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGE_ETL_CONFIG", str(history.config_path))
    d = reports.daily_usage(history.engine, "2026-03-31")
    assert set(d["source"]) == {"ws-prod", "rules"}
    monkeypatch.delenv("USAGE_ETL_CONFIG")
    monkeypatch.chdir(history.config_path.parent.parent)  # no usage-etl.toml here
    with pytest.raises(InputError, match=r"no \[\[sources\]\].*config="):
        reports.daily_usage(history.engine, "2026-03-31")


def test_filters_select_series_and_time(history: History) -> None:
    s = reports.load_samples(history.engine, source="ws-prod", metric="connections",
                             start="2026-03-29", end="2026-03-29", tz=BERLIN)
    assert set(s["source"]) == {"ws-prod"} and set(s["metric"]) == {"connections"}
    # A date `end` includes its whole local day (23 hours on the DST day, 5-minute samples).
    assert s["observed_at"].min() == pd.Timestamp("2026-03-29 00:00", tz=BERLIN)
    assert s["observed_at"].max() == pd.Timestamp("2026-03-29 23:55", tz=BERLIN)
    assert len(s) == 23 * 12

    # A datetime `end` is excluded; naive datetimes are in `tz`.
    hour = reports.load_samples(history.engine, metric=["connections", "documents"],
                                start=datetime(2026, 3, 31, 10),
                                end="2026-03-31T11:00:00", tz=BERLIN)
    assert len(hour) == 2 * 12 and set(hour["metric"]) == {"connections", "documents"}
    assert hour["observed_at"].max() == pd.Timestamp("2026-03-31 10:55", tz=BERLIN)
    aware = reports.load_samples(history.engine, metric="connections",
                                 start=datetime(2026, 3, 31, 8, tzinfo=UTC),
                                 end=datetime(2026, 3, 31, 9, tzinfo=UTC), tz=BERLIN)
    assert aware["observed_at"].min() == pd.Timestamp("2026-03-31 10:00", tz=BERLIN)

    d = reports.daily_usage(history.engine, "2026-03-29", "2026-03-31", source="rules",
                            config=history.config)
    assert len(d) == 3 and set(d["metric"]) == {"invocations"}

    with pytest.raises(InputError, match=r"source: 'ws-dev' not found \(known: rules, ws-prod\)"):
        reports.load_samples(history.engine, source="ws-dev")
    with pytest.raises(InputError, match="metric: 'connection' not found"):
        reports.daily_usage(history.engine, "2026-03-29", metric="connection",
                            config=history.config)


def test_series_catalog_is_in_the_asked_zone_and_attempts_are_a_typed_empty_frame_after_an_import(history: History) -> None:
    cat = reports.list_series(history.engine, tz=BERLIN)
    assert list(cat["metric"]) == ["invocations", "connections", "documents"]
    assert (cat["samples"] > 0).all() and str(cat["first"].dt.tz) == BERLIN
    # Imports are not polls: no attempts yet, but a typed empty frame.
    att = reports.load_attempts(history.engine)
    assert len(att) == 0 and str(att["started_at"].dt.tz) == "UTC"


def test_bad_arguments_are_clear_errors(history: History) -> None:
    with pytest.raises(InputError, match="tz: 'Mars/Olympus' is not an IANA"):
        reports.load_samples(history.engine, tz="Mars/Olympus")
    with pytest.raises(InputError, match="start: 'yesterday' is not a date"):
        reports.load_samples(history.engine, start="yesterday")
    with pytest.raises(InputError, match="end: 2026-03-01 is before start 2026-03-02"):
        reports.daily_usage(history.engine, "2026-03-02", "2026-03-01", config=history.config)
    with pytest.raises(InputError, match="month: '2026-13'"):
        reports.billing(history.engine, "2026-13", config=history.config)
    # A URL that does not parse, or names an unsupported database: one line, password masked.
    for url, why in (("postgresql://u:hunter2@db:notaport/x", "cannot parse"),
                     ("mysql://u:hunter2@db/x", "not supported")):
        with pytest.raises(InputError, match=f"db: .*{why}") as info:
            reports.load_samples(url)
        assert "hunter2" not in str(info.value)


def test_missing_sqlite_database_is_a_clear_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "usage.db"
    for db in (f"sqlite:///{missing}", missing, str(missing)):
        with pytest.raises(InputError, match=f"database {missing} does not exist"):
            reports.load_samples(db)
    config = Config(database_url=f"sqlite:///{tmp_path / 'usage.db'}")
    with pytest.raises(InputError, match="does not exist"):
        reports.load_attempts(config)
    assert not missing.exists() and not (tmp_path / "usage.db").exists()


def test_reading_history_never_writes_to_the_database(history: History, tmp_path: Path) -> None:
    def counts() -> tuple[int, int, int]:
        with history.engine.connect() as conn:
            return tuple(conn.scalar(select(func.count()).select_from(t)) or 0  # type: ignore[return-value]
                         for t in (Sample, RollupDay, RollupDirty))

    before = counts()
    assert before[2] > 0  # the import left dirty spans that a rollup refresh would consume
    reports.load_samples(history.engine)
    reports.daily_usage(history.engine, "2026-03-27", "2026-04-01", config=history.config)
    reports.billing(history.engine, "2026-03", config=history.config)
    invoice = tmp_path / "inv.csv"
    invoice.write_text("source,month,metric,quantity,amount\n", encoding="utf-8")
    reports.reconcile(history.engine, "2026-03", invoice, config=history.config)
    assert counts() == before
    # Asked to, it uses (and so fills) the rollup cache: same figures.
    cached = reports.daily_usage(history.engine, "2026-03-29", config=history.config,
                                 rollups=True)
    assert counts()[1] > 0
    pd.testing.assert_frame_equal(
        cached, reports.daily_usage(history.engine, "2026-03-29", config=history.config))

