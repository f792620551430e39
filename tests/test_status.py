"""`usage-etl status`: per-source health from the collection record, exit 1 when stale."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine, insert

from etl.cli import cli
from etl.config import parse_config
from etl.runtime.status import format_plain, source_statuses
from etl.store.models import SourceState
from etl.store.writer import record_attempt
from tests.factories import write_config

SOURCES = [
    {"name": "ws-prod", "kind": "wiresocket", "base_url": "http://127.0.0.1:9",
     "token_env": "STATUS_TEST_UNSET_TOKEN", "interval_seconds": 60},
    {"name": "rules", "kind": "nected", "base_url": "http://127.0.0.1:9",
     "api_key_env": "STATUS_TEST_UNSET_KEY", "interval_seconds": 300, "staleness_seconds": 3600},
    {"name": "never", "kind": "nected", "base_url": "http://127.0.0.1:9",
     "api_key_env": "STATUS_TEST_UNSET_KEY", "interval_seconds": 60},
]


def write_status_config(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path / "usage-etl.toml", {
        "database_url": url, "spool_dir": str(tmp_path / "spool"), "sources": SOURCES})


def attempt(engine: Engine, source: str, ago: float, outcome: str = "ok",
            error: str | None = None) -> None:
    at = datetime.now(UTC) - timedelta(seconds=ago)
    with engine.begin() as conn:
        record_attempt(conn, source=source, started_at=at, finished_at=at, outcome=outcome,
                       error=error)


def test_status_shows_health_and_exits_1_when_a_source_is_stale(
    engine: Engine, tmp_path: Path
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    cfg = write_status_config(tmp_path, url)
    # ws-prod: fresh success, then two auth failures and a pause recorded by the scheduler.
    attempt(engine, "ws-prod", 30)
    attempt(engine, "ws-prod", 20, "auth_error", "HTTP 401 from vendor")
    attempt(engine, "ws-prod", 10, "auth_error", "HTTP 401 from vendor")
    paused_until = datetime.now(UTC) + timedelta(minutes=2)
    with engine.begin() as conn:
        conn.execute(insert(SourceState), {
            "source": "ws-prod", "consecutive_failures": 2, "paused_until": paused_until,
            "pause_reason": "authentication failed", "updated_at": datetime.now(UTC),
        })
    # rules: last success 30 minutes ago: stale after 2 x 300 s, but staleness_seconds=3600.
    attempt(engine, "rules", 1800)
    attempt(engine, "rules", 600, "timeout", "read timed out")

    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(cfg), "status", "--json"])
    assert result.exit_code == 1, result.output  # "never" was never polled
    data = json.loads(result.stdout)
    by_name = {s["source"]: s for s in data["sources"]}
    assert [s["source"] for s in data["sources"]] == ["ws-prod", "rules", "never"]
    ws = by_name["ws-prod"]
    assert ws["stale"] is False and ws["consecutive_failures"] == 2
    assert ws["last_error"] == "auth_error: HTTP 401 from vendor"
    assert ws["paused_until"] is not None and ws["pause_reason"] == "authentication failed"
    rules = by_name["rules"]
    assert rules["stale"] is False and rules["consecutive_failures"] == 1
    assert rules["last_error"].startswith("timeout")
    assert 1700 < rules["age_seconds"] < 1900
    never = by_name["never"]
    assert never["stale"] is True and never["last_success"] is None
    assert data["stale"] is True

    plain = runner.invoke(cli, ["--config", str(cfg), "status"])
    assert plain.exit_code == 1
    lines = plain.stdout.splitlines()
    assert lines[0].split()[:2] == ["source", "state"]
    assert [line.split()[:2] for line in lines[1:4]] == [
        ["ws-prod", "paused"], ["rules", "ok"], ["never", "stale"],
    ]


def test_all_fresh_exits_0_and_old_success_is_stale(engine: Engine, tmp_path: Path) -> None:
    url = engine.url.render_as_string(hide_password=False)
    cfg = write_status_config(tmp_path, url)
    attempt(engine, "ws-prod", 5)
    attempt(engine, "rules", 5)
    attempt(engine, "never", 5)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "status"])
    assert result.exit_code == 0, result.output

    config = parse_config({"database_url": url, "sources": SOURCES[:1]})
    later = datetime.now(UTC) + timedelta(seconds=125)  # beyond 2 x 60 s
    (status,) = source_statuses(engine, config, now=later)
    assert status.stale and status.age_seconds is not None and status.age_seconds > 120
    assert "stale" in format_plain([status]).splitlines()[1]


def test_paused_and_stale_shows_both_with_the_window_and_unreadable_spool_files(
    engine: Engine, tmp_path: Path
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    cfg = write_status_config(tmp_path, url)
    attempt(engine, "ws-prod", 600)  # stale: 600 s > 2 x 60 s
    attempt(engine, "ws-prod", 30, "auth_error", "HTTP 401 from vendor")
    attempt(engine, "rules", 5)
    attempt(engine, "never", 5)
    with engine.begin() as conn:
        conn.execute(insert(SourceState), {
            "source": "ws-prod", "consecutive_failures": 1,
            "paused_until": datetime.now(UTC) + timedelta(minutes=1),
            "pause_reason": "authentication failed", "updated_at": datetime.now(UTC),
        })
    bad = tmp_path / "spool" / "unreadable"
    bad.mkdir(parents=True)
    (bad / "00000000000000000001-rules-deadbeef.json").write_text("{not json")

    plain = CliRunner().invoke(cli, ["--config", str(cfg), "status"])
    assert plain.exit_code == 1
    lines = plain.stdout.splitlines()
    header = lines[0]
    assert "stale after" in header
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert rows["ws-prod"].split()[1] == "stale,paused"
    assert rows["rules"].split()[1] == "ok"
    # The window sits under its header: 2 x 60 s, and the configured 3600 s.
    column = header.index("stale after")
    assert rows["ws-prod"][column:].split()[0] == "120s"
    assert rows["rules"][column:].split()[0] == "3600s"
    assert lines[-1].startswith(f"1 spool file(s) could not be read and are not replayed: see {bad}")

    data = json.loads(CliRunner().invoke(cli, ["--config", str(cfg), "status", "--json"]).stdout)
    assert data["spool_unreadable"] == 1 and data["spool_pending"] == 0
    ws = next(s for s in data["sources"] if s["source"] == "ws-prod")
    assert ws["stale"] is True and ws["paused_until"] is not None
