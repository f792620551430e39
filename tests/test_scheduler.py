"""`usage-etl schedule`: the real daemon against the simulator, database outages, politeness."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from etl.collect.poll import Collector
from etl.config import Config
from etl.runtime.collect_run import collect_once
from etl.runtime.daemon_db import PG_STATEMENT_TIMEOUT_MS, daemon_engine
from etl.runtime.nightly import nightly_files, nightly_reports
from etl.runtime.pauses import auth_pause_seconds
from etl.runtime.receiver import WebhookReceiver
from etl.runtime.scheduler import Scheduler
from etl.runtime.simulator import SimulatedVendor
from etl.runtime.status import source_statuses
from etl.runtime.triggers import SlotTrigger
from etl.slots import slot_of
from etl.store.engine import make_engine, upgrade
from etl.store.models import CollectionAttempt, Sample, SourceState
from etl.store.rows import forget_series_cache
from etl.store.spool import Spool, poll_to_dict
from tests.daemon import (
    PATIENCE,
    daemon_env,
    log_events,
    ok_counts,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.factories import DAEMON_INTERVAL as INTERVAL
from tests.factories import (
    WEBHOOK_SECRET_PATH,
    FakeClock,
    create_pg_database,
    drop_pg_database,
    load,
    ok_poll,
    unique_sim,
    write_daemon_config,
)
from tests.tcp_proxy import TcpProxy


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


def check_vendor_answered(polls: list[dict[str, Any]]) -> None:
    """Successful polls were stored both ways (spool and database), and nothing failed but
    what a busy machine may cause: a poll whose answer came after the next poll was due
    (timeout: its deadline is the next poll, 5 s here), or one the pacer held back because
    late polls bunched up (rate_limited, nothing sent). Either is stored like any poll."""
    assert {p["stored"] for p in polls if p["outcome"] == "ok"} == {"db", "spool"}
    failed = [p for p in polls if p["outcome"] != "ok"]
    assert all(p["outcome"] in {"timeout", "rate_limited"} for p in failed), failed


def check_on_schedule(polls: list[dict[str, Any]], config: Config, min_polls: int) -> None:
    """Each source polled at least `min_polls` times, never twice in one of its slots.

    Load only ever delays a poll, so this holds on a busy machine too; where in its slot a
    poll fires (the grid plus jitter) is tested on a fake clock in
    test_slot_trigger_stays_on_the_grid_with_jitter.
    """
    for source in ("ws-prod", "rules"):
        times = sorted(
            datetime.fromisoformat(p["started_at"].replace("Z", "+00:00"))
            for p in polls if p["source"] == source
        )
        assert len(times) >= min_polls, (source, times)
        slots = [slot_of(source, config.source(source).interval_seconds, t) for t in times]
        assert len(set(slots)) == len(slots), (source, times)


# -- the daemon for real -----------------------------------------------------------------------


def test_daemon_polls_on_schedule_survives_a_locked_sqlite_and_stops_on_sigterm(
    tmp_path: Path, receiver: WebhookReceiver,
) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    spool = Spool(tmp_path / "spool")
    smtp_password = "smtp-pa55-" + uuid.uuid4().hex
    with unique_sim() as sim:
        cfg = write_daemon_config(tmp_path, url, sim)
        # Notifier secrets (SPEC 8) join the no-leak check: a webhook that gets an alert and a
        # mail server that is not there (its failures are logged, the password never).
        cfg.write_text(cfg.read_text() + (
            '[[notifiers]]\nname = "ops"\nkind = "webhook"\nurl_env = "SCHED_TEST_HOOK"\n'
            '[[notifiers]]\nname = "mail"\nkind = "email"\nsmtp_host = "127.0.0.1"\n'
            'smtp_port = 9\nusername = "u"\npassword_env = "SCHED_TEST_SMTP_PASSWORD"\n'
            'from = "a@example.com"\nto = ["b@example.com"]\ntimeout_seconds = 2\n'
            '[[alerts]]\nname = "busy"\nmetric = "connections"\nabove_pct = 1\n'
            'notify = ["ops", "mail"]\n'))
        log = tmp_path / "daemon.log"
        env = daemon_env(sim, USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS="300",
                         SCHED_TEST_HOOK=receiver.url, SCHED_TEST_SMTP_PASSWORD=smtp_password)
        proc = start_daemon(cfg, env, log)
        try:
            wait_for("a first poll of each source",
                     lambda: len(ok_counts(url)) == 2, timeout=PATIENCE)
            holder = sqlite3.connect(tmp_path / "usage.db", isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                # Polls go on while the database is locked; they land in the spool.
                wait_for("a spooled poll of each source",
                         lambda: {p.name.split("-", 1)[1].rsplit("-", 1)[0]
                                  for p in spool.pending()} == {"ws-prod", "rules"}, timeout=PATIENCE)
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            wait_for("the spool to drain", lambda: not spool.pending(), timeout=PATIENCE)
            wait_for("three polls of each source",
                     lambda: min(ok_counts(url).values()) >= 3, timeout=PATIENCE)
            # Each notifier delivers in a thread of its own: the mail server's refusal may be
            # logged after the webhook's delivery, so wait for it rather than assume an order.
            wait_for("the email notifier's refused try in the log",
                     lambda: "email mail: cannot connect (connection refused)"
                     in log.read_text(), timeout=PATIENCE)
            assert proc.poll() is None
        finally:
            code = stop_daemon(proc)
        assert code == 0, log.read_text()[-2000:]
        polls = check_nothing_lost(url, log, [sim.token, sim.api_key, receiver.url,
                                              WEBHOOK_SECRET_PATH, smtp_password])
    assert [b["state"] for b in receiver.received] == ["firing"]
    check_vendor_answered(polls)
    check_on_schedule(polls, load(cfg), min_polls=3)
    events = [e.get("event") for e in log_events(log)]
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
            cfg = write_daemon_config(tmp_path, via_proxy, sim)
            log = tmp_path / "daemon.log"
            proc = start_daemon(cfg, daemon_env(sim), log)
            try:
                wait_for("a first poll of each source",
                         lambda: len(ok_counts(direct)) == 2, timeout=PATIENCE)
                proxy.cut()
                try:
                    wait_for("a spooled poll of each source",
                             lambda: len(spool.pending()) >= 2
                             and len({p.name.split("-")[1] for p in spool.pending()}) == 2,
                             timeout=PATIENCE)
                finally:
                    proxy.restore()
                wait_for("the spool to drain", lambda: not spool.pending(), timeout=PATIENCE)
                assert proc.poll() is None
            finally:
                code = stop_daemon(proc)
            assert code == 0, log.read_text()[-2000:]
            polls = check_nothing_lost(direct, log, [sim.token, sim.api_key])
        check_vendor_answered(polls)
    finally:
        drop_pg_database(direct)


def test_sigterm_waits_for_an_in_flight_poll(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with unique_sim() as sim:
        sim.set_fault("slow", delay=3.0)
        cfg = write_daemon_config(tmp_path, url, sim)
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, daemon_env(sim), log)
        try:
            wait_for("requests in flight", lambda: sim.request_count() >= 1, timeout=PATIENCE)
        finally:
            code = stop_daemon(proc)
        assert code == 0
        served = sim.request_count(status=200)
    polls = check_nothing_lost(url, log, [sim.token, sim.api_key])
    # The slow answers arrived after SIGTERM and were still stored.
    assert len([p for p in polls if p["outcome"] == "ok"]) == served >= 1
    stopping = next(e for e in log_events(log) if e.get("event") == "stopping")
    assert stopping["signal"] == "SIGTERM" and stopping["inflight"] >= 1


def test_schedule_refuses_missing_secret_with_exit_2(tmp_path: Path) -> None:
    with unique_sim() as sim:
        cfg = write_daemon_config(tmp_path, f"sqlite:///{tmp_path / 'u.db'}", sim)
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


@pytest.fixture
def sim() -> Iterator[SimulatedVendor]:
    with unique_sim() as s:
        yield s


def make_scheduler(engine: Engine, sim: SimulatedVendor, tmp_path: Path, clock: FakeClock,
                   monkeypatch: pytest.MonkeyPatch, token: str | None = None) -> Scheduler:
    url = engine.url.render_as_string(hide_password=False)
    config = load(write_daemon_config(tmp_path, url, sim))
    monkeypatch.setenv("SCHED_TEST_WS_TOKEN", token or sim.token)
    monkeypatch.setenv("SCHED_TEST_NECTED_KEY", sim.api_key)
    # The database step limit only bounds a hung database, which these tests never play.
    return Scheduler(config, engine, collector=Collector(list(config.sources)), clock=clock,
                     db_step_timeout=PATIENCE)


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

    # The credential is fixed and `usage-etl collect --force` succeeds: that lifts the pause, and
    # the daemon polls at its next slot instead of waiting out the two minutes.
    monkeypatch.setenv("SCHED_TEST_WS_TOKEN", sim.token)
    (fixed,) = collect_once(engine, sched.config, ["ws-prod"], collector=sched.collector,
                            force=True)
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


def test_a_retry_after_we_cap_pauses_for_the_cap_and_says_what_the_vendor_sent(
    engine: Engine, sim: SimulatedVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    sched = make_scheduler(engine, sim, tmp_path, clock, monkeypatch)
    rules = sched.config.source("rules")
    sim.set_fault("rate_limit", vendor="nected", retry_after="86400")  # a day; our cap is 6 h
    limited = sched.poll_source(rules)
    assert limited is not None and limited.retry_after == 21600
    _, until, reason = state(engine, "rules")
    assert until == clock.now + timedelta(seconds=21600)
    assert reason == "rate_limited: vendor asked to wait 86400s; paused 21600s (our cap)"
    sched.collector.close()


def test_slot_trigger_stays_on_the_grid_with_jitter() -> None:
    trigger = SlotTrigger("ws-prod", interval=60, jitter=3)
    offset = trigger.offset  # a stable hash of the name, in [0, 60)
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC) + timedelta(seconds=offset - 0.5)
    fire = trigger.get_next_fire_time(None, now)
    fires = [fire]
    for _ in range(50):
        fires.append(trigger.get_next_fire_time(fires[-1], fires[-1]))
    # The slot starting at 12:00:offset began just after `now`; the rest follow a minute apart.
    starts = [datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC) + timedelta(seconds=offset, minutes=i)
              for i in range(51)]
    assert all(0 <= (f - s).total_seconds() <= 3 for f, s in zip(fires, starts, strict=True))


def test_nightly_job_builds_yesterdays_daily_and_last_months_billing(
    tmp_path: Path,
) -> None:
    pytest.importorskip("reports.pipelines")
    url = f"sqlite:///{tmp_path / 'u.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with unique_sim() as sim:
        cfg = write_daemon_config(tmp_path, url, sim)
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


# -- nightly reports: on time, caught up at start, retried -----------------------------------


@pytest.fixture
def schedule_events() -> Iterator[list[logging.LogRecord]]:
    """The scheduler's event records (the daemon's handler may not propagate to caplog)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("etl.schedule")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def named(records: list[logging.LogRecord], name: str) -> list[dict[str, Any]]:
    return [getattr(r, "fields", {}) for r in records if getattr(r, "event", None) == name]


