"""A wall clock stepped back or forward (NTP, a VM snapshot, `date -s`): polls, nights and logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from etl.alerts.outbox import deliver_due
from etl.collect.pacing import PacerRegistry, SharedPacer
from etl.collect.poll import Collector
from etl.config import Notifier, SecretRef, WebhookNotifier, parse_config
from etl.errors import DeliveryError
from etl.runtime.clocks import ClockWatch
from etl.runtime.logs import EventLog
from etl.runtime.scheduler import Scheduler
from etl.runtime.simulator import SimulatedVendor
from etl.runtime.triggers import jitter_for
from etl.slots import slot_bounds, slot_of
from etl.store.models import AlertDelivery, AlertEvent, CollectionAttempt
from etl.store.writer import record_polls
from tests.factories import FakeClock, load, ok_poll, write_daemon_config

# Seconds, hours and a day, either way.
STEPS = [-2.0, 2.5, -120.0, -3600.0, 3600.0, -86400.0, 86400.0]
INTERVAL = 60
PATIENCE = 60.0  # generous: the suite runs with both cores busy


class Events(logging.Handler):
    """The structured events a logger emits, as (name, fields)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, dict[str, object]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "event", None)
        if name:
            self.seen.append((name, dict(getattr(record, "fields", {}) or {})))

    def named(self, name: str) -> list[dict[str, object]]:
        return [fields for event, fields in self.seen if event == name]


@pytest.fixture
def events() -> Iterator[Events]:
    handler = Events()
    logger = logging.getLogger("etl.schedule")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    give_up = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("step", STEPS)
def test_a_wall_clock_step_either_way_is_logged_once_with_its_size(
        step: float, events: Events) -> None:
    clock = FakeClock(datetime(2026, 5, 3, 10, 0, tzinfo=UTC))
    seen: list[tuple[float, datetime]] = []
    watch = ClockWatch(clock, lambda s, now: seen.append((s, now)),
                       EventLog(logging.getLogger("etl.schedule")))
    clock.advance(30)  # time passing is no step
    clock.step(0.4)  # nor is a slewed fraction of a second
    assert watch.check() is None
    clock.step(step)
    assert watch.check() == pytest.approx(step)
    clock.advance(5)
    assert watch.check() is None  # the new difference is the reference from now on
    logged = events.named("clock-step")
    size = f"{step:+.0f} s" if abs(step) >= 10 else f"{step:+.1f} s"
    assert [(f["step"], f["step_s"]) for f in logged] == [(size, pytest.approx(step))]
    assert seen == [(pytest.approx(step), clock() - timedelta(seconds=5))]


