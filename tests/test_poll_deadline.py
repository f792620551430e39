"""A poll ends within its interval, reading included: a vendor trickling its body byte by byte.

The simulator's `trickle` fault answers at once, then sends the body one byte every 0.5 s
(a WireSocket body of about 330 bytes would take close to 3 minutes): the read timeout
restarts with every byte, so only a deadline over the whole read ends it. The bounds below
sit halfway to the minutes the whole read would take: a loaded machine makes the deadline's
end late by seconds, never by minutes; a read no deadline ends passes them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from etl.cli import cli
from etl.collect.http import PacerRegistry
from etl.collect.poll import Collector
from etl.config import SourceConfig, load_config
from etl.runtime.scheduler import Scheduler
from etl.runtime.simulator import SimulatedVendor
from etl.store.models import CollectionAttempt
from etl.store.spool import Spool
from etl.vendors.types import Outcome
from tests.factories import write_sim_config

TRICKLE_S = 0.5
# Half the time the trickled WireSocket body (about 330 bytes) takes to arrive in full.
HALF_THE_BODY_S = 330 * TRICKLE_S / 2


def ws_source(sim: SimulatedVendor, monkeypatch: pytest.MonkeyPatch, *, interval: float,
              timeout: float) -> SourceConfig:
    monkeypatch.setenv("TEST_TRICKLE_WS_TOKEN", sim.token)
    return SourceConfig(name="ws", kind="wiresocket", interval_seconds=interval,
                        base_url=sim.base_url, secret_env="TEST_TRICKLE_WS_TOKEN",
                        timeout_seconds=timeout)


def test_a_trickled_body_ends_as_timeout_at_the_polls_deadline(
        simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("trickle", vendor="wiresocket", delay=TRICKLE_S)
    # 10 s interval: the poll's deadline is 8 s away; the request timeout (30 s) is longer.
    src = ws_source(simulator, monkeypatch, interval=10, timeout=30)
    began = time.monotonic()
    with Collector([src], pacers=PacerRegistry()) as collector:
        result = collector.poll(src)
    took = time.monotonic() - began
    assert result.outcome == Outcome.TIMEOUT and result.observation is None
    assert result.http_status == 200 and result.tries == 1
    assert result.error is not None and result.error.startswith("read timed out: ")
    assert "bytes of the body in" in result.error
    assert took < HALF_THE_BODY_S  # the deadline is 8 s away


def test_collect_with_a_trickling_vendor_ends_each_try_at_the_request_timeout(
        simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("trickle", vendor="wiresocket", delay=TRICKLE_S)
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch,
                              interval=60, timeout=3)
    began = time.monotonic()
    result = CliRunner().invoke(cli, ["--config", config, "collect"])
    took = time.monotonic() - began
    assert result.exit_code == 1, result.output
    ws_line = next(ln for ln in result.stdout.splitlines() if ln.startswith("ws "))
    assert " timeout " in ws_line and "read timed out" in ws_line
    rules_line = next(ln for ln in result.stdout.splitlines() if ln.startswith("rules "))
    assert " ok " in rules_line
    # 4 tries of at most 3 s each plus backoff, well inside the 48 s deadline.
    assert "4 tries" in ws_line and took < 48
    engine_rows = _attempts(sqlite_url)
    assert ("ws", "timeout", 4) in engine_rows


def _attempts(url: str) -> list[tuple[str, str, int]]:
    from etl.store.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(  # type: ignore[misc]
                select(CollectionAttempt.source, CollectionAttempt.outcome,
                       CollectionAttempt.tries))]
    finally:
        engine.dispose()


def test_the_daemon_records_a_trickled_poll_as_timeout_within_its_interval(
        simulator: SimulatedVendor, engine: Engine, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("trickle", vendor="wiresocket", delay=TRICKLE_S)
    url = engine.url.render_as_string(hide_password=False)
    config = load_config(write_sim_config(tmp_path / "c.toml", simulator, url, monkeypatch,
                                          interval=10, timeout=30))
    src = config.source("ws")
    with Collector([src], pacers=PacerRegistry()) as collector:
        sched = Scheduler(config, engine, collector=collector, sources=[src],
                          spool=Spool(tmp_path / "spool"))
        began = time.monotonic()
        result = sched.poll_source(src)
        took = time.monotonic() - began
    assert result is not None and result.outcome == Outcome.TIMEOUT
    assert took < HALF_THE_BODY_S  # the deadline is 8 s away
    with engine.connect() as conn:
        rows = conn.execute(select(CollectionAttempt.source, CollectionAttempt.outcome,
                                   CollectionAttempt.error)).all()
    assert [(s, o) for s, o, _ in rows] == [("ws", "timeout")]
    assert rows[0][2].startswith("read timed out: ")