def nightly_scheduler(tmp_path: Path, url: str, engine: Engine, *, billing: bool = False,
                      **kwargs: Any) -> Scheduler:
    """A Scheduler with no sources to poll: only the spool replay and the nightly job run."""
    with unique_sim() as sim:
        cfg = write_daemon_config(tmp_path, url, sim)
    if billing:
        cfg.write_text(cfg.read_text() + (
            '[[billing]]\nsource = "rules"\nmetric = "invocations"\naggregation = "increase"\n'
            'included = 10\nunit_price = "0.01"\n'
        ))
    kwargs.setdefault("db_step_timeout", PATIENCE)  # only a hung database reaches it
    return Scheduler(load(cfg), engine, sources=[], **kwargs)


def sqlite_engine(tmp_path: Path) -> tuple[str, Engine]:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    engine = make_engine(url)
    upgrade(engine)
    return url, engine


def test_nightly_job_fires_at_its_time(
    tmp_path: Path, schedule_events: list[logging.LogRecord]
) -> None:
    pytest.importorskip("reports.pipelines")
    url, engine = sqlite_engine(tmp_path)
    started = datetime.now(UTC)
    fire = (started + timedelta(seconds=3)).replace(microsecond=0)
    sched = nightly_scheduler(tmp_path, url, engine, nightly_at=fire.time())
    expected = nightly_files(sched.config, fire.date())
    assert [p.name for p in expected] == [
        f"daily-{fire.date() - timedelta(days=1)}.csv", f"daily-{fire.date() - timedelta(days=1)}.html"]
    begun = time.time()
    sched.start()
    up = time.time()
    try:
        wait_for("the nightly reports", lambda: all(p.is_file() for p in expected),
                 timeout=PATIENCE)
    finally:
        assert sched.stop()
    built = [r for r in schedule_events if getattr(r, "event", None) == "reports"]
    assert built and built[0].created >= fire.timestamp() - 0.05  # not before its time
    # Started before its time, the job waits for it; a start slowed past it (a busy machine)
    # catches the day up at once instead. Either way the reports are built once.
    if up < fire.timestamp() and started.date() == fire.date():
        assert not named(schedule_events, "reports-catch-up")
    elif begun > fire.timestamp():
        assert named(schedule_events, "reports-catch-up")
    forget_series_cache(engine)
    engine.dispose()


