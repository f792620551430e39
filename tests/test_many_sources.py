"""Many sources (issue 12): the daemon's threads are bounded whatever the number of sources,
and its stop timeout holds."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from etl.config import parse_config
from etl.runtime.scheduler import MAX_POLL_WORKERS, POLL_THREAD_PREFIX, Scheduler
from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine, upgrade

SOURCES = 10_000


def job_threads() -> int:
    return sum(t.name.startswith(POLL_THREAD_PREFIX) for t in threading.enumerate())


def test_ten_thousand_sources_use_a_bounded_pool_and_stop_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = f"many-{uuid.uuid4().hex}"
    monkeypatch.setenv("MANY_SOURCES_TOKEN", token)
    with SimulatedVendor(tokens=(token,)) as sim:
        # Every request hangs far longer than the test: polls only ever pile up.
        sim.set_fault("slow", delay=600)
        config = parse_config({
            "database_url": f"sqlite:///{tmp_path / 'usage.db'}",
            "spool_dir": str(tmp_path / "spool"),
            "reports_dir": str(tmp_path / "reports"),
            "sources": [{"name": f"s{i:05d}", "kind": "wiresocket", "base_url": sim.base_url,
                         "token_env": "MANY_SOURCES_TOKEN", "interval_seconds": 3600,
                         "timeout_seconds": 1200} for i in range(SOURCES)],
        })
        engine = make_engine(config.database_url)
        upgrade(engine)
        scheduler = Scheduler(config, engine, stop_timeout=1)
        scheduler.start()
        try:
            # Every source is due at once; watch the pool while the polls pile up.
            most = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and sim.request_count() < 12:
                most = max(most, job_threads())
                time.sleep(0.05)
            for _ in range(40):
                most = max(most, job_threads())
                time.sleep(0.05)
            assert sim.request_count() >= 1
        finally:
            began = time.monotonic()
            clean = scheduler.stop()
            took = time.monotonic() - began
            engine.dispose()
    assert most <= MAX_POLL_WORKERS + 2, most
    # Polls stuck on the vendor are given up after --stop-timeout (1 s here), plus the
    # finishing grace and the last spool replay's second: never a wait per source.
    assert not clean and scheduler.threads_left
    assert took < 30, took
