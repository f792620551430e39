"""The `usage-etl schedule` daemon: polls on each source's interval, never loses a poll, stops cleanly."""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from etl.config import Config, SourceConfig
from etl.errors import UsageEtlError
from etl.locks import PollGate, phase_offset
from etl.logs import event
from etl.models import EPOCH, SourceState
from etl.redact import redact_url
from etl.spool import ReplayResult, Spool, SpooledPoll
from etl.status import failures_since_success

if TYPE_CHECKING:
    from etl.collect import Collector, PollResult

log = logging.getLogger("etl.schedule")

# Growing pause after authentication failures: 1 min, 2, 4, ... at most an hour.
AUTH_PAUSE_FIRST = 60.0
AUTH_PAUSE_MAX = 3600.0
DEFAULT_STOP_TIMEOUT = 30.0
SPOOL_REPLAY_EVERY = 5.0
# The nightly reports run a few minutes after local midnight, once the last polls are in.
NIGHTLY_HOUR, NIGHTLY_MINUTE = 0, 5


def jitter_for(source: SourceConfig) -> float:
    """A little randomness per fire so replicas and restarts don't fire in lockstep."""
    return min(0.05 * source.interval_seconds, 5.0)


def auth_pause_seconds(failures: int) -> float:
    """The pause after the `failures`-th failure in a row that was an auth failure."""
    return min(AUTH_PAUSE_FIRST * 2 ** max(0, min(failures, 20) - 1), AUTH_PAUSE_MAX)


class SlotTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at the start of each of a source's slots (see etl.locks) plus a small jitter.

    APScheduler's IntervalTrigger adds each jitter to the previous (jittered) fire time, so
    it drifts off the slot grid that replicas share; this one always returns to the grid.
    """

    def __init__(self, interval: float, offset: float, jitter: float) -> None:
        self.interval = interval
        self.offset = offset
        self.jitter = jitter

    def next_slot_start(self, after: datetime) -> datetime:
        t = (after - EPOCH).total_seconds() - self.offset
        k = math.floor(t / self.interval) + 1
        return EPOCH + timedelta(seconds=self.offset + k * self.interval)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime:
        start = self.next_slot_start(previous_fire_time or now)
        return start + timedelta(seconds=random.uniform(0, self.jitter))

    def __str__(self) -> str:
        return f"slot[interval={self.interval:g}s, offset={self.offset:.2f}s]"


@dataclass
class _Runtime:
    """What one process remembers about a source, also when the database is away."""

    not_before: datetime | None = None
    pause_saved: bool = False  # is not_before also in source_state?
    consecutive_failures: int = 0


def nightly_reports(engine: Engine, config: Config, today: date) -> list[Path]:
    """Yesterday's daily report, and on the 1st of a month last month's billing report."""
    # Imported here: `etl` stays free of pandas unless a report is actually built.
    from reports.jobs import build_billing, build_daily

    out_dir = Path(config.reports_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    yesterday = today - timedelta(days=1)
    written = list(
        build_daily(engine, config, yesterday, yesterday, tz=config.timezone, out_dir=out_dir)
    )
    if today.day == 1 and config.billing:
        month = f"{yesterday.year:04d}-{yesterday.month:02d}"
        written += build_billing(engine, config, month, tz=config.timezone, out_dir=out_dir)
    return written


class Scheduler:
    """Runs polls, the spool replay and the nightly reports on an APScheduler BackgroundScheduler.

    Library use (tests, notebooks): ``poll_source`` runs one scheduled poll now (claim, poll,
    store or spool, pause bookkeeping, log line) without starting anything.
    """

    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        collector: Collector | None = None,
        spool: Spool | None = None,
        sources: list[SourceConfig] | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if collector is None:
            from etl.collect import Collector

            collector = Collector(list(config.sources))
        self.config = config
        self.engine = engine
        self.collector = collector
        self.spool = spool or Spool(config.spool_dir)
        self.sources = list(sources if sources is not None else config.sources)
        self.stop_timeout = stop_timeout
        self.clock = clock or (lambda: datetime.now(UTC))
        self.gate = PollGate(engine)
        self._runtime = {s.name: _Runtime() for s in self.sources}
        self._stopping = threading.Event()
        self._inflight = 0
        self._inflight_cv = threading.Condition()
        self._replay_lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None

    # -- one poll ------------------------------------------------------------------------------

    @contextmanager
    def _tracked(self) -> Iterator[None]:
        with self._inflight_cv:
            self._inflight += 1
        try:
            yield
        finally:
            with self._inflight_cv:
                self._inflight -= 1
                self._inflight_cv.notify_all()

    def poll_source(self, source: SourceConfig) -> PollResult | None:
        """One scheduled poll of `source`; None when it was skipped (paused, or another replica)."""
        if self._stopping.is_set():
            return None
        with self._tracked():
            rt = self._runtime.setdefault(source.name, _Runtime())
            now = self.clock()
            with self.gate.claim(source, now) as claim:
                if not claim.granted:
                    event(log, logging.DEBUG, "skip", source=source.name, reason=claim.reason)
                    return None
                # The database's pause is authoritative (a later success may have lifted it);
                # ours counts when the database could not be asked or never heard of it.
                own_pause = rt.not_before is not None and now < rt.not_before
                if own_pause and (claim.reason == "uncoordinated" or not rt.pause_saved):
                    event(log, logging.DEBUG, "skip", source=source.name, reason="paused",
                          paused_until=rt.not_before)
                    return None
                result = self.collector.poll(source)
                stored = self._store(result)
                pause = self._politeness(source, result, stored == "db")
            fields: dict[str, Any] = {
                "source": source.name,
                "outcome": result.outcome,
                "latency_ms": round(result.latency_ms, 1) if result.latency_ms is not None else None,
                "http_status": result.http_status,
                "tries": result.tries,
                "stored": stored,
                "samples": getattr(result, "samples_stored", None) if stored == "db" else None,
                "started_at": result.started_at,
            }
            if result.error:
                fields["error"] = result.error
            level = logging.INFO if result.outcome == "ok" else logging.WARNING
            if stored == "lost":
                level = logging.ERROR
            event(log, level, "poll", **fields)
            if pause is not None:
                until, reason = pause
                event(log, logging.WARNING, "pause", source=source.name, until=until,
                      reason=reason)
            return result

    def _store(self, result: PollResult) -> str:
        """Store the poll; on a database failure spool it. Returns db | spool | lost."""
        from etl.collect import store_poll

        try:
            store_poll(self.engine, result)
            return "db"
        except Exception as exc:  # noqa: BLE001 - whatever broke the write, keep the poll
            reason = _first_line(exc)
        try:
            path = self.spool.put(result)
        except OSError as exc:
            event(log, logging.ERROR, "spool-failed", source=result.source,
                  database_error=reason, disk_error=str(exc))
            return "lost"
        event(log, logging.WARNING, "spooled", source=result.source, file=path.name,
              database_error=reason)
        return "spool"

    def _politeness(
        self, source: SourceConfig, result: PollResult, db_ok: bool
    ) -> tuple[datetime, str] | None:
        """Update the pause bookkeeping after a poll; return (until, reason) if now paused."""
        rt = self._runtime.setdefault(source.name, _Runtime())
        now = self.clock()
        if result.outcome == "ok":
            rt.consecutive_failures = 0
            rt.not_before = None
            if db_ok:
                self._save_state(source.name, 0, None, None)
            return None
        failures = rt.consecutive_failures + 1
        if db_ok:
            failures = self._stored_failures(source.name) or failures
        rt.consecutive_failures = failures
        until: datetime | None = None
        reason: str | None = None
        if result.outcome == "auth_error":
            delay = auth_pause_seconds(failures)
            until = now + timedelta(seconds=delay)
            reason = f"authentication failed ({failures} failure(s) in a row); paused {delay:g}s"
        elif result.retry_after is not None and result.retry_after > 0:
            until = now + timedelta(seconds=result.retry_after)
            reason = f"{result.outcome}: vendor asked to wait {result.retry_after:g}s"
        rt.not_before = until
        rt.pause_saved = db_ok and self._save_state(source.name, failures, until, reason)
        return (until, reason) if until is not None and reason is not None else None

    def _stored_failures(self, name: str) -> int:
        """Failures in a row in the collection record (this poll included), 0 if unknown."""
        try:
            with self.engine.connect() as conn:
                return failures_since_success(conn, name)
        except SQLAlchemyError:
            return 0

    def _save_state(
        self, name: str, failures: int, until: datetime | None, reason: str | None
    ) -> bool:
        values = {
            "source": name,
            "consecutive_failures": failures,
            "paused_until": until,
            "pause_reason": reason,
            "updated_at": datetime.now(UTC),
        }
        try:
            with self.engine.begin() as conn:
                insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                stmt = insert(SourceState).values(values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["source"],
                    set_={k: stmt.excluded[k] for k in values if k != "source"},
                )
                conn.execute(stmt)
        except SQLAlchemyError as exc:
            event(log, logging.DEBUG, "state-not-saved", source=name, error=_first_line(exc))
            return False
        return True

    # -- spool and reports ---------------------------------------------------------------------

    def replay_spool(self) -> ReplayResult:
        """Write spooled polls to the database (each once); quiet when there is nothing to do."""
        with self._replay_lock:
            if not self.spool.pending():
                return ReplayResult()
            result = self.spool.replay(self.engine, on_stored=self._log_replayed)
        if result.replayed or result.already_stored:
            event(log, logging.INFO, "spool-replayed", replayed=result.replayed,
                  already_stored=result.already_stored, remaining=result.remaining)
        if result.error:
            event(log, logging.DEBUG, "spool-waiting", remaining=result.remaining,
                  database_error=result.error)
        return result

    def _log_replayed(self, poll: SpooledPoll) -> None:
        event(log, logging.DEBUG, "replayed", source=poll.source, started_at=poll.started_at)

    def nightly(self, today: date | None = None) -> list[Path]:
        """Build the reports due after local midnight of `today` (default: today, report zone)."""
        if today is None:
            today = self.clock().astimezone(self.config.tz).date()
        try:
            written = nightly_reports(self.engine, self.config, today)
        except (UsageEtlError, SQLAlchemyError, OSError) as exc:
            event(log, logging.ERROR, "reports-failed", day=today.isoformat(),
                  error=_first_line(exc))
            return []
        event(log, logging.INFO, "reports", day=today.isoformat(),
              files=",".join(p.name for p in written))
        return written

    # -- the daemon ----------------------------------------------------------------------------

    def start(self) -> None:
        """Replay what an earlier run spooled, then start the jobs in background threads."""
        self.spool.clean_partial()
        self.replay_spool()
        sched = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=len(self.sources) + 2)},
        )
        now = datetime.now(UTC)
        for src in self.sources:
            trigger = SlotTrigger(src.interval_seconds, phase_offset(src), jitter_for(src))
            kwargs: dict[str, Any] = {}
            # Poll right away unless the source's next slot is close anyway: spacing stays
            # at least half an interval even across a restart.
            if (trigger.next_slot_start(now) - now).total_seconds() > src.interval_seconds / 2:
                kwargs["next_run_time"] = now
            sched.add_job(
                self.poll_source, trigger, args=[src], id=f"poll:{src.name}",
                name=f"poll {src.name}", coalesce=True, max_instances=1,
                misfire_grace_time=max(1, int(src.interval_seconds / 2)), **kwargs,
            )
        sched.add_job(
            self.replay_spool, "interval", seconds=SPOOL_REPLAY_EVERY, id="spool-replay",
            coalesce=True, max_instances=1, misfire_grace_time=int(SPOOL_REPLAY_EVERY),
        )
        sched.add_job(
            self.nightly,
            CronTrigger(hour=NIGHTLY_HOUR, minute=NIGHTLY_MINUTE, timezone=self.config.tz),
            id="nightly-reports", coalesce=True, max_instances=1,
            misfire_grace_time=6 * 3600,
        )
        sched.start()
        self._scheduler = sched
        event(log, logging.INFO, "started", sources=",".join(s.name for s in self.sources),
              database=redact_url(str(self.engine.url)), spool=str(self.spool.dir),
              pending_spool=len(self.spool))

    def stop(self) -> bool:
        """Stop firing, let in-flight polls finish (bounded), flush the spool; True if clean."""
        self._stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        deadline = self.stop_timeout
        with self._inflight_cv:
            clean = self._inflight_cv.wait_for(lambda: self._inflight == 0, timeout=deadline)
            left = self._inflight
        if not clean:
            event(log, logging.ERROR, "stop-timeout", still_running=left,
                  waited_s=self.stop_timeout)
        try:
            self.replay_spool()
        except OSError as exc:
            event(log, logging.ERROR, "spool-failed", error=str(exc))
        pending = len(self.spool)
        self.collector.close()
        event(log, logging.INFO, "stopped", pending_spool=pending)
        return clean

    def run(self, stop_event: threading.Event | None = None) -> int:
        """Start, wait for SIGINT/SIGTERM (or `stop_event`), stop cleanly; returns exit status 0."""
        stop_event = stop_event or threading.Event()
        received: list[str] = []

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            received.append(signal.Signals(signum).name)
            stop_event.set()

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start()
            while not stop_event.wait(1.0):
                pass
            event(log, logging.INFO, "stopping", signal=received[0] if received else "request",
                  inflight=self._inflight)
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__