def test_missed_nightly_reports_are_built_at_start_once(
    tmp_path: Path, schedule_events: list[logging.LogRecord]
) -> None:
    pytest.importorskip("reports.pipelines")
    url, engine = sqlite_engine(tmp_path)
    clock = FakeClock()
    clock.now = datetime(2026, 3, 1, 0, 28, tzinfo=UTC)  # started late, on the 1st
    sched = nightly_scheduler(tmp_path, url, engine, billing=True, clock=clock)
    expected = nightly_files(sched.config, date(2026, 3, 1))
    assert sorted(p.name for p in expected) == [
        "billing-2026-02.csv", "billing-2026-02.html",
        "daily-2026-02-28.csv", "daily-2026-02-28.html"]
    sched.start()
    try:
        wait_for("the missed reports", lambda: all(p.is_file() for p in expected), timeout=PATIENCE)
    finally:
        assert sched.stop()
    assert [f["day"] for f in named(schedule_events, "reports-catch-up")] == ["2026-03-01"]
    before = {p: p.stat().st_mtime_ns for p in expected}

    # Present already (built, or by another replica): a restart leaves them alone.
    schedule_events.clear()
    again = Scheduler(sched.config, engine, sources=[], clock=clock)
    again.start()
    assert again.stop()
    assert not named(schedule_events, "reports-catch-up")
    assert not named(schedule_events, "reports")
    assert {p: p.stat().st_mtime_ns for p in expected} == before

    # Before the nightly time nothing is due yet.
    clock.now = datetime(2026, 3, 2, 0, 4, tzinfo=UTC)
    assert again.nightly.due() is None
    forget_series_cache(engine)
    engine.dispose()


