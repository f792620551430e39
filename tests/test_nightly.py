"""The daemon's nightly reports on every night: skipped and repeated midnights, catch-up while running."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from etl.config import Config, parse_config
from etl.runtime.scheduler import Scheduler


class SteppedClock:
    """The daemon's wall clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def config(tmp_path: Path, tz: str) -> Config:
    return parse_config({
        "timezone": tz,
        "reports_dir": str(tmp_path / "reports"),
        "spool_dir": str(tmp_path / "spool"),
        "sources": [{"name": "rules", "kind": "nected", "api_key_env": "UNSET_NIGHTLY_KEY",
                     "interval_seconds": 300}],
        "billing": [{"source": "rules", "metric": "invocations", "aggregation": "increase",
                     "included": 10, "unit_price": "0.01"}],
    })


def reports(cfg: Config) -> set[str]:
    folder = Path(cfg.reports_dir)
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def drive(sched: Scheduler, clock: SteppedClock, until: datetime, step: timedelta,
          cfg: Config) -> dict[str, datetime]:
    """Tick the daemon's nightly job at every step; when each report file first appeared."""
    seen: dict[str, datetime] = {}
    while clock.now <= until:
        sched.nightly.tick()
        for name in reports(cfg) - seen.keys():
            seen[name] = clock.now
        clock.now += step
    return seen


# Each zone's 2026 day whose local midnight does not exist (the clock jumps 23:59:59 ->
# 01:00), and the UTC instant that day begins: local 00:00 before the jump.
SKIPPED_MIDNIGHTS = [
    ("Atlantic/Azores", date(2026, 3, 29), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    ("America/Havana", date(2026, 3, 8), datetime(2026, 3, 8, 5, 0, tzinfo=UTC)),
    ("America/Santiago", date(2026, 9, 6), datetime(2026, 9, 6, 4, 0, tzinfo=UTC)),
    ("Asia/Beirut", date(2026, 3, 29), datetime(2026, 3, 28, 22, 0, tzinfo=UTC)),
    ("Africa/Cairo", date(2026, 4, 24), datetime(2026, 4, 23, 22, 0, tzinfo=UTC)),
]


@pytest.mark.parametrize(("tz", "day", "begins"), SKIPPED_MIDNIGHTS)
def test_the_report_of_the_day_before_a_skipped_midnight_is_built_once_that_day_ended(
        tmp_path: Path, engine: Engine, tz: str, day: date, begins: datetime) -> None:
    zone = ZoneInfo(tz)
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    assert midnight.astimezone(UTC).astimezone(zone).hour == 1  # midnight really is skipped
    cfg = config(tmp_path, tz)
    eve = day - timedelta(days=1)
    # The daemon runs from 20:00 local on the eve (started that day) to 03:00 the day after.
    clock = SteppedClock(datetime(eve.year, eve.month, eve.day, 20, tzinfo=zone).astimezone(UTC))
    sched = Scheduler(cfg, engine, sources=[], clock=clock)
    seen = drive(sched, clock, begins + timedelta(hours=3), timedelta(minutes=1), cfg)
    # Nightly time is 5 minutes into the day: the eve's report then, not a minute earlier.
    assert seen[f"daily-{eve}.csv"] == seen[f"daily-{eve}.html"] == begins + timedelta(minutes=5)
    # And the day before the eve was owed at start-up (the eve's own night had passed).
    started = datetime(eve.year, eve.month, eve.day, 20, tzinfo=zone).astimezone(UTC)
    assert seen[f"daily-{eve - timedelta(days=1)}.csv"] == started
    assert sorted(n for n in seen if n.startswith("daily-")) == sorted(
        f"daily-{d}.{ext}" for d in (eve - timedelta(days=1), eve) for ext in ("csv", "html"))


def test_a_repeated_midnight_gives_one_night_at_the_first_midnight(
        tmp_path: Path, engine: Engine) -> None:
    # Havana 2026-11-01: 01:00 CDT -> 00:00 CST, so 00:00-01:00 happens twice; the day
    # begins at the first 00:00 (04:00 UTC) and the second one (05:00 UTC) is no new night.
    cfg = config(tmp_path, "America/Havana")
    clock = SteppedClock(datetime(2026, 10, 31, 23, 0, tzinfo=UTC))  # 19:00 local
    sched = Scheduler(cfg, engine, sources=[], clock=clock)
    built: list[tuple[str, datetime]] = []
    start = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    clock.now = start
    while clock.now <= datetime(2026, 11, 1, 7, 0, tzinfo=UTC):
        built += [(p.name, clock.now) for p in sched.nightly.tick()]
        clock.now += timedelta(minutes=1)
    assert [(n, at) for n, at in built if n.startswith("daily-2026-10-31")] == [
        ("daily-2026-10-31.csv", datetime(2026, 11, 1, 4, 5, tzinfo=UTC)),
        ("daily-2026-10-31.html", datetime(2026, 11, 1, 4, 5, tzinfo=UTC))]
    assert not [n for n, at in built if at > datetime(2026, 11, 1, 4, 5, tzinfo=UTC)]


def test_a_running_daemon_catches_up_every_missing_night_and_the_months_billing(
        tmp_path: Path, engine: Engine) -> None:
    cfg = config(tmp_path, "Atlantic/Azores")
    # Started 2026-03-30 10:00 local (UTC+0 after the jump): the night of the 30th is owed.
    clock = SteppedClock(datetime(2026, 3, 30, 10, 0, tzinfo=UTC))
    sched = Scheduler(cfg, engine, sources=[], clock=clock)
    assert {p.name for p in sched.nightly.tick()} == {"daily-2026-03-29.csv",
                                                      "daily-2026-03-29.html"}
    assert sched.nightly.tick() == []  # nothing more owed today
    # The machine sleeps three days (or the clock jumps): the next tick builds every night
    # it missed, the 1st's billing of March included, oldest first.
    clock.now = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
    assert [p.name for p in sched.nightly.tick()] == [
        "daily-2026-03-30.csv", "daily-2026-03-30.html",
        "daily-2026-03-31.csv", "daily-2026-03-31.html", "billing-2026-03.csv",
        "billing-2026-03.html", "daily-2026-04-01.csv", "daily-2026-04-01.html"]
    # No night before the daemon started is built (the 28th had no report, still has none).
    assert "daily-2026-03-28.csv" not in reports(cfg)
    assert sched.nightly.tick() == []
