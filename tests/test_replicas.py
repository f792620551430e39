"""Several `usage-etl schedule` replicas on one PostgreSQL database poll each slot only once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from etl.config import parse_config
from etl.slots import slot_bounds, slot_of
from etl.store.engine import make_engine, upgrade
from etl.store.models import CollectionAttempt
from etl.store.state import PollGate
from etl.store.writer import record_attempt
from tests.daemon import (
    PATIENCE,
    daemon_env,
    log_events,
    ok_counts,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.factories import (
    create_pg_database,
    drop_pg_database,
    load,
    unique_sim,
    write_daemon_config,
)

pytestmark = pytest.mark.postgres


def test_two_daemons_never_poll_a_source_twice_in_one_interval(tmp_path: Path) -> None:
    url = create_pg_database()
    try:
        engine = make_engine(url)
        upgrade(engine)
        with unique_sim() as sim:
            procs = []
            logs = []
            for name in ("a", "b"):
                home = tmp_path / name
                home.mkdir()
                cfg = write_daemon_config(home, url, sim)
                logs.append(home / "daemon.log")
                procs.append(start_daemon(cfg, daemon_env(sim), logs[-1]))
            try:
                wait_for("three polls of each source",
                         lambda: len(ok_counts(url)) == 2 and min(ok_counts(url).values()) >= 3,
                         timeout=PATIENCE)
            finally:
                codes = [stop_daemon(p) for p in procs]
            assert codes == [0, 0]
            # Both replicas polled the vendor's rate-limited token; none was refused.
            assert sim.request_count(status=429) == 0
            served = sim.request_count(status=200)
        config = load(tmp_path / "a" / "usage-etl.toml")
        with engine.connect() as conn:
            rows = conn.execute(
                select(CollectionAttempt.source, CollectionAttempt.started_at,
                       CollectionAttempt.outcome)
            ).all()
        engine.dispose()
        assert {o for _, _, o in rows} == {"ok"} and len(rows) == served
        per_slot = Counter((s, slot_of(s, config.source(s).interval_seconds, at)) for s, at, _ in rows)
        assert max(per_slot.values()) == 1, per_slot
        # Every logged poll came from one replica or the other, never both.
        logged = [e for log in logs for e in log_events(log) if e.get("event") == "poll"]
        assert len(logged) == len(rows)
    finally:
        drop_pg_database(url)


def test_poll_gate_grants_a_slot_once(tmp_path: Path) -> None:
    url = create_pg_database()
    try:
        engine = make_engine(url)
        upgrade(engine)
        config = parse_config({"sources": [{
            "name": "rules", "kind": "nected", "base_url": "http://127.0.0.1:9",
            "api_key_env": "X", "interval_seconds": 60,
        }]})
        src = config.source("rules")
        now = datetime.now(UTC)
        first, second = PollGate(engine), PollGate(engine)
        holding = threading.Event()
        release = threading.Event()
        seen: list[str] = []

        def hold() -> None:
            with first.claim(src, now) as claim:
                seen.append("granted" if claim.granted else claim.reason)
                holding.set()
                release.wait(PATIENCE)
                if claim.granted:
                    with engine.begin() as conn:
                        record_attempt(conn, source="rules", started_at=now, outcome="ok")

        t = threading.Thread(target=hold)
        t.start()
        assert holding.wait(PATIENCE)
        with second.claim(src, now) as claim:
            assert (claim.granted, claim.reason) == (False, "locked")
        release.set()
        t.join(PATIENCE)
        assert seen == ["granted"]
        with second.claim(src, now) as claim:
            assert (claim.granted, claim.reason) == (False, "slot-taken")
        _, end = slot_bounds(src.name, src.interval_seconds,
                             slot_of(src.name, src.interval_seconds, now))
        with second.claim(src, end) as claim:  # the next slot is free again
            assert claim.granted
        engine.dispose()
    finally:
        drop_pg_database(url)
