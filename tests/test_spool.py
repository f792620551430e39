"""The spool: polls kept on disk while the database is away are written back exactly once."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from etl.store.engine import make_engine, upgrade
from etl.store.models import CollectionAttempt, Sample, Snapshot
from etl.store.spool import Spool, SpoolInUseError, poll_to_dict
from etl.vendors.types import Observation, Outcome, PollRecord, SampleValue
from tests.factories import failed_poll, ok_poll

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def minute(i: int) -> datetime:
    return T0 + timedelta(seconds=60 * i)


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(CollectionAttempt)).scalar_one(),
            conn.execute(select(func.count()).select_from(Snapshot)).scalar_one(),
            conn.execute(select(func.count()).select_from(Sample)).scalar_one(),
        )


def test_spooled_poll_reads_back_identically(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    polls = [ok_poll(minute(1), 1000 + 1), failed_poll(minute(2))]
    paths = [spool.put(p) for p in polls]
    assert spool.pending() == sorted(paths)
    assert [spool.load(p) for p in spool.pending()] == polls
    # Nothing half-written is left behind next to the records.
    assert sorted(x.name for x in (tmp_path / "spool").iterdir()) == sorted(p.name for p in paths)


def test_replay_stores_each_poll_once_and_empties_the_spool(
    engine: Engine, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    for i in range(3):
        spool.put(ok_poll(minute(i), 1000 + i))
    spool.put(failed_poll(minute(5)))
    result = spool.replay(engine)
    assert (result.replayed, result.remaining, result.error) == (4, 0, None)
    assert spool.pending() == []
    assert counts(engine) == (4, 3, 3)
    with engine.connect() as conn:
        origins = set(conn.execute(select(Snapshot.origin)).scalars())
        stored = conn.execute(
            select(CollectionAttempt.samples_stored).where(CollectionAttempt.outcome == "ok")
        ).scalars().all()
    assert origins == {"spool"} and stored == [1, 1, 1]

    # A crash after the commit but before the file was deleted: the same files come back.
    for i in range(3):
        spool.put(ok_poll(minute(i), 1000 + i))
    again = spool.replay(engine)
    assert (again.replayed, again.already_stored) == (0, 3)
    assert counts(engine) == (4, 3, 3)
    assert spool.pending() == []


def test_locked_database_keeps_files_until_it_is_free(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS", "200")
    db = tmp_path / "u.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    spool = Spool(tmp_path / "spool")
    spool.put(ok_poll(minute(1), 1000 + 1))
    spool.put(ok_poll(minute(2), 1000 + 2))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        blocked = spool.replay(engine)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert blocked.replayed == 0 and blocked.remaining == 2
    assert "locked" in (blocked.error or "")
    assert len(spool.pending()) == 2
    done = spool.replay(engine)
    assert done.replayed == 2 and spool.pending() == []
    assert counts(engine) == (2, 2, 2)
    engine.dispose()


def test_unreadable_file_is_set_aside_not_deleted(engine: Engine, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put(ok_poll(minute(1), 1000 + 1))
    bad = spool.dir / "00000000000000000001-rules-deadbeef.json"
    bad.write_text("{not json")
    result = spool.replay(engine)
    assert (result.replayed, result.unreadable) == (1, 1)
    assert (spool.dir / "unreadable" / bad.name).read_text() == "{not json"
    assert spool.pending() == []
    assert spool.unreadable() == [spool.dir / "unreadable" / bad.name]


def test_crash_leftovers_are_kept_if_complete_and_set_aside_if_not(
    engine: Engine, tmp_path: Path
) -> None:
    """A SIGKILL between fsync and rename leaves a complete temp file: it is a poll."""
    spool = Spool(tmp_path / "spool")
    spool.put(ok_poll(minute(1), 1000 + 1))
    whole = json.dumps(poll_to_dict(ok_poll(minute(2), 1000 + 2))).encode()
    done = "00000000000000000002-rules-0000aaaa.json"
    (spool.dir / f".tmp-{done}").write_bytes(whole)
    cut = "00000000000000000003-rules-0000bbbb.json"
    (spool.dir / f".tmp-{cut}").write_bytes(whole[: len(whole) // 2])
    (spool.dir / ".tmp-00000000000000000004-rules-0000cccc.json").write_bytes(b"")

    with spool.lock():
        recovery = spool.recover_partial()
    assert recovery.restored == [done]
    assert len(recovery.set_aside) == 2 and recovery.duplicates == []
    assert not [p for p in spool.dir.iterdir() if p.name.startswith(".tmp-")]
    assert (spool.dir / "unreadable" / f"partial-{cut}").read_bytes() == whole[: len(whole) // 2]
    assert len(spool.unreadable()) == 2
    result = spool.replay(engine)
    assert (result.replayed, result.unreadable) == (2, 0)
    assert counts(engine) == (2, 2, 2)


def test_a_second_owner_of_the_spool_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    first, second = Spool(tmp_path / "spool"), Spool(tmp_path / "spool")
    held = first.lock()
    in_flight = first.dir / ".tmp-00000000000000000009-rules-0000dddd.json"
    in_flight.write_bytes(b'{"version": 1, "sou')  # the owner is half-way through a write
    with pytest.raises(SpoolInUseError, match=r"in use by another usage-etl schedule \(pid \d+\)"):
        second.lock()
    assert in_flight.exists()
    held.release()
    second.lock().release()  # free again once the owner is gone


def test_a_spooled_http_json_poll_keeps_its_per_item_series_types(
    engine: Engine, tmp_path: Path
) -> None:
    from etl.store.models import Series
    from etl.vendors.types import MetricType

    at = datetime(2026, 11, 21, 10, tzinfo=UTC)
    samples = (SampleValue("storage_gb:web-app", 12.0, 50.0, None, MetricType.GAUGE),
               SampleValue("requests:web-app", 900.0, None, None, MetricType.COUNTER))
    obs = Observation("projects", "http_json", at, "{}", samples, at)
    spool = Spool(tmp_path / "spool")
    spool.put(PollRecord("projects", Outcome.OK, at, at, 200, 5.0, 1, None, obs))
    assert spool.replay(engine).replayed == 1
    with engine.connect() as conn:
        types = dict(conn.execute(select(Series.metric, Series.metric_type)).all())
    assert types == {"storage_gb:web-app": "gauge", "requests:web-app": "counter"}
