"""A database that stops answering (issue 12): polling goes on, each database step has a
client-side time limit, and past it the poll is spooled with the reason logged."""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from etl.config import parse_config
from etl.runtime.daemon_db import daemon_engine
from etl.runtime.scheduler import Scheduler
from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine, upgrade
from etl.vendors.types import Outcome, PollRecord
from tests.tcp_proxy import TcpProxy

# How long a test waits for a poll that must not hang: far above the 1 s step limit, far
# below forever (which is what a poll waited before the limit).
PATIENCE = 120.0


def attempts(url: str) -> list[str]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return [r[0] for r in conn.execute(
                text("SELECT source FROM collection_attempts ORDER BY started_at"))]
    finally:
        eng.dispose()


def poll_in_thread(scheduler: Scheduler, source: object) -> PollRecord | None:
    box: list[PollRecord | None] = []
    worker = threading.Thread(target=lambda: box.append(scheduler.poll_source(source)),  # type: ignore[arg-type]
                              daemon=True)
    worker.start()
    worker.join(PATIENCE)
    assert box, "the poll hung on the database"
    return box[0]


@pytest.mark.postgres
def test_a_hung_postgres_never_stops_polling_and_the_poll_is_spooled_with_the_reason(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="etl")
    direct = make_engine(pg_url)
    upgrade(direct)
    direct.dispose()
    tag = uuid.uuid4().hex
    monkeypatch.setenv("HUNG_WS", f"ws-{tag}")
    monkeypatch.setenv("HUNG_NK", f"nk-{tag}")
    with TcpProxy("127.0.0.1", 5432) as proxy, SimulatedVendor(
            tokens=(f"ws-{tag}",), api_keys=(f"nk-{tag}",)) as sim:
        proxied = pg_url.replace(":5432/", f":{proxy.port}/")
        config = parse_config({
            "database_url": proxied, "spool_dir": str(tmp_path / "spool"),
            "sources": [
                {"name": "ws", "kind": "wiresocket", "base_url": sim.base_url,
                 "token_env": "HUNG_WS", "interval_seconds": 60},
                {"name": "rules", "kind": "nected", "base_url": sim.base_url,
                 "api_key_env": "HUNG_NK", "interval_seconds": 60},
            ]})
        engine = daemon_engine(proxied)
        # The 1 s step limit is for the silent server: before it, a busy machine's slow
        # step must not be taken for one.
        scheduler = Scheduler(config, engine, db_step_timeout=PATIENCE)
        ws, rules = config.sources
        first = poll_in_thread(scheduler, ws)
        assert first is not None and first.outcome is Outcome.OK
        assert attempts(pg_url) == ["ws"]
        # The server goes silent: connections stay open (pooled ones too), nothing answers.
        scheduler.db.limit_s = 1.0
        proxy.stall()
        second = poll_in_thread(scheduler, rules)
        assert second is not None and second.outcome is Outcome.OK
        assert sim.request_count(vendor="nected") == 1  # the vendor call did not wait
        assert len(scheduler.spool) == 1
        spooled = [r.fields for r in caplog.records  # type: ignore[attr-defined]
                   if getattr(r, "event", None) == "spooled"]
        assert [f["source"] for f in spooled] == ["rules"]
        assert "the database did not answer within 1 s" in spooled[0]["database_error"]
        # The server answers again: the spooled poll is written, once.
        proxy.restore()
        scheduler.recovery.replay()
        assert sorted(attempts(pg_url)) == ["rules", "ws"]
        engine.dispose()
