"""Reports that race with writes (issue 12), by deterministic interleavings on both engines:
a report reads one snapshot, and never stores rollups a write it did not see has outdated."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine

import reports.pipelines.days as days_pipeline
from etl.config import parse_config
from etl.store.rollups import RollupStore, invalidate_dirty
from etl.store.writer import store_observations
from etl.vendors.types import Observation, SampleValue
from reports.frames import daily_frame

DAY = date(2026, 11, 21)
CONFIG = parse_config({"sources": [
    {"name": "ws", "kind": "wiresocket", "region": "eu", "token_env": "RACE_WS",
     "interval_seconds": 300},
    {"name": "rules", "kind": "nected", "api_key_env": "RACE_NK", "interval_seconds": 300},
]})


def at(hour: int) -> datetime:
    return datetime(2026, 11, 21, hour, tzinfo=UTC)


def nected(hour: int, value: float) -> Observation:
    body = json.dumps({"data": {"invocations": value}, "code": "success"})
    return Observation("rules", "nected", at(hour), body, (SampleValue("invocations", value),),
                       origin="import")


def wiresocket(hour: int) -> Observation:
    return Observation("ws", "wiresocket", at(hour), "{}",
                       (SampleValue("connections", 5.0, 10.0), SampleValue("documents", 1.0)),
                       origin="import")


def store(engine: Engine, *observations: Observation) -> None:
    with engine.begin() as conn:
        store_observations(conn, list(observations))


def samples_of(frame, metric: str) -> int:  # type: ignore[no-untyped-def]
    return int(frame[frame["metric"] == metric]["samples"].iloc[0])


def test_a_report_reads_one_snapshot_while_a_late_import_commits(
    engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store(engine, wiresocket(10), nected(10, 100))
    real = days_pipeline.read_samples_many
    calls = []

    def read_then_commit(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # between the report's first read and its next ones
            store(engine, nected(11, 150), wiresocket(11))
        return out

    monkeypatch.setattr(days_pipeline, "read_samples_many", read_then_commit)
    frame = daily_frame(engine, CONFIG, DAY, DAY, rollups=False)
    # Every series as of the report's start: 1 sample each, none of the late import.
    assert [samples_of(frame, m) for m in ("connections", "documents", "invocations")] == [1, 1, 1]
    monkeypatch.setattr(days_pipeline, "read_samples_many", real)
    again = daily_frame(engine, CONFIG, DAY, DAY, rollups=False)
    assert [samples_of(again, m) for m in ("connections", "documents", "invocations")] == [2, 2, 2]


def test_rollups_are_not_stored_when_a_write_committed_after_the_reads_began(
    engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store(engine, wiresocket(10), nected(10, 100))
    real_flush = RollupStore.flush

    def late_write_then_flush(self: RollupStore) -> None:
        # Between the report's reads and its rollup write: a late import commits, and
        # another report consumes its dirty marks.
        store(engine, nected(11, 150), wiresocket(11))
        invalidate_dirty(engine)
        real_flush(self)

    monkeypatch.setattr(RollupStore, "flush", late_write_then_flush)
    first = daily_frame(engine, CONFIG, DAY, DAY)
    assert samples_of(first, "invocations") == 1  # what its snapshot held
    monkeypatch.setattr(RollupStore, "flush", real_flush)
    warm = daily_frame(engine, CONFIG, DAY, DAY)
    assert [samples_of(warm, m) for m in ("connections", "documents", "invocations")] == [2, 2, 2]
    assert float(warm[warm["metric"] == "invocations"]["increase"].iloc[0]) == 50.0


def test_two_cold_reports_of_one_day_at_once_both_succeed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store(engine, wiresocket(10), nected(10, 100), nected(11, 160))
    real_flush = RollupStore.flush
    nested = []

    def other_report_first(self: RollupStore) -> None:
        # Report A has computed its rows; report B (another replica) runs whole and stores
        # the same days before A writes.
        if not nested:
            nested.append(1)
            daily_frame(engine, CONFIG, DAY, DAY)
        real_flush(self)

    monkeypatch.setattr(RollupStore, "flush", other_report_first)
    first = daily_frame(engine, CONFIG, DAY, DAY)
    assert float(first[first["metric"] == "invocations"]["increase"].iloc[0]) == 60.0
    monkeypatch.setattr(RollupStore, "flush", real_flush)
    warm = daily_frame(engine, CONFIG, DAY, DAY)
    assert float(warm[warm["metric"] == "invocations"]["increase"].iloc[0]) == 60.0


@pytest.mark.postgres
def test_two_cold_reports_writing_the_same_days_at_once_on_postgres_both_succeed(
    pg_url: str,
) -> None:
    from sqlalchemy import event

    from etl.store.engine import make_engine, upgrade

    engine = make_engine(pg_url)
    upgrade(engine)
    store(engine, wiresocket(10), nected(10, 100), nected(11, 160))
    fired = []

    def other_replica(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        # Report A is inside its rollup transaction, about to insert; report B (another
        # replica, its own connection) computes and stores the same day first and commits.
        if statement.startswith("INSERT INTO rollup_days") and not fired:
            fired.append(1)
            other = make_engine(pg_url)
            try:
                daily_frame(other, CONFIG, DAY, DAY)
            finally:
                other.dispose()

    event.listen(engine, "before_cursor_execute", other_replica)
    try:
        first = daily_frame(engine, CONFIG, DAY, DAY)
    finally:
        event.remove(engine, "before_cursor_execute", other_replica)
    assert fired
    assert float(first[first["metric"] == "invocations"]["increase"].iloc[0]) == 60.0
    warm = daily_frame(engine, CONFIG, DAY, DAY)
    assert float(warm[warm["metric"] == "invocations"]["increase"].iloc[0]) == 60.0
    engine.dispose()
