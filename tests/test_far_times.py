"""Far-off times (SPEC 4, amended 2026-12-06): archives keep to 1970-01-01..9999-12-31, a live
poll's vendor time more than a day from the collector's clock gives way to the clock, and
nothing that reads stored times (export, reports) fails on the ends of the range."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text

from etl.cli import cli
from etl.collect.poll import Collector
from etl.store.archive import import_archives
from etl.store.models import CollectionAttempt, Sample, Series, Snapshot
from etl.store.writer import record_polls_apart
from tests.factories import (
    LoopbackVendor,
    http_json_config,
    json_answer,
    store,
    wiresocket,
    write_config,
)

NOW = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
TIMED = 'timestamp = "at"\n'


def line(at: str, used: float, *, in_body: bool = True) -> str:
    body: dict[str, object] = {"used": used, "plan": {"limit": 10}, "data": []}
    if in_body:
        body["at"] = at
        return json.dumps({"source": "acme", "body": body})
    return json.dumps({"source": "acme", "observed_at": at, "body": body})


def test_import_refuses_times_outside_1970_to_9999_by_line_and_keeps_the_rest(
    engine: Engine, tmp_path: Path,
) -> None:
    config = http_json_config("http://127.0.0.1:9", extra=TIMED)
    archive = tmp_path / "far.jsonl"
    archive.write_text("\n".join([
        line("0001-01-01T00:00:00Z", 1),                      # Go's zero time
        line("1970-01-01T00:00:00Z", 2),                      # the first instant kept
        line("1969-12-31T23:59:59.999999Z", 3, in_body=False),
        line("9999-12-31T23:59:59Z", 4),                      # the last second kept
        line("9999-12-31T23:30:00-01:00", 5),                 # year 10000 in UTC
        line("2026-12-06T10:00:00+01:00", 6, in_body=False),
    ]) + "\n")
    problems: list[str] = []
    result = import_archives(engine, config, [str(archive)], on_problem=problems.append)
    assert problems == [
        f"{archive}:1: body: observation time: 0001-01-01T00:00:00Z is outside "
        "1970-01-01 to 9999-12-31",
        f"{archive}:3: observed_at: 1969-12-31T23:59:59.999999Z is outside "
        "1970-01-01 to 9999-12-31",
        f"{archive}:5: body: timestamp: '9999-12-31T23:30:00-01:00' is outside "
        "1970-01-01 to 9999-12-31",
    ]
    assert result.bad_lines == 3 and result.snapshots == 3
    with engine.connect() as conn:
        kept = conn.execute(select(Sample.observed_at, Sample.value).join(Series)
                            .where(Series.metric == "used").order_by(Sample.observed_at)).all()
    assert [tuple(r) for r in kept] == [
        (datetime(1970, 1, 1, tzinfo=UTC), 2.0),
        (datetime(2026, 12, 6, 9, tzinfo=UTC), 6.0),
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), 4.0),
    ]


@pytest.mark.parametrize(("vendor_time", "stored_at", "note"), [
    ("0001-01-01T00:00:00Z", NOW, "the vendor's time 0001-01-01T00:00:00Z is more than a day "
                                  "from the collector's clock: stored at 2026-12-06T18:00:00Z"),
    ("2026-12-05T17:59:59Z", NOW, "the vendor's time 2026-12-05T17:59:59Z is more than a day "
                                  "from the collector's clock: stored at 2026-12-06T18:00:00Z"),
    ("2036-01-01T00:00:00Z", NOW, "the vendor's time 2036-01-01T00:00:00Z is more than a day "
                                  "from the collector's clock: stored at 2026-12-06T18:00:00Z"),
    # Within a day: the vendor's own time, as for every vendor whose clock is a little off.
    ("2026-12-05T18:00:01Z", datetime(2026, 12, 5, 18, 0, 1, tzinfo=UTC), None),
])
def test_a_live_vendor_time_far_from_the_clock_is_replaced_and_the_attempt_says_why(
    engine: Engine, loopback_vendor: LoopbackVendor, vendor_time: str, stored_at: datetime,
    note: str | None,
) -> None:
    loopback_vendor.answer = json_answer({"at": vendor_time, "used": 9.7,
                                          "plan": {"limit": 10}, "data": []})
    source = http_json_config(loopback_vendor.url, extra=TIMED).sources[0]
    with Collector([source], now=lambda: NOW) as collector:
        record_polls_apart(engine, [collector.poll(source)])
    with engine.connect() as conn:
        attempt = conn.execute(select(CollectionAttempt.outcome, CollectionAttempt.error)).one()
        samples = conn.execute(select(Sample.observed_at, Sample.value)).all()
        payload = conn.execute(select(Snapshot.payload)).scalar_one()
    assert tuple(attempt) == ("ok", note)
    assert [tuple(r) for r in samples] == [(stored_at, 9.7)]
    assert json.loads(payload)["at"] == vendor_time  # the body as the vendor sent it


def _server_zone(engine: Engine, zone: str) -> None:
    """Give a PostgreSQL database a zone of its own, as servers outside UTC have."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text(f"ALTER DATABASE \"{engine.url.database}\" SET timezone = "
                              f"'{zone}'"))
            conn.commit()
        engine.dispose()


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York"])
def test_export_reads_times_at_both_ends_of_what_a_database_holds_in_any_zone(
    engine: Engine, tmp_path: Path, zone: str,
) -> None:
    # What earlier versions stored from live polls and archives: year 1 and year 9999.
    store(engine, [wiresocket(datetime(1, 1, 1, 12, tzinfo=UTC), 97, 1, limit=100),
                   wiresocket(datetime(9999, 12, 31, 23, 30, tzinfo=UTC), 98, 1, limit=100)])
    _server_zone(engine, zone)
    cfg = write_config(tmp_path / "c.toml", {
        "database_url": engine.url.render_as_string(hide_password=False), "timezone": zone,
        "sources": [{"name": "ws-prod", "kind": "wiresocket", "region": "eu",
                     "token_env": "UNSET_WS"}]})
    runner = CliRunner()
    lines = runner.invoke(cli, ["--config", str(cfg), "export", "--start", "0001-01-01",
                                "--end", "9999-12-31"])
    assert lines.exit_code == 0, lines.output
    assert [json.loads(x)["observed_at"] for x in lines.stdout.splitlines()] == [
        "0001-01-01T12:00:00Z", "9999-12-31T23:30:00Z"]
    rows = runner.invoke(cli, ["--config", str(cfg), "export", "--format", "csv",
                               "--start", "9999-12-31", "--end", "9999-12-31"])
    assert rows.exit_code == 0, rows.output
    assert [r.split(",")[:4] for r in rows.stdout.splitlines()[1:]] == [
        ["9999-12-31T23:30:00Z", "ws-prod", "connections", "98"],
        ["9999-12-31T23:30:00Z", "ws-prod", "documents", "1"]]


@pytest.mark.parametrize(("args", "message"), [
    (["report", "daily", "--date", "9999-12-31"],
     "--date: 9999-12-31 is outside the days reports cover (1970-01-01 to 9999-12-30)"),
    (["report", "daily", "--start", "1969-12-31", "--end", "1970-01-02"],
     "--start: 1969-12-31 is outside the days reports cover (1970-01-01 to 9999-12-30)"),
    (["report", "billing", "--month", "9999-12"],
     "--month: 9999-12 is outside the months reports cover (1970-01 to 9999-11)"),
    (["report", "billing", "--month", "0001-01"],
     "--month: 0001-01 is outside the months reports cover (1970-01 to 9999-11)"),
])
def test_a_report_period_past_the_stored_range_is_refused_in_one_line(
    tmp_path: Path, sqlite_url: str, args: list[str], message: str,
) -> None:
    cfg = write_config(tmp_path / "c.toml", {"database_url": sqlite_url, "timezone": "UTC"})
    result = CliRunner().invoke(cli, ["--config", str(cfg), *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == f"usage-etl: error: {message}\n"
