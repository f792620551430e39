"""A spooled poll the database refuses (issue 12) never blocks the others, and is moved aside
with its reason after a bounded number of tries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from etl.store.spool import BAD_DIR, MAX_REPLAY_TRIES, Spool
from etl.vendors.types import Observation, Outcome, PollRecord, SampleValue

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def poll(source: str, at: datetime, status: str) -> PollRecord:
    body = '{"usage": {}}'
    obs = Observation(source, "wiresocket", at, body,
                      (SampleValue("connections", 5.0, 10.0, status),
                       SampleValue("documents", 1.0, None, None)), at, "collect")
    return PollRecord(source, Outcome.OK, at, at, 200, 12.0, 1, None, obs)


def stored_sources(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(
            text("SELECT source FROM collection_attempts ORDER BY started_at"))]


def test_a_refused_spool_file_is_skipped_then_set_aside_with_its_reason(
    engine: Engine, tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    # A lone surrogate: no database can store it as text (older spool files may hold one).
    bad = spool.put(poll("ws-a", T0, "warn\ud800"))
    spool.put(poll("ws-b", T0 + timedelta(minutes=1), "ok"))
    first = spool.replay(engine)
    assert (first.replayed, first.refused, first.set_aside) == (1, 1, [])
    assert stored_sources(engine) == ["ws-b"]  # the healthy poll did not wait behind it
    for _ in range(MAX_REPLAY_TRIES - 2):
        assert spool.replay(engine).refused == 1
    last = spool.replay(engine)
    assert (last.refused, last.set_aside) == (0, [bad.name])
    assert spool.pending() == []
    aside = tmp_path / "spool" / BAD_DIR
    assert (aside / bad.name).is_file()
    reason = (aside / (bad.name + ".reason")).read_text()
    assert reason.startswith(f"refused by the database {MAX_REPLAY_TRIES} times: ")
    assert "surrogate" in reason
    assert spool.replay(engine).refused == 0
    assert stored_sources(engine) == ["ws-b"]


def test_a_poll_the_database_refuses_never_costs_the_healthy_one_beside_it(
    engine: Engine,
) -> None:
    from etl.store.writer import record_polls_apart

    bad, good = poll("ws-a", T0, "warn\ud800"), poll("ws-b", T0, "ok")
    recorded = record_polls_apart(engine, [bad, good])
    assert [(r.source, r.outcome) for r in recorded] == [
        ("ws-a", Outcome.INVALID_RESPONSE), ("ws-b", Outcome.OK)]
    assert (recorded[0].error or "").startswith("the database refused this response: ")
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT source, outcome, samples_stored FROM collection_attempts ORDER BY source"
        )).all()
        samples = conn.execute(text("SELECT count(*) FROM samples")).scalar_one()
    assert [tuple(r) for r in rows] == [("ws-a", "invalid_response", 0), ("ws-b", "ok", 2)]
    assert samples == 2
