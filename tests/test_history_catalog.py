"""Every config of the docs/vendors catalog against its simulated vendor (SPEC 10), on both engines.

Polls read what the vendor has, a later poll picks up the vendor's revisions inside the
lookback, and the daily report adds up to the simulator's own truth.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from etl.collect.pacing import PacerRegistry
from etl.collect.poll import Collector
from etl.config import Config, parse_config
from etl.runtime.history import poll_history
from etl.runtime.history_sim import CREDENTIALS, SHAPES, HistorySimulator
from etl.store.models import Sample, Series
from etl.vendors.types import Outcome
from reports.pipelines.daily import daily
from tests.factories import REPO, FakeClock

CATALOG = sorted((REPO / "docs" / "vendors").glob("*.toml"))
NOW = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
ENV = {"OPENAI_ADMIN_KEY": CREDENTIALS["bearer"], "GITHUB_TOKEN": CREDENTIALS["bearer"],
       "STRIPE_SECRET_KEY": CREDENTIALS["bearer"], "ANTHROPIC_ADMIN_KEY": CREDENTIALS["x-api-key"],
       "TWILIO_ACCOUNT_SID": "AC0", "TWILIO_AUTH_TOKEN": "sim-secret",
       "DD_API_KEY": "sim-api-key", "DD_APP_KEY": "sim-app-key"}


def catalog_config(path: Path, sim: HistorySimulator) -> Config:
    text = re.sub(r'url = "https://[^/"]+', f'url = "{sim.url}', path.read_text())
    return parse_config(tomllib.loads(text))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return FakeClock(NOW)


def _collector(config: Config, clock: FakeClock) -> Collector:
    return Collector(config.sources, pacers=PacerRegistry(clock.time), clock=clock.time,
                     sleep=clock.sleep, now=clock)


def _stored(engine: Engine, source: str) -> dict[str, float]:
    with engine.connect() as conn:
        rows = conn.execute(select(Series.metric, func.sum(Sample.value))
                            .join(Sample, Sample.series_id == Series.id)
                            .where(Series.source == source).group_by(Series.metric))
        return {m.split(":", 1)[-1]: float(v) for m, v in rows}


def _truth(sim: HistorySimulator, name: str, lo: datetime, hi: datetime) -> dict[str, float]:
    keys = SHAPES[name].keys if name != "stripe" else ("api_calls",)
    return {k: sim.truth(name, k, lo, hi) for k in keys}


@pytest.mark.parametrize("path", CATALOG, ids=[p.stem for p in CATALOG])
def test_catalog_config_reads_its_vendor_then_picks_up_revisions(
        path: Path, engine: Engine, clock: FakeClock) -> None:
    with HistorySimulator(now=clock) as sim:
        config = catalog_config(path, sim)
        (source,) = config.sources
        history = source.vendor.history
        assert history is not None
        start = history.window.align.floor(history.window.backfill.before(NOW))
        with _collector(config, clock) as collector:
            first = poll_history(engine, collector, source)
            assert first.outcome is Outcome.OK, first.error
            expected = _truth(sim, path.stem, start, NOW)
            if path.stem == "stripe":
                expected = {"meter_events": expected["api_calls"]}
            assert _stored(engine, source.name) == expected
            # An hour later the vendor has revised its last hours: the lookback reads them again.
            clock.advance(3600)
            assert sim.revise(path.stem, timedelta(hours=3)) > 0
            again = poll_history(engine, collector, source)
            assert again.outcome is Outcome.OK, again.error
        expected = _truth(sim, path.stem, start, clock())
        if path.stem == "stripe":
            expected = {"meter_events": expected["api_calls"]}
        assert _stored(engine, source.name) == expected
        # The daily report's increase (interval) or bucket count equals the vendor's truth.
        table = daily(engine, config, date(2026, 11, 19), date(2026, 11, 19)).table
        shape = SHAPES[path.stem]
        day = datetime(2026, 11, 19, tzinfo=UTC)
        truth = _truth(sim, path.stem, day, day + timedelta(days=1))
        for row in table.to_dict("records"):
            key = str(row["metric"]).split(":", 1)[-1]
            key = "api_calls" if key == "meter_events" else key
            if row["metric_type"] == "interval":
                assert float(row["increase"]) == truth[key]
            else:
                assert int(row["samples"]) == timedelta(days=1) / shape.width
            assert row["coverage_pct"] == 100.0


# The series each catalog vendor bills on (`sum` of an interval metric); Datadog's hosts are
# bucket gauges, which `sum` refuses.
BILLED = {"openai": "output_tokens:gpt-4o", "anthropic": "output_tokens:claude-3-5-sonnet-20241022",
          "twilio": "usage:sms", "github": "quantity:actions_linux", "stripe": "meter_events"}


@pytest.mark.parametrize("path", CATALOG, ids=[p.stem for p in CATALOG])
def test_catalog_config_backfills_the_month_and_bills_the_vendors_own_total(
        path: Path, engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    from etl.store.history import read_up_to
    from reports.pipelines.billing import billing, write_billing

    shape = SHAPES[path.stem]
    metric = BILLED.get(path.stem)
    rule = ("" if metric is None else
            f'\n[[billing]]\nsource = "{path.stem}"\nmetric = "{metric}"\naggregation = "sum"\n'
            'included = 1\nunit_price = "0.01"\n')
    month = datetime(2026, 11, 1, tzinfo=UTC)
    with HistorySimulator(now=clock) as sim:
        text = re.sub(r'url = "https://[^/"]+', f'url = "{sim.url}', path.read_text())
        config = parse_config(tomllib.loads(text + rule))
        (source,) = config.sources
        with _collector(config, clock) as collector:
            assert poll_history(engine, collector, source).ok
            with engine.connect() as conn:
                mark = read_up_to(conn, source.name)
            # `backfill --start 2026-11-01` up to where the first poll began: H stays.
            window = source.vendor.history.window if source.vendor.history else None
            assert window is not None
            first = window.align.floor(window.backfill.before(NOW))
            filled = poll_history(engine, collector, source, start=month, end=max(first, month))
            assert filled.outcome is Outcome.OK, filled.error
            with engine.connect() as conn:
                assert read_up_to(conn, source.name) == mark
            clock.advance(3600)
            sim.revise(path.stem, timedelta(hours=5))
            assert poll_history(engine, collector, source).ok
        keys = shape.keys if path.stem != "stripe" else ("api_calls",)
        truth = {k: sim.truth(path.stem, k, min(month, first), clock()) for k in keys}
        billed = {k: sim.truth(path.stem, k, month, clock()) for k in keys}
    stored = _stored(engine, source.name)
    if path.stem == "stripe":
        stored = {"api_calls": stored["meter_events"]}
    if shape.keys and metric is None:  # bucket gauges: one sample per bucket read
        with engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(Sample).join(
                Series, Sample.series_id == Series.id).where(Series.source == source.name)
            ).scalar_one()
        # Up to the bucket in progress, which the vendor shows as it stands.
        assert count == len(keys) * -(-(clock() - min(month, first)) // shape.width)
        return
    assert stored == truth
    write_billing(billing(engine, config, date(2026, 11, 1), now=clock()), ["csv"], tmp_path)
    (row,) = _rows(tmp_path / "billing-2026-11.csv")
    assert metric is not None
    key = metric.split(":", 1)[-1] if ":" in metric else "api_calls"
    assert row["aggregation"] == "sum"
    assert float(row["quantity"]) == pytest.approx(billed[key], abs=5e-5), row
    assert row["provisional"] == "true"  # the month is not over, let alone `lookback` after


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_exported_pages_imported_in_reverse_or_twice_give_byte_identical_reports(
        engine: Engine, clock: FakeClock, tmp_path: Path) -> None:
    import io

    from etl.store.archive import import_archives
    from etl.store.export import export_archive
    from reports.pipelines.billing import billing, write_billing
    from reports.pipelines.daily import write_daily
    from tests.factories import reference_engine

    with HistorySimulator(now=clock) as sim:
        text = re.sub(r'url = "https://[^/"]+', f'url = "{sim.url}',
                      (REPO / "docs" / "vendors" / "openai.toml").read_text())
        config = parse_config(tomllib.loads(text + (
            '\n[[billing]]\nsource = "openai"\nmetric = "output_tokens:gpt-4o"\n'
            'aggregation = "sum"\nincluded = 100\nunit_price = "0.01"\n')))
        with _collector(config, clock) as collector:
            assert poll_history(engine, collector, config.sources[0]).ok
            clock.advance(3600)
            sim.revise("openai", timedelta(days=2))
            assert poll_history(engine, collector, config.sources[0]).ok
    out = io.StringIO()
    export_archive(engine, config, date(2026, 10, 1), date(2026, 11, 30), out)
    lines = out.getvalue().splitlines()
    assert len(lines) > 4

    def reports(db: Engine, folder: Path) -> list[bytes]:
        folder.mkdir()
        write_daily(daily(db, config, date(2026, 10, 20), date(2026, 11, 20)), ["csv"], folder)
        write_billing(billing(db, config, date(2026, 11, 1), now=clock()), ["csv"], folder)
        return [p.read_bytes() for p in sorted(folder.iterdir())]

    want = reports(engine, tmp_path / "direct")
    assert b",output_tokens:gpt-4o,sum," in want[0]  # billing-2026-11.csv, then the days
    assert len(want) == 1 + 32
    for name, order in (("reverse", lines[::-1]), ("twice", lines + lines)):
        archive = tmp_path / f"{name}.jsonl"
        archive.write_text("\n".join(order) + "\n")
        (tmp_path / name).mkdir()
        with reference_engine(engine, tmp_path / name) as fresh:
            result = import_archives(fresh, config, [str(archive)])
            assert result.ok
            assert reports(fresh, tmp_path / f"{name}-out") == want
