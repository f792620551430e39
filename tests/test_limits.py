"""A plan limit (or percent, or status) never drops a reading: import, live polls, reports (SPEC 5)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from etl.cli import cli
from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine
from etl.store.models import Sample, Series
from etl.store.rows import forget_series_cache
from etl.vendors import get as vendor_kind
from etl.vendors.parse_api import ParseContext
from tests.factories import write_sim_config

WS = vendor_kind("wiresocket")


def ws_body(stamp: str, connections: dict[str, object], documents: dict[str, object]) -> dict:
    return {"tenantId": "t", "appId": "a", "timestamp": stamp,
            "usage": {"connections": connections, "documents": documents}}


def stored(url: str) -> list[tuple[str, str, float, float | None, str | None]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Series.metric, Sample.observed_at, Sample.value, Sample.plan_limit,
                       Sample.status)
                .join(Series, Series.id == Sample.series_id)
                .order_by(Series.metric, Sample.observed_at)).all()
    finally:
        forget_series_cache(engine)
        engine.dispose()
    return [(m, at.strftime("%H:%M"), v, lim, st) for m, at, v, lim, st in rows]


@pytest.mark.parametrize(
    ("entry", "limit"),
    [
        ({"current": 5, "limit": -1, "percent": -1, "status": "unlimited"}, None),
        ({"current": 5, "limit": None, "percent": None, "status": None}, None),
        ({"current": 5}, None),
        ({"current": 5, "limit": -250.5}, None),
        ({"current": 5, "limit": "unlimited", "percent": "n/a"}, None),
        ({"current": 5, "limit": True}, None),
        ({"current": 5, "limit": 10**400}, None),  # too large for a float
        ({"current": 5, "limit": 0, "percent": None}, 0.0),
        ({"current": 5, "limit": 40, "status": ""}, 40.0),
    ],
)
def test_a_reading_is_kept_whatever_its_limit_percent_or_status_say(
        entry: dict[str, object], limit: float | None) -> None:
    body = ws_body("2026-11-21T10:00:00Z", entry, {"current": 1, "limit": 20})
    obs = WS.parse(body, ParseContext("ws"))
    conn = obs.samples[0]
    assert (conn.metric, conn.value, conn.limit) == ("connections", 5.0, limit)
    assert conn.status in (None, "unlimited")


def test_an_archive_of_unlimited_snapshots_loads_every_reading_and_reports_no_limit(
        empty_db_url: str, tmp_path: Path) -> None:
    lines = [
        ws_body("2026-11-21T10:00:00Z",
                {"current": 5, "limit": None, "percent": None, "status": None},
                {"current": 2, "limit": 0, "percent": None, "status": "healthy"}),
        ws_body("2026-11-21T10:01:00Z",
                {"current": 7, "limit": -1, "percent": -1, "status": "unlimited"},
                {"current": 3, "limit": 0}),
        ws_body("2026-11-21T10:02:00Z", {"current": 9, "limit": -1},
                {"current": 4, "limit": 0}),
        ws_body("2026-11-21T10:03:00Z", {"current": 11}, {"current": 4, "limit": 0}),
    ]
    archive = tmp_path / "unlimited.jsonl"
    archive.write_text("".join(json.dumps({"source": "ws", "body": b}) + "\n" for b in lines))
    config = tmp_path / "c.toml"
    config.write_text(
        f'database_url = "{empty_db_url}"\ntimezone = "UTC"\n\n[[sources]]\nname = "ws"\n'
        'kind = "wiresocket"\nregion = "eu"\ntoken_env = "UNSET_WS_TOKEN_FOR_LIMITS"\n'
        "interval_seconds = 60\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config), "import", str(archive)])
    assert result.exit_code == 0, result.output
    assert stored(empty_db_url) == [
        ("connections", "10:00", 5.0, None, None),
        ("connections", "10:01", 7.0, None, "unlimited"),
        ("connections", "10:02", 9.0, None, None),
        ("connections", "10:03", 11.0, None, None),
        ("documents", "10:00", 2.0, 0.0, "healthy"),
        ("documents", "10:01", 3.0, 0.0, None),
        ("documents", "10:02", 4.0, 0.0, None),
        ("documents", "10:03", 4.0, 0.0, None),
    ]
    out = tmp_path / "out"
    result = runner.invoke(cli, ["--config", str(config), "report", "daily", "--date",
                                 "2026-11-21", "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with (out / "daily-2026-11-21.csv").open(newline="") as fh:
        rows = {r["metric"]: r for r in csv.DictReader(fh)}
    conns, docs = rows["connections"], rows["documents"]
    assert (conns["samples"], conns["min"], conns["max"], conns["mean"]) == ("4", "5", "11", "8")
    assert (conns["limit"], conns["peak_pct"]) == ("", "")
    assert (docs["samples"], docs["limit"], docs["peak_pct"]) == ("4", "0", "")
    for row in (conns, docs):
        assert (row["warning_minutes"], row["critical_minutes"]) == ("0", "0")


def test_a_live_poll_of_an_unlimited_plan_is_stored_not_refused(
        simulator: SimulatedVendor, empty_db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("unlimited", vendor="wiresocket")
    config = write_sim_config(tmp_path / "c.toml", simulator, empty_db_url, monkeypatch)
    result = CliRunner().invoke(cli, ["--config", config, "collect", "--source", "ws"])
    assert result.exit_code == 0, result.output
    rows = stored(empty_db_url)
    assert [(m, lim, st) for m, _, _, lim, st in rows] == [
        ("connections", None, None), ("documents", None, None)]
