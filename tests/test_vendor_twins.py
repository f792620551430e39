"""WireSocket and Nected written as `http_json` (docs/vendors.md) store what the built-in kinds
store and give the same reports (SPEC 7)."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from etl.config import Config, parse_config
from etl.runtime.simulated_apis import generate_archive
from etl.store.archive import import_archives
from etl.store.engine import make_engine, upgrade
from etl.store.models import Sample, Series
from etl.store.rows import forget_series_cache
from etl.vendors import get as vendor_kind
from reports.frames import billing_frame, daily_frame
from tests.factories import REPO

DOC = REPO / "docs" / "vendors.md"
BUILT_IN = """
[[sources]]
name = "ws-prod"
kind = "wiresocket"
region = "eu"
token_env = "WIRESOCKET_TOKEN"
interval_seconds = 60

[[sources]]
name = "rules"
kind = "nected"
api_key_env = "NECTED_API_KEY"
interval_seconds = 300
"""
BILLING = """
[[billing]]
source = "rules"
metric = "invocations"
aggregation = "increase"
included = 1000
unit_price = "0.002"

[[billing]]
source = "ws-prod"
metric = "connections"
aggregation = "peak"
included = 50
unit_price = "0.50"
"""
DAY = date(2026, 11, 21)
EXAMPLE_DAY = date(2026, 2, 25)


def doc_twins() -> str:
    """The two `# twin:` TOML blocks of docs/vendors.md, as one config text."""
    blocks = re.findall(r"```toml\n(# twin: \w+\n.*?)```", DOC.read_text(), re.S)
    assert [b.splitlines()[0] for b in blocks] == ["# twin: wiresocket", "# twin: nected"]
    return "\n".join(blocks)


def config(text: str, db: Path) -> Config:
    return parse_config({**tomllib.loads(text + BILLING), "database_url": f"sqlite:///{db}"})


def archive_lines(built_in: Config) -> list[dict[str, Any]]:
    """The vendors' documented examples, then a day of simulated traffic."""
    at = f"{EXAMPLE_DAY}T14:40:00Z"
    lines: list[dict[str, Any]] = [
        {"source": "ws-prod", "body": vendor_kind("wiresocket").example_body},
        {"source": "rules", "observed_at": at, "body": vendor_kind("nected").example_body},
    ]
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    lines += generate_archive(built_in.sources, start - timedelta(hours=1),
                              start + timedelta(days=1), seed=7)
    return lines


def stored(cfg: Config, archive: Path) -> tuple[list[tuple[Any, ...]], pd.DataFrame,
                                                 pd.DataFrame, pd.DataFrame]:
    engine = make_engine(cfg.database_url)
    upgrade(engine)
    result = import_archives(engine, cfg, [str(archive)])
    assert result.ok and result.bad_lines == 0, result.summary()
    with engine.connect() as conn:
        samples = [tuple(r) for r in conn.execute(
            select(Series.source, Series.metric, Series.metric_type, Sample.observed_at,
                   Sample.value, Sample.plan_limit, Sample.status)
            .join(Sample, Sample.series_id == Series.id)
            .order_by(Series.source, Series.metric, Sample.observed_at))]
    now = datetime(2026, 12, 2, tzinfo=UTC)
    reports = (daily_frame(engine, cfg, DAY, DAY, rollups=False),
               daily_frame(engine, cfg, EXAMPLE_DAY, EXAMPLE_DAY, rollups=False),
               billing_frame(engine, cfg, "2026-11", now=now, rollups=False))
    forget_series_cache(engine)
    engine.dispose()
    return (samples, *reports)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    folder = tmp_path_factory.mktemp("twins")
    built_in = config(BUILT_IN, folder / "built_in.db")
    twin = config(doc_twins(), folder / "twin.db")
    assert [(s.name, s.kind) for s in twin.sources] == [("ws-prod", "http_json"),
                                                       ("rules", "http_json")]
    archive = folder / "history.jsonl"
    archive.write_text("".join(json.dumps(line) + "\n" for line in archive_lines(built_in)))
    return stored(built_in, archive), stored(twin, archive)


def test_the_twins_store_the_same_samples_as_the_built_in_kinds(both: Any) -> None:
    (built_in, *_), (twin, *_) = both
    assert len(built_in) == 2 * (24 * 60 + 60) + (24 * 12 + 12) + 3  # a day and an hour, examples
    assert twin == built_in
    example = [r for r in built_in if r[3].date() == EXAMPLE_DAY]
    assert [(r[1], r[4], r[5], r[6]) for r in example] == [
        ("invocations", 1000.0, None, None),
        ("connections", 82.0, 100.0, "warning"), ("documents", 4.0, 20.0, "healthy")]


def test_the_twins_give_the_same_daily_reports(both: Any) -> None:
    (_, day, example_day, _), (_, twin_day, twin_example_day, _) = both
    pd.testing.assert_frame_equal(twin_day, day)
    pd.testing.assert_frame_equal(twin_example_day, example_day)
    assert list(day["samples"]) == [1440, 1440, 288]


def test_the_twins_give_the_same_billing_report(both: Any) -> None:
    (*_, billing), (*_, twin_billing) = both
    pd.testing.assert_frame_equal(twin_billing, billing)
    assert list(billing["metric"]) == ["invocations", "connections"]
