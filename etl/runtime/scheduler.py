"""The `usage-etl schedule` daemon: polls on each source's interval, never loses a poll, stops cleanly."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl.config import Config, SourceConfig, split_listen_address
from etl.errors import DatabaseTimeoutError, InputError, UsageEtlError
from etl.redact import redact_url
from etl.runtime.alerting import AlertWorker
from etl.runtime.db_steps import DatabaseSteps
from etl.runtime.logs import event
from etl.runtime.metrics import Metrics, MetricsServer, database_accepts, spool_accepts
from etl.runtime.nightly import night_begins, nightly_files, nightly_reports, nights_due
from etl.runtime.status import failures_since_success
from etl.slots import next_slot_start, phase_offset
from etl.store.spool import ReplayResult, Spool, SpoolLock
from etl.store.state import Claim, PollGate, save_source_state
from etl.store.writer import record_poll
from etl.textutil import first_line
from etl.vendors.types import Outcome, PollRecord

if TYPE_CHECKING:
    from etl.collect.poll import Collector

log = logging.getLogger("etl.schedule")

# Growing pause after authentication failures: 1 min, 2, 4, ... at most an hour.
AUTH_PAUSE_FIRST = 60.0
AUTH_PAUSE_MAX = 3600.0
DEFAULT_STOP_TIMEOUT = 30.0
SPOOL_REPLAY_EVERY = 5.0
# Client-side limit of each database step of a poll (claim, store, state): a server that
# keeps the connection open but answers nothing costs a poll this long, then the poll is
# spooled (etl.runtime.db_steps).
DB_STEP_TIMEOUT_S = 10.0
# Polls that run at once, whatever the number of sources (+2 for the spool replay and the
# nightly job): a poll mostly waits on a vendor, and 10,000 sources must not mean 10,000
# threads. Due polls beyond it wait their turn (a late poll still polls, see misfire).
MAX_POLL_WORKERS = 16
POLL_THREAD_PREFIX = "usage-etl-job"
# The nightly reports run a few minutes after local midnight, once the last polls are in.
NIGHTLY_AT = clock_time(0, 5)
# Reports that could not be built (database away, disk full) are tried again this often.
NIGHTLY_RETRY_S = 15 * 60.0
# How often the daemon looks for nights owed (a few file checks); besides, it wakes at
# each night's time. The look also catches up nights a suspended machine or a clock jump
# skipped.
NIGHTLY_TICK_S = 60.0
# After --stop-timeout: how long a poll already writing its result may still finish, and
# the least time the last spool replay gets, before the process leaves without them.
FINISH_GRACE_S = 1.0
# How long stop() waits for an alert evaluation or delivery in progress.
ALERTS_STOP_WAIT_S = 5.0
FINAL_REPLAY_MIN_S = 1.0


def jitter_for(source: SourceConfig) -> float:
    """A little randomness per fire so replicas and restarts don't fire in lockstep."""
    return min(0.05 * source.interval_seconds, 5.0)


def auth_pause_seconds(failures: int) -> float:
    """The pause after the `failures`-th failure in a row that was an auth failure."""
    return min(AUTH_PAUSE_FIRST * 2 ** max(0, min(failures, 20) - 1), AUTH_PAUSE_MAX)


class SlotTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at the start of each of a source's slots (see etl.store.state) plus a small jitter.

    APScheduler's IntervalTrigger adds each jitter to the previous (jittered) fire time, so
    it drifts off the slot grid that replicas share; this one always returns to the grid.
    """

    def __init__(self, name: str, interval: float, jitter: float) -> None:
        self.name = name
        self.interval = interval
        self.offset = phase_offset(name, interval)
        self.jitter = jitter

    def next_slot_start(self, after: datetime) -> datetime:
        """The start of the source's first slot after `after`."""
        return next_slot_start(self.name, self.interval, after)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime:
        """APScheduler's hook: the next slot start after the previous fire time, plus jitter."""
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


