"""`usage-etl schedule`: the real daemon against the simulator, database outages, politeness."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from etl.collect import Collector, collect_once
from etl.config import Config, parse_config
from etl.db import make_engine, upgrade
from etl.models import CollectionAttempt, Sample, SourceState
from etl.scheduler import Scheduler, SlotTrigger, auth_pause_seconds, nightly_reports
from etl.simulator import SimulatedVendor
from etl.spool import Spool
from etl.status import source_statuses
from etl.store import forget_series_cache
from tests.conftest import create_pg_database, drop_pg_database
from tests.tcp_proxy import TcpProxy

INTERVAL = 5
REPO = Path(__file__).resolve().parent.parent


# -- helpers shared with test_replicas --------------------------------------------------------


def unique_sim() -> SimulatedVendor:
    # Fresh credentials per test: the collector paces per credential, process-wide.
    tag = uuid.uuid4().hex[:10]
    return SimulatedVendor(tokens=(f"ws-token-{tag}",), api_keys=(f"nected-key-{tag}",))


def write_config(tmp: Path, url: str, sim: SimulatedVendor, interval: int = INTERVAL) -> Path:
    cfg = tmp / "usage-etl.toml"
    cfg.write_text(
        f'database_url = "{url}"\n'
        f'spool_dir = "{tmp / "spool"}"\n'
        f'reports_dir = "{tmp / "reports"}"\n'
        "[[sources]]\n"
        'name = "ws-prod"\nkind = "wiresocket"\n'
        f'base_url = "{sim.base_url}"\ntoken_env = "SCHED_TEST_WS_TOKEN"\n'
        f"interval_seconds = {interval}\n"
        "[[sources]]\n"
        'name = "rules"\nkind = "nected"\n'
        f'base_url = "{sim.base_url}"\napi_key_env = "SCHED_TEST_NECTED_KEY"\n'
        f"interval_seconds = {interval}\n"
    )
    return cfg


def daemon_env(sim: SimulatedVendor, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SCHED_TEST_WS_TOKEN=sim.token, SCHED_TEST_NECTED_KEY=sim.api_key,
               PYTHONPATH=str(REPO), **extra)
    env.pop("USAGE_ETL_DATABASE_URL", None)
    env.pop("USAGE_ETL_SPOOL_DIR", None)
    return env


def start_daemon(cfg: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", "--config", str(cfg), "schedule", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=cfg.parent,
    )


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 40) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def ok_counts(url: str) -> dict[str, int]:
    """Successful attempts per source, read on a fresh connection."""
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(
                select(CollectionAttempt.source, func.count())
                .where(CollectionAttempt.outcome == "ok")
                .group_by(CollectionAttempt.source)
            ).all()
        return {source: n for source, n in rows}
    except Exception:  # noqa: BLE001 - the database may be away on purpose
        return {}
    finally:
        eng.dispose()


def log_events(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines()
    # --log-format json: every line on stderr is one JSON object.
    return [json.loads(line) for line in lines if line.strip()]


def attempts(engine: Engine) -> list[tuple[str, datetime, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(CollectionAttempt.source, CollectionAttempt.started_at,
                   CollectionAttempt.outcome).order_by(CollectionAttempt.started_at)
        )]


def check_nothing_lost(url: str, log: Path, secrets: list[str]) -> list[dict[str, Any]]:
    """Every poll the daemon logged is in the database exactly once; returns the polls."""
    text = log.read_text()
    for secret in secrets:
        assert secret not in text
    polls = [e for e in log_events(log) if e.get("event") == "poll"]
    engine = make_engine(url)
    try:
        rows = attempts(engine)
        with engine.connect() as conn:
            samples = conn.execute(select(func.count()).select_from(Sample)).scalar_one()
    finally:
        forget_series_cache(engine)
        engine.dispose()
    stored = [(s, at.isoformat().replace("+00:00", "Z"), o) for s, at, o in rows]
    logged = [(p["source"], p["started_at"], p["outcome"]) for p in polls]
    assert sorted(stored) == sorted(logged)  # each logged poll once, nothing else
    assert len(set(stored)) == len(stored)
    oks = [p for p in polls if p["outcome"] == "ok"]
    per_poll = {"ws-prod": 2, "rules": 1}  # samples per response
    assert samples == sum(per_poll[p["source"]] for p in oks)
    return polls


def check_on_schedule(polls: list[dict[str, Any]], min_polls: int) -> None:
    for source in ("ws-prod", "rules"):
        times = sorted(
            datetime.fromisoformat(p["started_at"].replace("Z", "+00:00"))
            for p in polls if p["source"] == source
        )
        assert len(times) >= min_polls, (source, times)
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        # Half an interval at the first (start-up) poll, one interval (+ jitter) after that;
        # never a gap that would make the source stale (2 x interval), even on a busy CI host.
        assert all(INTERVAL / 2 - 1 <= g <= INTERVAL * 2 for g in gaps), (source, gaps)
        assert sum(abs(g - INTERVAL) < 1.5 for g in gaps) >= max(1, len(gaps) // 2), (source, gaps)


# -- the daemon for real -----------------------------------------------------------------------


def test_daemon_polls_on_schedule_survives_a_locked_sqlite_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    spool = Spool(tmp_path / "spool")
    with unique_sim() as sim:
        cfg = write_config(tmp_path, url, sim)
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, daemon_env(sim, USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS="300"), log)
        try:
            wait_for("a first poll of each source",
                     lambda: len(ok_counts(url)) == 2, timeout=20)
            holder = sqlite3.connect(tmp_path / "usage.db", isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                # Polls go on while the database is locked; they land in the spool.
                wait_for("a spooled poll of each source",
                         lambda: {p.name.split("-", 1)[1].rsplit("-", 1)[0]
                                  for p in spool.pending()} == {"ws-prod", "rules"},
                         timeout=15)
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            wait_for("the spool to drain", lambda: not spool.pending(), timeout=15)
            wait_for("three polls of each source",
                     lambda: min(ok_counts(url).values()) >= 3, timeout=15)
            assert proc.poll() is None
        finally:
            code = stop_daemon(proc)
        assert code == 0, log.read_text()[-2000:]
        polls = check_nothing_lost(url, log, [sim.token, sim.api_key])
    assert {p["stored"] for p in polls} == {"db", "spool"}
    assert all(p["outcome"] == "ok" for p in polls)
    check_on_schedule(polls, min_polls=3)
    events = [e["event"] for e in log_events(log)]
    assert events[0] == "started" and events[-1] == "stopped"
    assert "spool-replayed" in events


@pytest.mark.postgres
def test_postgres_outage_through_a_cut_proxy_loses_nothing(tmp_path: Path) -> None:
    direct = create_pg_database()
    try:
        engine = make_engine(direct)
        upgrade(engine)
        engine.dispose()
        spool = Spool(tmp_path / "spool")
        with TcpProxy("127.0.0.1", 5432) as proxy, unique_sim() as sim:
            via_proxy = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            assert via_proxy != direct
            cfg = write_config(tmp_path, via_proxy, sim)
            log = tmp_path / "daemon.log"
            proc = start_daemon(cfg, daemon_env(sim), log)
            try:
                wait_for("a first poll of each source",
                         lambda: len(ok_counts(direct)) == 2, timeout=20)
                proxy.cut()
                try:
                    wait_for("a spooled poll of each source",
                             lambda: len(spool.pending()) >= 2
                             and len({p.name.split("-")[1] for p in spool.pending()}) == 2,
                             timeout=15)
                finally:
                    proxy.restore()
                wait_for("the spool to drain", lambda: not spool.pending(), timeout=15)
                assert proc.poll() is None
            finally:
                code = stop_daemon(proc)
            assert code == 0, log.read_text()[-2000:]
            polls = check_nothing_lost(direct, log, [sim.token, sim.api_key])
        assert {p["stored"] for p in polls} == {"db", "spool"}
        assert all(p["outcome"] == "ok" for p in polls)
    finally:
        drop_pg_database(direct)


def test_sigterm_waits_for_an_in_flight_poll(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with unique_sim() as sim:
        sim.set_fault("slow", delay=3.0)
        cfg = write_config(tmp_path, url, sim)
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, daemon_env(sim), log)
        try:
            wait_for("requests in flight", lambda: sim.request_count() >= 1, timeout=20)
        finally:
            code = stop_daemon(proc)
        assert code == 0
        served = sim.request_count(status=200)
    polls = check_nothing_lost(url, log, [sim.token, sim.api_key])
    # The slow answers arrived after SIGTERM and were still stored.
    assert len([p for p in polls if p["outcome"] == "ok"]) == served >= 1
    stopping = next(e for e in log_events(log) if e["event"] == "stopping")
    assert stopping["signal"] == "SIGTERM" and stopping["inflight"] >= 1


def test_schedule_refuses_missing_secret_with_exit_2(tmp_path: Path) -> None:
    with unique_sim() as sim:
        cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'u.db'}", sim)
    env = daemon_env(sim)
    env.pop("SCHED_TEST_NECTED_KEY")
    out = subprocess.run(
        [sys.executable, "-m", "etl", "--config", str(cfg), "schedule"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "usage-etl: error: sources.rules.api_key_env ($SCHED_TEST_NECTED_KEY): "
        "environment variable is unset or empty"
    ]


# -- politeness and the nightly job, in process ----------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def sim() -> Iterator[SimulatedVendor]:
    with unique_sim() as s:
        yield s


def make_scheduler(engine: Engine, sim: SimulatedVendor, tmp_path: Path, clock: FakeClock,
                   monkeypatch: pytest.MonkeyPatch, token: str | None = None) -> Scheduler:
    url = engine.url.render_as_string(hide_password=False)
    config = load(write_config(tmp_path, url, sim))
    monkeypatch.setenv("SCHED_TEST_WS_TOKEN", token or sim.token)
    monkeypatch.setenv("SCHED_TEST_NECTED_KEY", sim.api_key)
    return Scheduler(config, engine, collector=Collector(list(config.sources)), clock=clock)


def load(cfg: Path) -> Config:
    import tomllib

    return parse_config(tomllib.loads(cfg.read_text()), str(cfg))


def state(engine: Engine, source: str) -> tuple[int, datetime | None, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(SourceState.consecutive_failures, SourceState.paused_until,
                   SourceState.pause_reason).where(SourceState.source == source)
        ).one()
    return row[0], row[1], row[2]


def test_auth_failure_pauses_with_growing_delays(
    engine: Engine, sim: SimulatedVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    sched = make_scheduler(engine, sim, tmp_path, clock, monkeypatch, token="wrong-token-123")
    ws = sched.config.source("ws-prod")
    first = sched.poll_source(ws)
    assert first is not None and first.outcome == "auth_error"
    failures, until, reason = state(engine, "ws-prod")
    assert failures == 1 and until == clock.now + timedelta(seconds=60)
    assert reason is not None and "authentication" in reason

    # While paused, no request reaches the vendor, whichever slot comes up.
    clock.advance(30)
    assert sched.poll_source(ws) is None
    assert sim.request_count("wiresocket") == 1
    (status, _) = source_statuses(engine, sched.config, now=clock.now)
    assert status.paused_until == until and status.consecutive_failures == 1

    clock.advance(31)
    second = sched.poll_source(ws)
    assert second is not None and second.outcome == "auth_error"
    failures, until, _ = state(engine, "ws-prod")
    assert failures == 2 and until == clock.now + timedelta(seconds=120)
    assert sim.request_count("wiresocket") == 2
    assert [auth_pause_seconds(n) for n in (1, 2, 3, 6, 7, 30)] == [
        60, 120, 240, 1920, 3600, 3600]

    # The credential is fixed and `usage-etl collect` succeeds: that lifts the pause, and
    # the daemon polls at its next slot instead of waiting out the two minutes.
    monkeypatch.setenv("SCHED_TEST_WS_TOKEN", sim.token)
    (fixed,) = collect_once(engine, sched.config, ["ws-prod"], collector=sched.collector)
    assert fixed.outcome == "ok"
    (status, _) = source_statuses(engine, sched.config, now=clock.now)
    assert status.paused_until is None and status.consecutive_failures == 0
    clock.now = max(clock.now, datetime.now(UTC)) + timedelta(seconds=INTERVAL)
    third = sched.poll_source(ws)
    assert third is not None and third.outcome == "ok"
    assert state(engine, "ws-prod") == (0, None, None)
    sched.collector.close()


def test_rate_limited_source_waits_for_retry_after(
    engine: Engine, sim: SimulatedVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    sched = make_scheduler(engine, sim, tmp_path, clock, monkeypatch)
    rules = sched.config.source("rules")
    sim.set_fault("rate_limit", vendor="nected", retry_after="40")
    limited = sched.poll_source(rules)
    assert limited is not None and limited.outcome == "rate_limited"
    assert limited.retry_after == 40
    sent = sim.request_count("nected")
    _, until, _ = state(engine, "rules")
    assert until == clock.now + timedelta(seconds=40)
    sim.set_fault(None)
    for _ in range(7):  # the next slots, all inside the Retry-After
        clock.advance(5)
        assert sched.poll_source(rules) is None
    assert sim.request_count("nected") == sent
    clock.advance(6)
    again = sched.poll_source(rules)
    assert again is not None and again.outcome == "ok"
    sched.collector.close()


def test_slot_trigger_stays_on_the_grid_with_jitter() -> None:
    trigger = SlotTrigger(interval=60, offset=7.5, jitter=3)
    now = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, now)
    fires = [fire]
    for _ in range(50):
        fires.append(trigger.get_next_fire_time(fires[-1], fires[-1]))
    starts = [datetime(2026, 3, 1, 12, 1, 7, 500000, tzinfo=UTC) + timedelta(minutes=i)
              for i in range(51)]
    assert all(0 <= (f - s).total_seconds() <= 3 for f, s in zip(fires, starts, strict=True))


def test_nightly_job_builds_yesterdays_daily_and_last_months_billing(
    tmp_path: Path,
) -> None:
    pytest.importorskip("reports.jobs")
    url = f"sqlite:///{tmp_path / 'u.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with unique_sim() as sim:
        cfg = write_config(tmp_path, url, sim)
    text = cfg.read_text() + (
        '[[billing]]\nsource = "rules"\nmetric = "invocations"\naggregation = "increase"\n'
        'included = 10\nunit_price = "0.01"\n'
    )
    cfg.write_text(text)
    config = load(cfg)
    written = nightly_reports(engine, config, date(2026, 3, 1))
    names = sorted(p.name for p in written)
    assert "daily-2026-02-28.csv" in names and "billing-2026-02.csv" in names
    assert all(p.parent == Path(config.reports_dir) and p.exists() for p in written)
    mid_month = nightly_reports(engine, config, date(2026, 3, 15))
    assert not any(p.name.startswith("billing") for p in mid_month)
    assert any(p.name == "daily-2026-03-14.csv" for p in mid_month)
    forget_series_cache(engine)
    engine.dispose()


def test_schedule_without_sources_is_a_config_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from etl.cli import cli

    cfg = tmp_path / "usage-etl.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path / "u.db"}"\n')
    result = CliRunner().invoke(cli, ["--config", str(cfg), "schedule"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "usage-etl: error: sources: no [[sources]] configured, nothing to schedule"
    )