@pytest.mark.postgres
def test_nightly_reports_are_retried_until_the_database_is_back(
    tmp_path: Path, schedule_events: list[logging.LogRecord]
) -> None:
    pytest.importorskip("reports.pipelines")
    direct = create_pg_database()
    try:
        setup = make_engine(direct)
        upgrade(setup)
        setup.dispose()
        with TcpProxy("127.0.0.1", 5432) as proxy:
            via_proxy = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            engine = make_engine(via_proxy)
            proxy.cut()
            sched = nightly_scheduler(tmp_path, via_proxy, engine,
                                      nightly_at=clock_time(0, 0), nightly_retry_s=0.5)
            expected = nightly_files(sched.config, datetime.now(UTC).date())
            sched.start()
            try:
                wait_for("two failed attempts",
                         lambda: len(named(schedule_events, "reports-retry")) >= 2, timeout=PATIENCE)
                assert not any(p.exists() for p in expected)
                proxy.restore()
                wait_for("the reports", lambda: all(p.is_file() for p in expected), timeout=PATIENCE)
            finally:
                assert sched.stop()
            assert len(named(schedule_events, "reports-failed")) >= 2
            forget_series_cache(engine)
            engine.dispose()
    finally:
        drop_pg_database(direct)


# -- stopping, start-up without a database, the spool's owner ---------------------------------


def logged(log: Path, name: str, **match: Any) -> bool:
    """Has the daemon logged event `name` (with these fields)? Tolerates a half-written line."""
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name and all(entry.get(k) == v for k, v in match.items()):
            return True
    return False