class HeldOffClock(FakeClock):
    """A FakeClock whose reader is held off for `hold` s right after one monotonic reading."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.hold = 0.0

    def monotonic(self) -> float:
        reading = super().monotonic()
        hold, self.hold = self.hold, 0.0
        self.advance(hold)  # time passes before the reader looks at the wall clock
        return reading


def test_a_watch_held_off_between_reading_its_two_clocks_sees_no_step(
        events: Events) -> None:
    clock = HeldOffClock(datetime(2026, 5, 3, 10, 0, tzinfo=UTC))
    seen: list[float] = []
    watch = ClockWatch(clock, lambda s, now: seen.append(s),
                       EventLog(logging.getLogger("etl.schedule")))
    clock.hold = 5.0  # a busy machine runs the watch's thread 5 s later
    assert watch.check() is None
    clock.advance(1)
    assert watch.check() is None
    clock.step(-3600)
    clock.hold = 5.0
    assert watch.check() == pytest.approx(-3600)
    assert seen == [pytest.approx(-3600)] and len(events.named("clock-step")) == 1


def make_scheduler(engine: Engine, sim: SimulatedVendor, tmp_path: Path, clock: FakeClock,
                   monkeypatch: pytest.MonkeyPatch) -> Scheduler:
    url = engine.url.render_as_string(hide_password=False)
    config = load(write_daemon_config(tmp_path, url, sim, interval=INTERVAL))
    monkeypatch.setenv("SCHED_TEST_WS_TOKEN", sim.token)
    monkeypatch.setenv("SCHED_TEST_NECTED_KEY", sim.api_key)
    # The database step limit only bounds a hung database: a busy machine's slow step is
    # no reason to poll uncoordinated or spool.
    return Scheduler(config, engine, clock=clock, db_step_timeout=PATIENCE,
                     collector=Collector(list(config.sources), now=clock))


@pytest.mark.parametrize("step", [-120.0, -3600.0, 3600.0, -86400.0, 86400.0])
def test_after_a_step_every_job_is_due_within_its_elapsed_wait_on_the_new_clock(
        engine: Engine, simulator: SimulatedVendor, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, events: Events, step: float) -> None:
    # The daemon's clock runs ten days ahead of the machine's, whose clock APScheduler
    # reads: nothing the test looks at comes due while it looks.
    clock = FakeClock(datetime.fromtimestamp(int(time.time()), UTC) + timedelta(days=10))
    sched = make_scheduler(engine, simulator, tmp_path, clock, monkeypatch)
    sched.start()
    try:
        before = sched.next_runs()
        clock.advance(3)
        clock.step(step)
        now = clock()

        def realigned() -> bool:
            runs = sched.next_runs()
            # The next slot on the new clock: never at once (no burst of skipped slots after
            # a forward step), never more than one interval away (after a step back).
            polls = all(0 < (runs[f"poll:{s.name}"] - now).total_seconds()
                        <= s.interval_seconds + jitter_for(s) for s in sched.sources)
            # The nightly look keeps its elapsed wait: it was due at start, 3 s ago.
            return polls and runs["nightly-reports"] - now == timedelta(seconds=-3)

        # The watch looks every second and moves the jobs one by one: wait for all of them.
        wait_until(realigned, f"every job realigned (before: {before}, now {now})")
        assert [f["step_s"] for f in events.named("clock-step")] == [pytest.approx(step)]
    finally:
        sched.stop()


def attempts(engine: Engine, source: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(CollectionAttempt)
                                .where(CollectionAttempt.source == source)).scalar_one())


def test_a_clock_stepped_back_an_hour_polls_in_the_next_slot_once_per_slot(
        engine: Engine, simulator: SimulatedVendor, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(datetime.fromtimestamp(int(time.time()), UTC))
    sched = make_scheduler(engine, simulator, tmp_path, clock, monkeypatch)
    rules = sched.config.source("rules")
    # The daemon polled every slot of the last hour (stamped by the clock before the step).
    now = clock()
    first = slot_of(rules.name, INTERVAL, now - timedelta(hours=1))
    polls = [ok_poll(slot_bounds(rules.name, INTERVAL, k)[0] + timedelta(seconds=1),
                     source=rules.name)
             for k in range(first, slot_of(rules.name, INTERVAL, now) + 1)]
    record_polls(engine, polls)
    stored = attempts(engine, rules.name)
    assert stored == len(polls) == 61

    clock.step(-3600)
    assert sched.poll_source(rules) is not None  # the slot an hour ago is free again
    assert sched.poll_source(rules) is None  # but only once
    clock.advance(INTERVAL)  # the next slot, one interval of elapsed time later
    assert sched.poll_source(rules) is not None
    assert attempts(engine, rules.name) == stored + 2

    clock.step(86400)  # and a day forward: a fresh slot, polled once
    assert sched.poll_source(rules) is not None
    assert sched.poll_source(rules) is None
    assert attempts(engine, rules.name) == stored + 3


def test_a_day_stepped_either_way_builds_each_nightly_report_once(
        tmp_path: Path, engine: Engine, events: Events) -> None:
    cfg = parse_config({
        "timezone": "UTC",
        "reports_dir": str(tmp_path / "reports"),
        "spool_dir": str(tmp_path / "spool"),
        "sources": [{"name": "rules", "kind": "nected", "api_key_env": "UNSET_NIGHTLY_KEY",
                     "interval_seconds": 300}],
    })
    clock = FakeClock(datetime(2026, 5, 3, 10, 0, tzinfo=UTC))
    sched = Scheduler(cfg, engine, sources=[], clock=clock)
    built: list[str] = []

    def look() -> None:
        built.extend(sorted(p.name for p in sched.nightly.tick()))

    look()  # the night of the 3rd (the 2nd's report) is owed at start
    clock.step(86400)  # a day forward: the night of the 4th is due, built once
    look()
    look()
    clock.step(-86400)  # a day back: nothing is owed again
    look()
    clock.advance(3600)
    look()
    clock.step(86400)  # forward again: the 3rd's report exists, no duplicate
    look()
    clock.advance(86400)  # the night of the 5th comes on time
    look()
    assert built == ["daily-2026-05-02.csv", "daily-2026-05-02.html",
                     "daily-2026-05-03.csv", "daily-2026-05-03.html",
                     "daily-2026-05-04.csv", "daily-2026-05-04.html"]
    assert [f["day"] for f in events.named("reports")] == [
        "2026-05-03", "2026-05-04", "2026-05-05"]


def test_a_pause_does_not_outlast_its_length_after_the_clock_steps_back_an_hour(
        engine: Engine, simulator: SimulatedVendor, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(datetime.fromtimestamp(int(time.time()), UTC))
    sched = make_scheduler(engine, simulator, tmp_path, clock, monkeypatch)
    monkeypatch.setenv("SCHED_TEST_WS_TOKEN", "wrong-token-123")
    ws = sched.config.source("ws-prod")
    first = sched.poll_source(ws)
    assert first is not None and first.outcome == "auth_error"  # paused for 60 s
    clock.advance(30)
    assert sched.poll_source(ws) is None  # the pause holds
    clock.step(-3600)
    clock.advance(31)  # 61 s of elapsed time since the pause began: it is over
    again = sched.poll_source(ws)
    assert again is not None and again.outcome == "auth_error"
    assert attempts(engine, "ws-prod") == 2


@pytest.mark.parametrize("step", [-120.0, -3500.0, 3600.0, 86400.0])
def test_a_shared_pacing_window_follows_elapsed_time_across_a_wall_clock_step(
        tmp_path: Path, step: float) -> None:
    clock = FakeClock(datetime.fromtimestamp(int(time.time()), UTC))

    def pacer() -> SharedPacer:
        made = PacerRegistry(clock.time, shared=True, directory=tmp_path,
                             elapsed=clock.monotonic).get("nected", "stepped", (12, 60.0))
        assert isinstance(made, SharedPacer)
        return made

    mine, other = pacer(), pacer()  # this process's and another process's view
    assert all(mine.reserve(0.0) == 0.0 for _ in range(12))
    clock.advance(10)
    clock.step(step)
    # The twelve sends were 10 s ago whatever the wall clock says now: the window is full
    # (a step forward is no burst of fresh sends), for the other process too ...
    assert mine.reserve(0.0) is None
    assert other.reserve(0.0) is None
    # ... and free 61 s after them (a step back holds nobody for the length of the step).
    clock.advance(51)
    assert other.reserve(0.0) == 0.0
    assert mine.reserve(0.0) == 0.0


def test_a_notification_retry_is_not_held_back_by_a_clock_stepped_back_an_hour(
        engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
    with engine.begin() as conn:
        conn.execute(insert(AlertEvent).values(
            id="ev-1", alert="a", source="ws-prod", metric="connections", version=1,
            transition="firing", at=clock(), payload='{"id": "ev-1", "alert": "a"}'))
        conn.execute(insert(AlertDelivery).values(
            event_id="ev-1", notifier="ops", created_at=clock(), next_attempt_at=clock(),
            attempts=0))
    hook = WebhookNotifier(name="ops", url=SecretRef("notifiers.ops.url_env", env="UNSET_HOOK"),
                           timeout_seconds=10)
    sent: list[str] = []

    def down(_: Notifier, body: dict[str, Any]) -> None:
        raise DeliveryError("webhook ops: HTTP 503")

    def up(_: Notifier, body: dict[str, Any]) -> None:
        sent.append(body["id"])

    assert deliver_due(engine, {"ops": hook}, down, clock(), clock=clock).failed  # retry in 30 s
    clock.step(-3600)
    clock.advance(10)
    assert deliver_due(engine, {"ops": hook}, up, clock(), clock=clock).delivered == 1
    assert sent == ["ev-1"]
    with engine.connect() as conn:
        row = conn.execute(select(AlertDelivery.delivered_at, AlertDelivery.attempts)).one()
    assert (row.delivered_at, row.attempts) == (clock(), 2)


def test_a_dead_senders_lease_does_not_outlast_itself_after_the_clock_steps_back(
        engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
    lease_end = clock() + timedelta(seconds=40)  # a 10 s notifier's lease: 10 s + 30 s
    with engine.begin() as conn:
        conn.execute(insert(AlertEvent).values(
            id="ev-2", alert="a", source="ws-prod", metric="connections", version=1,
            transition="firing", at=clock(), payload='{"id": "ev-2", "alert": "a"}'))
        conn.execute(insert(AlertDelivery).values(
            event_id="ev-2", notifier="ops", created_at=clock(), next_attempt_at=clock(),
            attempts=0, lease_until=lease_end))  # taken by a sender that then died
    hook = WebhookNotifier(name="ops", url=SecretRef("notifiers.ops.url_env", env="UNSET_HOOK"),
                           timeout_seconds=10)
    sent: list[str] = []
    clock.step(-3600)
    clock.advance(41)  # the lease has run out in elapsed time
    report = deliver_due(engine, {"ops": hook}, lambda _, body: sent.append(body["id"]),
                         clock(), clock=clock)
    assert (report.delivered, sent) == (1, ["ev-2"])