class Scheduler:
    """Runs polls, the spool replay and the nightly reports on an APScheduler BackgroundScheduler.

    Library use (tests, notebooks): ``poll_source`` runs one scheduled poll now (claim, poll,
    store or spool, pause bookkeeping, log line) without starting anything.

    `schema_ready=False` is spool-only mode, for a database that was unreachable at start-up:
    polls go to the spool until a replay pass has checked (or created) the schema.
    `nightly_at` (the time after each local day's start at which the previous day's
    reports are built) and `nightly_retry_s` exist for tests; `clock` drives the nights.

    Alerts (SPEC 8) are evaluated after each stored poll in a thread of their own, so a slow
    receiver never delays polling; `metrics_listen` (``HOST:PORT``, default the config's
    `metrics_listen`) serves /metrics and /healthz (SPEC 9).
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
        report_engine: Engine | None = None,
        schema_ready: bool = True,
        nightly_at: clock_time = NIGHTLY_AT,
        nightly_retry_s: float = NIGHTLY_RETRY_S,
        nightly_tick_s: float = NIGHTLY_TICK_S,
        metrics_listen: str | None = None,
        db_step_timeout: float | None = None,
    ) -> None:
        if collector is None:
            from etl.collect.poll import Collector

            collector = Collector(list(config.sources))
        self.config = config
        self.engine = engine
        self.collector = collector
        self.spool = spool or Spool(config.spool_dir)
        self.sources = list(sources if sources is not None else config.sources)
        self.stop_timeout = stop_timeout
        self.clock = clock or (lambda: datetime.now(UTC))
        self.report_engine = report_engine or engine
        self.nightly_at = nightly_at
        self.nightly_retry_s = nightly_retry_s
        self.nightly_tick_s = nightly_tick_s
        self.gate = PollGate(engine)
        self.db = DatabaseSteps(DB_STEP_TIMEOUT_S if db_step_timeout is None else db_step_timeout)
        self._runtime = {s.name: _Runtime() for s in self.sources}
        self._stopping = threading.Event()
        self._inflight = 0
        self._finishing = 0  # polls past their HTTP request, storing and logging
        self._reports_busy = 0  # nightly builds running
        # The first night this daemon owes (its start day; earlier ones are done), and the
        # nights whose build failed: not tried again before this time.monotonic().
        self._first_night: date | None = None
        self._night_retry_at: dict[date, float] = {}
        self._abandoned = False  # stop() gave up waiting: late polls neither store nor log
        self._inflight_cv = threading.Condition()
        self._emit_lock = threading.Lock()
        self._silenced = False  # set with the "stopped" line: nothing is logged after it
        self._replay_lock = threading.Lock()
        self._nightly_lock = threading.Lock()
        self._schema_ready = schema_ready
        self._schema_problem: str | None = None
        self._spool_lock: SpoolLock | None = None
        self._scheduler: BackgroundScheduler | None = None
        # After stop(): True if threads that could not be stopped are still running, so the
        # process must leave with os._exit (the CLI does) or wait for them.
        self.threads_left = False
        self.metrics_listen = metrics_listen or config.metrics_listen
        self.metrics: Metrics | None = None
        self._metrics_server: MetricsServer | None = None
        self.alerts: AlertWorker | None = None
        if config.alerts or config.notifiers:
            # Whole months for projections: the report engine, without the polls' time limit.
            self.alerts = AlertWorker(self.report_engine, config, clock=self.clock,
                                      ready=lambda: self._schema_ready)

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

    def poll_source(self, source: SourceConfig) -> PollRecord | None:
        """One scheduled poll of `source`; None when it was skipped (paused, or another replica)."""
        if self._stopping.is_set():
            return None
        with self._tracked():
            rt = self._runtime.setdefault(source.name, _Runtime())
            now = self.clock()
            with self._claim(source, now) as claim:
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
                with self._finishing_poll() as go_on:
                    if not go_on:
                        return None  # stop() gave up on this poll; the process is leaving
                    stored = self._store(result)
                    pause = self._politeness(source, result, stored == "db")
                    self._log_poll(source, result, stored, pause)
                    if self.metrics is not None:
                        self.metrics.count_poll(source.name, result.outcome)
                    if stored == "db" and self.alerts is not None:
                        self.alerts.request()
            return result

    @contextmanager
    def _claim(self, source: SourceConfig, now: datetime) -> Iterator[Claim]:
        """The poll gate's claim, within the database step limit.

        A database that does not answer grants the poll "uncoordinated": the vendor call
        never waits on it.
        """
        stack = ExitStack()
        lock = threading.Lock()
        state = {"abandoned": False}

        def enter() -> Claim:
            claim = stack.enter_context(self.gate.claim(source, now))
            with lock:
                late = state["abandoned"]
            if late:  # given up on meanwhile: let go of the lock it took
                stack.close()
            return claim

        try:
            claim = self.db.run("poll claim", enter)
        except DatabaseTimeoutError as exc:
            with lock:
                state["abandoned"] = True
            self._emit(logging.WARNING, "database-slow", source=source.name, error=str(exc),
                       message="polling without the poll gate")
            yield Claim(True, "uncoordinated")
            return
        try:
            yield claim
        finally:
            try:
                self.db.run("poll claim release", stack.close)
            except Exception as exc:  # noqa: BLE001 - the session (and its lock) ends anyway
                self._emit(logging.DEBUG, "claim-release-failed", source=source.name,
                           error=first_line(exc))

    @contextmanager
    def _finishing_poll(self) -> Iterator[bool]:
        """Yields False once stop() has given up on in-flight polls, else counts this one."""
        with self._inflight_cv:
            allowed = not self._abandoned
            if allowed:
                self._finishing += 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._inflight_cv:
                    self._finishing -= 1
                    self._inflight_cv.notify_all()

    def _emit(self, level: int, name: str, **fields: Any) -> None:
        """Log an event from a worker thread, unless the "stopped" line is already out."""
        with self._emit_lock:
            if not self._silenced:
                event(log, level, name, **fields)

    def _log_poll(self, source: SourceConfig, result: PollRecord, stored: str,
                  pause: tuple[datetime, str] | None) -> None:
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
        level = logging.INFO if result.outcome is Outcome.OK else logging.WARNING
        if stored == "lost":
            level = logging.ERROR
        self._emit(level, "poll", **fields)
        if pause is not None:
            until, reason = pause
            self._emit(logging.WARNING, "pause", source=source.name, until=until, reason=reason)

    def _record(self, result: PollRecord) -> None:
        # `once`: should this write be given up on and commit late, it and the replay of the
        # spooled copy meet on one lock, and only one of them records the poll.
        record_poll(self.engine, result, once=True)

    def _store(self, result: PollRecord) -> str:
        """Store the poll; on a database failure spool it. Returns db | spool | lost."""
        if not self._schema_ready:
            reason = self._schema_problem or "database not checked yet (unreachable at start-up)"
        else:
            try:
                self.db.run("store poll", self._record, result)
                return "db"
            except Exception as exc:  # noqa: BLE001 - whatever broke the write, keep the poll
                # A write given up on may still land later: replaying the spooled copy then
                # finds it recorded and stores nothing twice (etl.store.writer).
                reason = first_line(exc)
        try:
            path = self.spool.put(result)
        except OSError as exc:
            self._emit(logging.ERROR, "spool-failed", source=result.source,
                       database_error=reason, disk_error=str(exc))
            return "lost"
        self._emit(logging.WARNING, "spooled", source=result.source, file=path.name,
                   database_error=reason)
        return "spool"

    def _politeness(
        self, source: SourceConfig, result: PollRecord, db_ok: bool
    ) -> tuple[datetime, str] | None:
        """Update the pause bookkeeping after a poll; return (until, reason) if now paused."""
        rt = self._runtime.setdefault(source.name, _Runtime())
        now = self.clock()
        if result.outcome is Outcome.OK:
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
        if result.outcome is Outcome.AUTH_ERROR:
            delay = auth_pause_seconds(failures)
            until = now + timedelta(seconds=delay)
            reason = f"authentication failed ({failures} failure(s) in a row); paused {delay:g}s"
        elif result.retry_after is not None and result.retry_after > 0:
            until = now + timedelta(seconds=result.retry_after)
            reason = f"{result.outcome}: vendor asked to wait {result.retry_after:g}s"
            sent = result.retry_after_sent
            if sent is not None and sent > result.retry_after:
                reason = (f"{result.outcome}: vendor asked to wait {sent:g}s; paused "
                          f"{result.retry_after:g}s (our cap)")
        rt.not_before = until
        rt.pause_saved = db_ok and self._save_state(source.name, failures, until, reason)
        return (until, reason) if until is not None and reason is not None else None

    def _stored_failures(self, name: str) -> int:
        """Failures in a row in the collection record (this poll included), 0 if unknown."""
        def read() -> int:
            with self.engine.connect() as conn:
                return failures_since_success(conn, name)

        try:
            return self.db.run("failure count", read)
        except (SQLAlchemyError, DatabaseTimeoutError):
            return 0

    def _save_state(
        self, name: str, failures: int, until: datetime | None, reason: str | None
    ) -> bool:
        try:
            self.db.run("source state", save_source_state, self.engine, name, failures, until,
                        reason)
        except (SQLAlchemyError, DatabaseTimeoutError) as exc:
            event(log, logging.DEBUG, "state-not-saved", source=name, error=first_line(exc))
            return False
        return True

    # -- spool and reports ---------------------------------------------------------------------

    def replay_spool(self) -> ReplayResult:
        """Write spooled polls to the database (each once); quiet when there is nothing to do.

        In spool-only mode it first checks (or creates) the schema, and ends that mode.
        """
        with self._replay_lock:
            if not self.ensure_database():
                return ReplayResult(remaining=len(self.spool))
            if not self.spool.pending():
                return ReplayResult()
            result = self.spool.replay(self.engine, on_stored=self._log_replayed)
        if result.replayed or result.already_stored:
            self._emit(logging.INFO, "spool-replayed", replayed=result.replayed,
                       already_stored=result.already_stored, remaining=result.remaining)
            if result.replayed and self.alerts is not None:
                self.alerts.request()
        if result.error:
            self._emit(logging.DEBUG, "spool-waiting", remaining=result.remaining,
                       database_error=result.error)
        if result.set_aside:
            self._emit(logging.ERROR, "spool-set-aside", files=",".join(result.set_aside),
                       folder=str(self.spool.dir / "unreadable"),
                       message="the database refused these polls every time; see .reason")
        return result

    def ensure_database(self) -> bool:
        """True once the schema has been found ready (or created) since start-up."""
        if self._schema_ready:
            return True
        from etl.errors import SchemaOutdatedError
        from etl.store.engine import ensure_schema

        try:
            ensure_schema(self.engine)
        except SchemaOutdatedError as exc:
            # Polls keep going to the spool (nothing is lost); say so once, loudly.
            if self._schema_problem != str(exc):
                self._emit(logging.ERROR, "database-refused", error=str(exc),
                           message="polls stay in the spool until this is fixed")
            self._schema_problem = str(exc)
            return False
        except (UsageEtlError, SQLAlchemyError) as exc:
            self._emit(logging.DEBUG, "database-waiting", error=first_line(exc))
            return False
        self._schema_ready = True
        self._schema_problem = None
        self._emit(logging.INFO, "database-ready", database=redact_url(str(self.engine.url)),
                   pending_spool=len(self.spool))
        # Reports that failed only because the database was away need not wait out the delay.
        if self._night_retry_at:
            self._night_retry_at.clear()
            self._wake_nightly(0.0)
        return True

    def _log_replayed(self, poll: PollRecord) -> None:
        self._emit(logging.DEBUG, "replayed", source=poll.source, started_at=poll.started_at)

    def _local_today(self) -> date:
        return self.clock().astimezone(self.config.tz).date()

    def nightly_due(self) -> date | None:
        """Today (local) once its night has come (see etl.runtime.nightly.night_begins)."""
        today = self._local_today()
        return today if self.clock() >= self._night_begins(today) else None

    def _night_begins(self, today: date) -> datetime:
        return night_begins(today, self.config.tz, self.nightly_at)

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
        for night in nights_due(self._first_night, self.clock(), self.config.tz,
                                self.nightly_at):
            missing = self.missing_reports(night)
            if missing:
                owed.append((night, missing))
            elif not owed:
                self._first_night = night + timedelta(days=1)  # done up to here
        return owed

    def nightly(self, today: date | None = None) -> list[Path]:
        """Build the reports due after local midnight of `today` (default: today, report zone)."""
        written = self._build_nightly(today or self._local_today())
        return written or []

    def nightly_tick(self) -> list[Path]:
        """Build the reports of every night owed by now (owed_nights), oldest first.

        A night whose build failed (or left files missing) is tried again once
        `nightly_retry_s` has passed. Returns the files written. The daemon runs this every
        `nightly_tick_s` and at each night's time.
        """
        written: list[Path] = []
        for night, _missing in self.owed_nights():
            if self._stopping.is_set():
                break
            if time.monotonic() < self._night_retry_at.get(night, 0.0):
                continue
            written += self._nightly_job(night)
        self._wake_at_next_night()
        return written

    def _build_nightly(self, today: date) -> list[Path] | None:
        """The nightly reports of `today`; None (logged) if they could not be built."""
        try:
            if not self._schema_ready:
                raise UsageEtlError(
                    self._schema_problem or "database not reachable since start-up")
            written = nightly_reports(self.report_engine, self.config, today)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the retry must still come
            self._emit(logging.ERROR, "reports-failed", day=today.isoformat(),
                       error=first_line(exc))
            return None
        self._emit(logging.INFO, "reports", day=today.isoformat(),
                   files=",".join(p.name for p in written))
        return written

    def _nightly_job(self, night: date) -> list[Path]:
        """Build one night's missing reports; on failure set its retry time (logged)."""
        with self._inflight_cv:
            if self._stopping.is_set():
                return []
            self._reports_busy += 1
        try:
            with self._nightly_lock:
                if not self.missing_reports(night):
                    self._night_retry_at.pop(night, None)
                    return []  # built meanwhile (another replica or a person)
                written = self._build_nightly(night)
                missing = self.missing_reports(night)
        finally:
            with self._inflight_cv:
                self._reports_busy -= 1
                self._inflight_cv.notify_all()
        if written is None or missing:
            self._night_retry_at[night] = time.monotonic() + self.nightly_retry_s
            self._emit(logging.WARNING, "reports-retry", day=night.isoformat(),
                       at=datetime.now(UTC) + timedelta(seconds=self.nightly_retry_s))
            if self.nightly_retry_s < self.nightly_tick_s:
                self._wake_nightly(self.nightly_retry_s)
        else:
            self._night_retry_at.pop(night, None)
        return written or []

    def _wake_at_next_night(self) -> None:
        """Have the tick run when the next night comes (on the clock), not a tick late."""
        now = self.clock()
        today = now.astimezone(self.config.tz).date()
        begins = self._night_begins(today)
        if now >= begins:
            begins = self._night_begins(today + timedelta(days=1))
        self._wake_nightly((begins - now).total_seconds(), "nightly-next")

    def _wake_nightly(self, delay: float, job_id: str = "nightly-soon") -> None:
        sched = self._scheduler
        if sched is None or self._stopping.is_set():
            return
        try:
            sched.add_job(
                self.nightly_tick, "date",
                run_date=datetime.now(UTC) + timedelta(seconds=max(0.0, delay) + 0.01),
                id=job_id, replace_existing=True, misfire_grace_time=None, coalesce=True)
        except Exception as exc:  # noqa: BLE001 - the periodic tick still comes
            self._emit(logging.DEBUG, "nightly-wake-failed", error=first_line(exc))

    # -- the daemon ----------------------------------------------------------------------------

    def start(self) -> None:
        """Replay what an earlier run spooled, then start the jobs in background threads.

        Raises SpoolInUseError if another daemon owns the spool folder, InputError if the
        metrics address cannot be listened on.
        """
        if self.metrics_listen:
            self._listen_metrics(self.metrics_listen)
        self._spool_lock = self.spool.lock()
        recovered = self.spool.recover_partial()
        if recovered.restored or recovered.set_aside or recovered.duplicates:
            event(log, logging.WARNING, "spool-recovered",
                  restored=",".join(recovered.restored) or None,
                  set_aside=",".join(recovered.set_aside) or None,
                  duplicates_removed=",".join(recovered.duplicates) or None)
        self.replay_spool()
        sched = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(
                max_workers=min(len(self.sources), MAX_POLL_WORKERS) + 2,
                pool_kwargs={"thread_name_prefix": POLL_THREAD_PREFIX})},
        )
        now = datetime.now(UTC)
        for src in self.sources:
            trigger = SlotTrigger(src.name, src.interval_seconds, jitter_for(src))
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
        # Nights are found on the clock at every tick (and at each night's time), so the
        # start-up catch-up (a run missed while the daemon was down or started late) is the
        # first tick: at once.
        self._first_night = self._local_today()
        owed = self.owed_nights()
        sched.add_job(
            self.nightly_tick, "interval", seconds=self.nightly_tick_s, id="nightly-reports",
            coalesce=True, max_instances=1, misfire_grace_time=None, next_run_time=now,
        )
        self._scheduler = sched
        sched.start()
        if self.alerts is not None:
            self.alerts.start()  # its first pass also sends what a previous run left
        if self._metrics_server is not None:
            self._metrics_server.start()
        event(log, logging.INFO, "started", sources=",".join(s.name for s in self.sources),
              database=redact_url(str(self.engine.url)), spool=str(self.spool.dir),
              pending_spool=len(self.spool), database_ready=self._schema_ready,
              alerts=len(self.config.alerts) or None,
              metrics=(f"http://{self.metrics_listen}/metrics" if self._metrics_server
                       else None))
        for night, missing in owed:
            event(log, logging.INFO, "reports-catch-up", day=night.isoformat(),
                  missing=",".join(p.name for p in missing))

    def _listen_metrics(self, address: str) -> None:
        host, port = split_listen_address(address)
        self.metrics = Metrics(self.engine, self.config, spool_files=lambda: len(self.spool))
        try:
            self._metrics_server = MetricsServer(host, port, self.metrics, self.healthy)
        except OSError as exc:
            raise InputError(f"metrics_listen {address}: cannot listen there: "
                             f"{exc.strerror or exc}") from None

    def healthy(self) -> bool:
        """/healthz: running, and the database or the spool folder accepts polls (SPEC 9)."""
        sched = self._scheduler
        if sched is None or not sched.running or self._stopping.is_set():
            return False
        # The spool first: checking it is instant, while a database that went silent can
        # take its connect timeout to answer.
        if spool_accepts(self.spool.dir):
            return True
        return self._schema_ready and database_accepts(self.engine)

    def stop(self) -> bool:
        """Stop firing, let in-flight polls finish (at most stop_timeout), flush the spool.

        Returns True if everything finished. Otherwise polls still waiting on a vendor are
        abandoned (they will neither store nor log), so is a report build (its files are
        replaced atomically, and a missing one is caught up at the next start),
        `threads_left` is set, and the caller should leave with os._exit: those threads
        would otherwise delay the exit.
        """
        begun = time.monotonic()
        self._stopping.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self.alerts is not None:
            # A delivery in flight is stored and is sent again at the next start (same id).
            self.alerts.stop(timeout=min(self.stop_timeout, ALERTS_STOP_WAIT_S))
        if self._metrics_server is not None:
            self._metrics_server.stop()
        with self._inflight_cv:
            self._inflight_cv.wait_for(
                lambda: self._inflight == 0 and self._reports_busy == 0,
                timeout=self.stop_timeout,
            )
            left, reports_left = self._inflight, self._reports_busy
            if left:
                self._abandoned = True
                # A poll already writing its result gets a moment (the write is one
                # transaction or one fsynced file either way, so cutting it loses nothing
                # that was acknowledged).
                self._inflight_cv.wait_for(lambda: self._finishing == 0,
                                           timeout=FINISH_GRACE_S)
        clean = not left and not reports_left
        if not clean:
            self._emit(logging.ERROR, "stop-timeout", still_running=left,
                       reports_running=reports_left or None, waited_s=self.stop_timeout)
        # The last replay runs in a thread of its own so a database that hangs cannot hold
        # the exit past the stop timeout.
        replayer = threading.Thread(target=self._final_replay, name="final-replay", daemon=True)
        replayer.start()
        budget = max(self.stop_timeout - (time.monotonic() - begun), FINAL_REPLAY_MIN_S)
        replayer.join(budget)
        if replayer.is_alive():
            self._emit(logging.ERROR, "spool-flush-timeout", waited_s=round(budget, 1))
        self.threads_left = not clean or replayer.is_alive()
        pending = len(self.spool)
        if not self.threads_left:
            self.collector.close()
        with self._emit_lock:
            event(log, logging.INFO, "stopped", pending_spool=pending,
                  abandoned_polls=left or None)
            self._silenced = True
        if self._spool_lock is not None and not self.threads_left:
            self._spool_lock.release()
            self._spool_lock = None
        return clean and not self.threads_left

    def _final_replay(self) -> None:
        try:
            self.replay_spool()
        except OSError as exc:
            self._emit(logging.ERROR, "spool-failed", error=str(exc))

    def run(self, stop_event: threading.Event | None = None) -> int:
        """Start, wait for SIGINT/SIGTERM (or `stop_event`), stop; returns exit status 0.

        If `threads_left` is then set, polls that outlived the stop timeout are still running:
        the daemon leaves with os._exit rather than wait for them.
        """
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