def test_stop_timeout_bounds_the_exit_with_a_poll_stuck_on_the_vendor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    # The vendor holds the request for STUCK seconds and the poll's timeout is longer still:
    # only giving up on the poll lets the daemon exit before it, however busy the machine.
    stuck = 300.0
    with unique_sim() as sim:
        sim.set_fault("slow", delay=stuck)
        cfg = write_daemon_config(tmp_path, url, sim)
        cfg.write_text(cfg.read_text().replace(
            f"interval_seconds = {INTERVAL}\n",
            f"interval_seconds = {INTERVAL}\ntimeout_seconds = {2 * stuck:g}\n"))
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, daemon_env(sim), log, ["--stop-timeout", "1"])
        try:
            wait_for("a request in flight", lambda: sim.request_count() >= 1, timeout=PATIENCE)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        sent = time.monotonic()
        code = stop_daemon(proc, timeout=stuck / 2)
        took = time.monotonic() - sent
    assert code == 0, log.read_text()[-2000:]
    assert took < stuck, took  # gone without the vendor's answer
    events = log_events(log)
    names = [e.get("event") for e in events]
    assert names[-1] == "stopped", names
    assert "poll" not in names[names.index("stopping"):]
    timeout = next(e for e in events if e.get("event") == "stop-timeout")
    assert timeout["still_running"] >= 1 and timeout["waited_s"] == 1
    check_nothing_lost(url, log, [sim.token, sim.api_key])


@pytest.mark.postgres
def test_daemon_started_while_the_database_is_down_spools_and_loses_nothing(
    tmp_path: Path,
) -> None:
    direct = create_pg_database()  # empty: the daemon creates the schema once it is back
    try:
        spool = Spool(tmp_path / "spool")
        with TcpProxy("127.0.0.1", 5432) as proxy, unique_sim() as sim:
            proxy.cut()
            via_proxy = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            cfg = write_daemon_config(tmp_path, via_proxy, sim)
            log = tmp_path / "daemon.log"
            proc = start_daemon(cfg, daemon_env(sim), log)
            try:
                wait_for("a spooled poll of each source",
                         lambda: len({p.name.split("-")[1] for p in spool.pending()}) == 2,
                         timeout=PATIENCE)
                assert proc.poll() is None
                proxy.restore()
                wait_for("the database to be taken into use",
                         lambda: logged(log, "database-ready"), timeout=PATIENCE)
                wait_for("the spool to drain", lambda: not spool.pending(), timeout=PATIENCE)
                wait_for("a poll stored directly",
                         lambda: logged(log, "poll", stored="db"), timeout=PATIENCE)
                now = datetime.now(UTC)
                if now.time() >= clock_time(0, 5):  # the missed nightly run: once it is back
                    reports = nightly_files(load(cfg), now.date())
                    wait_for("the caught-up reports",
                             lambda: all(p.is_file() for p in reports), timeout=PATIENCE)
            finally:
                code = stop_daemon(proc)
            assert code == 0, log.read_text()[-2000:]
            polls = check_nothing_lost(direct, log, [sim.token, sim.api_key])
        events = log_events(log)
        assert events[0]["event"] == "database-unreachable"
        assert next(e for e in events if e.get("event") == "started")["database_ready"] is False
        check_vendor_answered(polls)
    finally:
        drop_pg_database(direct)


@pytest.mark.postgres
def test_a_database_that_refuses_the_login_still_stops_the_daemon(tmp_path: Path) -> None:
    url = create_pg_database()
    drop_pg_database(url)  # the server answers: that database does not exist
    with unique_sim() as sim:
        cfg = write_daemon_config(tmp_path, url, sim)
    out = subprocess.run(
        [sys.executable, "-m", "etl", "--config", str(cfg), "schedule"],
        capture_output=True, text=True, env=daemon_env(sim), timeout=60, cwd=tmp_path,
    )
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("usage-etl: error: database ") and "does not exist" in line


