"""The daemon's two clocks (wall, monotonic), the watch that notices a wall clock step, realigning."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.base import BaseScheduler

from etl.runtime.logs import EventLog
from etl.runtime.triggers import SlotTrigger
from etl.textutil import first_line

# A wall clock that moves against the monotonic one by more than this between two looks
# was stepped (NTP, a restored VM snapshot, `date -s`); slewing NTP moves it far less.
STEP_TOLERANCE_S = 1.0
# How often the daemon's watch looks (seconds of elapsed time).
WATCH_EVERY_S = 1.0
# How many times a look reads the clocks again when the thread was held off between reads.
READ_TRIES = 5


class DaemonClock(Protocol):
    """What the daemon reads time from: called, the wall clock; `monotonic()`, elapsed time.

    The wall clock (an aware UTC datetime) says which slot, night or pause it is; the
    monotonic clock (seconds, arbitrary origin) measures every wait and duration.
    """

    def __call__(self) -> datetime:
        """The wall clock, an aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Elapsed seconds since an arbitrary origin."""
        ...


class SystemClock:
    """The machine's clocks: `datetime.now(UTC)` and `time.monotonic()`."""

    def __call__(self) -> datetime:
        """The wall clock, UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Elapsed seconds since an arbitrary origin; never steps."""
        return time.monotonic()


def monotonic_of(clock: Callable[[], datetime]) -> Callable[[], float]:
    """The monotonic reading of `clock` if it has one (a DaemonClock), else time.monotonic."""
    reading = getattr(clock, "monotonic", None)
    return reading if callable(reading) else time.monotonic


def step_text(step_s: float) -> str:
    """A step's size for people: ``-3600 s``, ``+1.5 s``."""
    return f"{step_s:+.0f} s" if abs(step_s) >= 10 else f"{step_s:+.1f} s"


class ClockWatch:
    """Notices the wall clock stepping against the monotonic clock, logs it once, reports it.

    `check()` compares wall minus monotonic with its last look: a change beyond
    `tolerance` seconds is one step (logged as `clock-step` with its size, `step_s`
    seconds, negative when the clock went back), after which `on_step(step_s, wall_now)`
    runs once; each look is the reference of the next. `run` looks every
    `every` seconds of elapsed time until `stopping` is set.
    """

    def __init__(self, clock: DaemonClock, on_step: Callable[[float, datetime], None],
                 emit: EventLog, tolerance: float = STEP_TOLERANCE_S) -> None:
        self.clock = clock
        self._monotonic = monotonic_of(clock)  # a wall-only clock: the machine's
        self.on_step = on_step
        self.emit = emit
        self.tolerance = tolerance
        self._lock = threading.Lock()
        self._offset = self._read()[0]
        self.steps: list[float] = []  # every step seen, in seconds (for status and tests)

    def _read(self) -> tuple[float, datetime]:
        # The two clocks are read one after the other: a thread held off between the reads
        # (a busy machine, or time advanced meanwhile by another thread) would see wall minus
        # monotonic move by the length of the hold, a step that never happened. A pair
        # whose monotonic readings either side of the wall one are further apart than a
        # fraction of the tolerance is read again; the closest pair is used if none is.
        best: tuple[float, float, datetime] | None = None
        for _ in range(READ_TRIES):
            before = self._monotonic()
            wall = self.clock()
            after = self._monotonic()
            spread = after - before
            if best is None or spread < best[0]:
                best = (spread, wall.timestamp() - (before + after) / 2, wall)
            if spread <= self.tolerance / 4:
                break
        assert best is not None
        return best[1], best[2]

    def check(self) -> float | None:
        """Look once; the step in seconds if the wall clock stepped since the last look."""
        with self._lock:
            offset, wall = self._read()
            step = offset - self._offset
            # Each look is the next one's reference, so that slewing (NTP moves a clock
            # at most half a millisecond a second) never adds up to a step.
            self._offset = offset
            if abs(step) <= self.tolerance:
                return None
            size = round(step, 1) if abs(step) < 10 else float(round(step))
            self.steps.append(size)
            self.emit(logging.WARNING, "clock-step", step=step_text(step), step_s=size,
                      now=wall,
                      message=("wall clock stepped " + ("back" if step < 0 else "forward")
                               + f" {abs(size):g} s; waits follow elapsed time"))
        self.on_step(step, wall)
        return step

    def start(self, stopping: threading.Event) -> threading.Thread:
        """Run the watch in a thread of its own (a daemon thread) until `stopping` is set."""
        thread = threading.Thread(target=self.run, args=(stopping,), name="clock-watch",
                                  daemon=True)
        thread.start()
        return thread

    def run(self, stopping: threading.Event, every: float = WATCH_EVERY_S) -> None:
        """Look every `every` seconds of elapsed time until `stopping` is set."""
        while not stopping.wait(every):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive one bad look
                self.emit(logging.ERROR, "clock-watch-failed", error=str(exc))


def realign_jobs(sched: BaseScheduler, step_s: float,
                 now: datetime) -> list[tuple[str, str]]:
    """Move every job of `sched` after the wall clock stepped by `step_s` seconds to `now`.

    A slot poll (SlotTrigger) goes to the source's next slot on the new wall clock: at most
    one interval of elapsed time away, and never a burst of the slots a forward step
    skipped (one poll per slot, SPEC 3). Any other job keeps the elapsed time it still had
    to wait (its next run moves by the step); the nightly job re-arms its own wake-up at the
    next night when it looks (etl.runtime.nightly_job). Paused jobs stay.
    Returns (job id, one-line error) for each job that could not be moved (ended meanwhile).
    """
    failed: list[tuple[str, str]] = []
    for job in sched.get_jobs():
        if job.next_run_time is None:
            continue
        if isinstance(job.trigger, SlotTrigger):
            when = job.trigger.get_next_fire_time(None, now)
        else:
            when = job.next_run_time + timedelta(seconds=step_s)
        try:
            sched.modify_job(job.id, next_run_time=when)  # which also wakes the scheduler
        except Exception as exc:  # noqa: BLE001 - a one-off job that ran meanwhile
            failed.append((job.id, first_line(exc)))
    return failed


def next_runs(sched: BaseScheduler | None) -> dict[str, datetime]:
    """Each job's next run on the wall clock, by job id; {} without a scheduler."""
    if sched is None:
        return {}
    return {job.id: job.next_run_time for job in sched.get_jobs()
            if job.next_run_time is not None}
