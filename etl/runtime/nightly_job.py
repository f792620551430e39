"""The daemon's nightly bookkeeping: which nights are owed, building each once, retrying failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from etl.config import Config
from etl.errors import UsageEtlError
from etl.runtime.clocks import monotonic_of
from etl.runtime.logs import EventLog
from etl.runtime.nightly import night_begins, nightly_files, nightly_reports, nights_due
from etl.textutil import first_line

# The nightly reports run a few minutes after local midnight, once the last polls are in.
NIGHTLY_AT = clock_time(0, 5)
# Reports that could not be built (database away, disk full) are tried again this often.
NIGHTLY_RETRY_S = 15 * 60.0
# How often the daemon looks for nights owed (a few file checks); besides, it wakes at
# each night's time. The look also catches up nights a suspended machine or a clock jump
# skipped.
NIGHTLY_TICK_S = 60.0
# The one-off job that wakes the nightly look when the next night begins (wall clock).
NIGHTLY_NEXT_JOB = "nightly-next"


class NightlyJob:
    """Builds the reports each night owes (SPEC 3), from the daemon's start day on.

    `at` is the time after each local day's start at which the previous day's reports are
    built; `clock` drives the nights (its `monotonic()`, when it has one, times the retries).
    `unready` says why the database cannot be used yet
    (None: it can). Builds count in `busy` under `cv` (the daemon's stop waits for them)
    and none starts once `stopping` is set.
    """

    def __init__(self, config: Config, engine: Engine, *, clock: Callable[[], datetime],
                 emit: EventLog, unready: Callable[[], str | None],
                 stopping: threading.Event, cv: threading.Condition,
                 at: clock_time = NIGHTLY_AT, retry_s: float = NIGHTLY_RETRY_S,
                 tick_s: float = NIGHTLY_TICK_S) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.monotonic = monotonic_of(clock)
        self.emit = emit
        self.unready = unready
        self.stopping = stopping
        self.cv = cv
        self.at = at
        self.retry_s = retry_s
        self.tick_s = tick_s
        self.busy = 0  # builds running, guarded by cv
        # The first night this daemon owes (its start day; earlier ones are done), and the
        # nights whose build failed: not tried again before this monotonic time.
        self._first_night: date | None = None
        self._retry_at: dict[date, float] = {}
        self._lock = threading.Lock()
        self._sched: BackgroundScheduler | None = None

    def attach(self, sched: BackgroundScheduler, now: datetime) -> list[tuple[date, list[Path]]]:
        """Add the tick to `sched` (its first run at `now`); the nights owed at start-up.

        Nights are found on the clock at every tick (and at each night's time), so the
        start-up catch-up (a run missed while the daemon was down or started late) is the
        first tick: at once.
        """
        self._first_night = self._local_today()
        owed = self.owed_nights()
        sched.add_job(
            self.tick, "interval", seconds=self.tick_s, id="nightly-reports",
            coalesce=True, max_instances=1, misfire_grace_time=None, next_run_time=now,
        )
        self._sched = sched
        return owed

    def _local_today(self) -> date:
        return self.clock().astimezone(self.config.tz).date()

    def due(self) -> date | None:
        """Today (local) once its night has come (see etl.runtime.nightly.night_begins)."""
        today = self._local_today()
        return today if self.clock() >= self._night_begins(today) else None

    def _night_begins(self, today: date) -> datetime:
        return night_begins(today, self.config.tz, self.at)

    def missing_reports(self, today: date) -> list[Path]:
        """The nightly report files due for `today` that do not exist yet."""
        return [p for p in nightly_files(self.config, today) if not p.is_file()]

    def owed_nights(self) -> list[tuple[date, list[Path]]]:
        """(night, missing files) for each night since start-up that has come and lacks files.

        A night is a `today` of nightly_files: the reports of the local day before it (and on
        the 1st the billing of the month before), SPEC 3. Nights are found by the clock, so
        a skipped or repeated midnight, a suspended machine or a clock jump misses none.
        """
        if self._first_night is None:
            self._first_night = self._local_today()
        owed: list[tuple[date, list[Path]]] = []
        for night in nights_due(self._first_night, self.clock(), self.config.tz, self.at):
            missing = self.missing_reports(night)
            if missing:
                owed.append((night, missing))
            elif not owed:
                self._first_night = night + timedelta(days=1)  # done up to here
        return owed

    def build(self, today: date | None = None) -> list[Path]:
        """Build the reports due after local midnight of `today` (default: today, report zone)."""
        return self._build(today or self._local_today()) or []

    def tick(self) -> list[Path]:
        """Build the reports of every night owed by now (owed_nights), oldest first.

        A night whose build failed (or left files missing) is tried again once `retry_s`
        has passed. Returns the files written. The daemon runs this every `tick_s` and at
        each night's time.
        """
        written: list[Path] = []
        for night, _missing in self.owed_nights():
            if self.stopping.is_set():
                break
            if self.monotonic() < self._retry_at.get(night, 0.0):
                continue
            written += self._build_owed(night)
        self._wake_at_next_night()
        return written

    def database_back(self) -> None:
        """Reports that failed only because the database was away need not wait out the delay."""
        if self._retry_at:
            self._retry_at.clear()
            self._wake(0.0)

    def wake_now(self) -> None:
        """Look for nights owed at once (after a clock step), which re-arms the next night."""
        self._wake(0.0)

    def _build(self, today: date) -> list[Path] | None:
        """The nightly reports of `today`; None (logged) if they could not be built."""
        try:
            problem = self.unready()
            if problem is not None:
                raise UsageEtlError(problem)
            written = nightly_reports(self.engine, self.config, today)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the retry must still come
            self.emit(logging.ERROR, "reports-failed", day=today.isoformat(),
                      error=first_line(exc))
            return None
        self.emit(logging.INFO, "reports", day=today.isoformat(),
                  files=",".join(p.name for p in written))
        return written

    def _build_owed(self, night: date) -> list[Path]:
        """Build one night's missing reports; on failure set its retry time (logged)."""
        with self.cv:
            if self.stopping.is_set():
                return []
            self.busy += 1
        try:
            with self._lock:
                if not self.missing_reports(night):
                    self._retry_at.pop(night, None)
                    return []  # built meanwhile (another replica or a person)
                written = self._build(night)
                missing = self.missing_reports(night)
        finally:
            with self.cv:
                self.busy -= 1
                self.cv.notify_all()
        if written is None or missing:
            self._retry_at[night] = self.monotonic() + self.retry_s
            self.emit(logging.WARNING, "reports-retry", day=night.isoformat(),
                      at=self.clock() + timedelta(seconds=self.retry_s))
            if self.retry_s < self.tick_s:
                self._wake(self.retry_s)
        else:
            self._retry_at.pop(night, None)
        return written or []

    def _wake_at_next_night(self) -> None:
        """Have the tick run when the next night comes (on the clock), not a tick late."""
        now = self.clock()
        today = now.astimezone(self.config.tz).date()
        begins = self._night_begins(today)
        if now >= begins:
            begins = self._night_begins(today + timedelta(days=1))
        self._wake((begins - now).total_seconds(), NIGHTLY_NEXT_JOB)

    def _wake(self, delay: float, job_id: str = "nightly-soon") -> None:
        """Run the look once after `delay` seconds of elapsed time from now."""
        # APScheduler reads the machine's wall clock, not ours: the run date is on its clock,
        # and a step after this is realigned by the daemon's clock watch.
        sched = self._sched
        if sched is None or self.stopping.is_set():
            return
        try:
            sched.add_job(
                self.tick, "date",
                run_date=datetime.now(UTC) + timedelta(seconds=max(0.0, delay) + 0.01),
                id=job_id, replace_existing=True, misfire_grace_time=None, coalesce=True)
        except Exception as exc:  # noqa: BLE001 - the periodic tick still comes
            self.emit(logging.DEBUG, "nightly-wake-failed", error=first_line(exc))