@pytest.mark.postgres
def test_daemon_engine_bounds_a_silent_server(pg_url: str) -> None:
    def settings(url: str) -> tuple[dict[str, str], dict[str, int]]:
        engine = daemon_engine(url)
        try:
            with engine.connect() as conn:
                shown = {name: conn.execute(text(f"SHOW {name}")).scalar_one()
                         for name in ("statement_timeout", "work_mem")}
                fd = conn.connection.dbapi_connection.pgconn.socket  # type: ignore[union-attr]
                sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)  # a dup
                try:
                    opts = {
                        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                        "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                        "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP,
                                                           socket.TCP_USER_TIMEOUT),
                    }
                finally:
                    sock.close()
        finally:
            engine.dispose()
        return shown, opts

    assert PG_STATEMENT_TIMEOUT_MS == 60_000
    shown, opts = settings(pg_url)
    assert shown["statement_timeout"] == "1min"
    assert opts == {"keepalive": 1, "idle": 30, "interval": 10, "count": 3,
                    "user_timeout_ms": 60_000}
    # What the URL says wins; its own options are kept and the limit added to them.
    shown, opts = settings(pg_url + "?keepalives_idle=99&options=-c%20work_mem%3D8MB")
    assert shown == {"statement_timeout": "1min", "work_mem": "8MB"}
    assert opts["idle"] == 99 and opts["count"] == 3
    shown, _ = settings(pg_url + "?options=-c%20statement_timeout%3D5s")
    assert shown["statement_timeout"] == "5s"


def test_spool_has_one_owner_and_a_crash_leftover_is_kept(tmp_path: Path) -> None:
    url, engine = sqlite_engine(tmp_path)
    engine.dispose()
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    leftover = ok_poll(datetime(2026, 3, 1, 12, 1, 0, 123456, tzinfo=UTC), 1001)  # fsynced but not renamed when the last daemon was killed
    name = "00000000000000000001-rules-0000abcd.json"
    (spool_dir / f".tmp-{name}").write_text(json.dumps(poll_to_dict(leftover)))
    with unique_sim() as sim:
        cfg = write_daemon_config(tmp_path, url, sim, interval=60)
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, daemon_env(sim), log)
        try:
            wait_for("the daemon to start", lambda: logged(log, "started"), timeout=PATIENCE)
            second = subprocess.run(
                [sys.executable, "-m", "etl", "--config", str(cfg), "schedule"],
                capture_output=True, text=True, env=daemon_env(sim), timeout=60, cwd=tmp_path,
            )
        finally:
            code = stop_daemon(proc)
    assert code == 0
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"usage-etl: error: spool_dir {spool_dir} is in use by another usage-etl schedule "
        f"(pid {proc.pid}); give each daemon its own spool_dir (or $USAGE_ETL_SPOOL_DIR)"
    ]
    assert logged(log, "spool-recovered", restored=name)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(
            select(func.count()).select_from(CollectionAttempt)
            .where(CollectionAttempt.started_at == leftover.started_at)
        ).scalar_one() == 1
    engine.dispose()
    assert not list(spool_dir.glob(".tmp-*")) and not (spool_dir / "unreadable").exists()


def test_the_daemon_tells_a_failed_poll_once_in_its_poll_line(tmp_path: Path) -> None:
    # As in `collect` and `backfill`, a failed poll is one line: the daemon's `poll` line has
    # its source, outcome and error; the collector's own line would only repeat them.
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with unique_sim() as sim:
        sim.echo_credential = True
        sim.set_fault("unauthorized", vendor="nected")
        cfg = write_daemon_config(tmp_path, url, sim)
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, daemon_env(sim), log)
        try:
            wait_for("a refused poll of rules",
                     lambda: "credential refused" in log.read_text()
                     and ok_counts(url).get("ws-prod", 0) >= 1)
        finally:
            assert stop_daemon(proc) == 0, log.read_text()[-2000:]
    refused = [e for e in log_events(log) if "credential refused" in json.dumps(e)]
    engine = make_engine(url)
    with engine.connect() as conn:
        failed = conn.scalar(select(func.count()).select_from(CollectionAttempt)
                             .where(CollectionAttempt.source == "rules"))
    engine.dispose()
    assert failed and len(refused) == failed, refused
    assert all(e.get("event") == "poll" and e["source"] == "rules"
               and e["outcome"] == "auth_error" for e in refused), refused
    assert sim.api_key not in log.read_text()
