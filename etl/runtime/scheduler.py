"""The `usage-etl schedule` daemon: polls on each source's interval, never loses a poll, stops cleanly."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from types import FrameType
from typing import TYPE_CHECKING, Any, assert_never

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from etl.config import Config, SourceConfig, split_listen_address
from etl.errors import DatabaseTimeoutError, InputError
from etl.redact import redact_url
from etl.runtime.alerting import AlertWorker
from etl.runtime.clocks import ClockWatch, DaemonClock, SystemClock, next_runs, realign_jobs
from etl.runtime.db_steps import DatabaseSteps
from etl.runtime.history import poll_history
from etl.runtime.logs import EventLog, event
from etl.runtime.metrics import Metrics, MetricsServer, database_accepts, spool_accepts
from etl.runtime.nightly_job import NIGHTLY_AT, NIGHTLY_RETRY_S, NIGHTLY_TICK_S, NightlyJob
from etl.runtime.pauses import Pause, PausePolicy
from etl.runtime.recovery import Recovery, Stored
from etl.runtime.retention import DAEMON_EVERY_S, DAEMON_FIRST_S, daemon_pass
from etl.runtime.triggers import SlotTrigger, jitter_for
from etl.store.spool import Spool, SpoolLock
from etl.store.state import Claim, ClaimReason, PollGate
from etl.textutil import first_line
from etl.vendors.types import Outcome, PollRecord

if TYPE_CHECKING:
    from etl.collect.poll import Collector

log = logging.getLogger("etl.schedule")

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
# After --stop-timeout: how long a poll already writing its result may still finish, and
# the least time the last spool replay gets, before the process leaves without them.
FINISH_GRACE_S = 1.0
# How long stop() waits for an alert evaluation or delivery in progress.
ALERTS_STOP_WAIT_S = 5.0
FINAL_REPLAY_MIN_S = 1.0


class Scheduler:
    """Runs polls, the spool replay and the nightly reports on an APScheduler BackgroundScheduler.

    Library use (tests, notebooks): ``poll_source`` runs one scheduled poll now (claim, poll,
    store or spool, pause bookkeeping, log line) without starting anything; `recovery`
    (etl.runtime.recovery) replays the spool, `nightly` (etl.runtime.nightly_job) builds
    the nights owed, `pauses` (etl.runtime.pauses) keeps the pause policy.

    `schema_ready=False` is spool-only mode (see Recovery). `nightly_at`, `nightly_retry_s`
    and `nightly_tick_s` are NightlyJob's `at`, `retry_s` and `tick_s`, for tests; `clock`
    (a DaemonClock: wall and monotonic) drives slots, nights and pauses; a wall clock step is
    logged once and every job realigned (`realign`): APScheduler would wait out a step back.

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
        clock: DaemonClock | None = None,
        report_engine: Engine | None = None,
        schema_ready: bool = True,
        nightly_at: clock_time = NIGHTLY_AT,
        nightly_retry_s: float = NIGHTLY_RETRY_S,
        nightly_tick_s: float = NIGHTLY_TICK_S,
        metrics_listen: str | None = None,
        db_step_timeout: float | None = None,
        retention_first_s: float = DAEMON_FIRST_S,
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
        self.clock: DaemonClock = clock or SystemClock()
        self.retention_first_s = retention_first_s
        self.report_engine = report_engine or engine
        self.gate = PollGate(engine)
        self.db = DatabaseSteps(DB_STEP_TIMEOUT_S if db_step_timeout is None else db_step_timeout)
        self._emit = EventLog(log)  # silent after the "stopped" line
        self._stopping = threading.Event()
        self._inflight = 0
        self._finishing = 0  # polls past their HTTP request, storing and logging
        self._abandoned = False  # stop() gave up waiting: late polls neither store nor log
        self._inflight_cv = threading.Condition()
        self.pauses = PausePolicy(engine, self.db, self.clock, (s.name for s in self.sources))
        self.recovery = Recovery(engine, self.spool, self.db, self._emit,
                                 schema_ready=schema_ready, on_ready=self._database_back,
                                 on_replayed=self._request_alerts)
        self.nightly = NightlyJob(
            config, self.report_engine, clock=self.clock, emit=self._emit,
            unready=lambda: self.recovery.why_not_ready("database not reachable since start-up"),
            stopping=self._stopping, cv=self._inflight_cv, at=nightly_at,
            retry_s=nightly_retry_s, tick_s=nightly_tick_s)
        self._spool_lock: SpoolLock | None = None
        self._scheduler: BackgroundScheduler | None = None
        self.clock_watch: ClockWatch | None = None
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
                                      ready=lambda: self.recovery.ready)

    def _database_back(self) -> None:
        self.nightly.database_back()

    def _request_alerts(self) -> None:
        if self.alerts is not None:
            self.alerts.request()

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
            now = self.clock()
            with self._claim(source, now) as claim:
                if not claim.granted:
                    event(log, logging.DEBUG, "skip", source=source.name, reason=claim.reason)
                    return None
                own_pause = self.pauses.own_pause(source.name, claim, now)
                if own_pause is not None:
                    event(log, logging.DEBUG, "skip", source=source.name,
                          reason=ClaimReason.PAUSED, paused_until=own_pause)
                    return None
                # A history source stores each range it reads itself (SPEC 10).
                result = (poll_history(self.engine, self.collector, source)
                          if source.vendor.history is not None else self.collector.poll(source))
                with self._finishing_poll() as go_on:
                    if not go_on:
                        return None  # stop() gave up on this poll; the process is leaving
                    stored = self.recovery.store(result)
                    pause = self.pauses.after_poll(source.name, result, stored is Stored.DB)
                    self._log_poll(source, result, stored, pause)
                    if self.metrics is not None:
                        self.metrics.count_poll(source.name, result.outcome)
                    if stored is Stored.DB:
                        self._request_alerts()
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
            yield Claim(ClaimReason.UNCOORDINATED)
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

    def _log_poll(self, source: SourceConfig, result: PollRecord, stored: Stored,
                  pause: Pause | None) -> None:
        fields: dict[str, Any] = {
            "source": source.name,
            "outcome": result.outcome,
            "latency_ms": round(result.latency_ms, 1) if result.latency_ms is not None else None,
            "http_status": result.http_status,
            "tries": result.tries,
            "stored": stored,
            "samples": None,
            "started_at": result.started_at,
        }
        if result.error:
            fields["error"] = result.error
        level = logging.INFO if result.outcome is Outcome.OK else logging.WARNING
        match stored:
            case Stored.DB:
                fields["samples"] = getattr(result, "samples_stored", None)
            case Stored.SPOOL:
                pass
            case Stored.LOST:
                level = logging.ERROR
            case _:
                assert_never(stored)
        self._emit(level, "poll", **fields)
        if pause is not None:
            self._emit(logging.WARNING, "pause", source=source.name, until=pause.until,
                       reason=pause.reason)

    # -- the daemon ----------------------------------------------------------------------------

    def start(self) -> None:
        """Replay what an earlier run spooled, then start the jobs in background threads.

        Raises SpoolInUseError if another daemon owns the spool folder, InputError if the
        metrics address cannot be listened on.
        """
        if self.metrics_listen:
            self._listen_metrics(self.metrics_listen)
        self._spool_lock = self.spool.lock()
        self.recovery.recover_partial()
        self.recovery.replay()
        sched = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(
                max_workers=min(len(self.sources), MAX_POLL_WORKERS) + 2,
                pool_kwargs={"thread_name_prefix": POLL_THREAD_PREFIX})},
        )
        now = self.clock()
        for src in self.sources:
            trigger = SlotTrigger(src.name, src.interval_seconds, jitter_for(src))
            # Poll right away unless the source's next slot is close anyway (spacing stays
            # at least half an interval across a restart); on the daemon's clock (realign).
            far = (trigger.next_slot_start(now) - now).total_seconds() > src.interval_seconds / 2
            sched.add_job(
                self.poll_source, trigger, args=[src], id=f"poll:{src.name}",
                name=f"poll {src.name}", coalesce=True, max_instances=1,
                misfire_grace_time=max(1, int(src.interval_seconds / 2)),
                next_run_time=now if far else trigger.get_next_fire_time(None, now))
        sched.add_job(
            self.recovery.replay, "interval", seconds=SPOOL_REPLAY_EVERY, id="spool-replay",
            coalesce=True, max_instances=1, misfire_grace_time=int(SPOOL_REPLAY_EVERY),
        )
        owed = self.nightly.attach(sched, now)
        # Compaction and retirement, and PostgreSQL's monthly partitions made ahead (SPEC 13).
        if self.config.retention.active or self.engine.dialect.name == "postgresql":
            sched.add_job(
                daemon_pass, "interval", args=[self.engine, self.config, self.clock],
                seconds=DAEMON_EVERY_S, id="retention", coalesce=True, max_instances=1,
                misfire_grace_time=None,
                next_run_time=now + timedelta(seconds=self.retention_first_s))
        self._scheduler = sched
        sched.start()
        self.clock_watch = ClockWatch(self.clock, self.realign, self._emit)
        self.clock_watch.start(self._stopping)
        if self.alerts is not None:
            self.alerts.start()  # its first pass also sends what a previous run left
        if self._metrics_server is not None:
            self._metrics_server.start()
        event(log, logging.INFO, "started", sources=",".join(s.name for s in self.sources),
              database=redact_url(str(self.engine.url)), spool=str(self.spool.dir),
              pending_spool=len(self.spool), database_ready=self.recovery.ready,
              alerts=len(self.config.alerts) or None,
              metrics=(f"http://{self.metrics_listen}/metrics" if self._metrics_server
                       else None))
        for night, missing in owed:
            event(log, logging.INFO, "reports-catch-up", day=night.isoformat(),
                  missing=",".join(p.name for p in missing))

    def realign(self, step_s: float, now: datetime) -> None:
        """After the wall clock stepped by `step_s` seconds (now `now`): see realign_jobs."""
        if self._scheduler is not None and not self._stopping.is_set():
            for job_id, error in realign_jobs(self._scheduler, step_s, now):
                self._emit(logging.DEBUG, "realign-failed", job=job_id, error=error)
            self.nightly.wake_now()  # builds what a forward step made due, re-arms the night

    def next_runs(self) -> dict[str, datetime]:
        """Each scheduled job's next run on the wall clock, by job id (`poll:NAME`, ...)."""
        return next_runs(self._scheduler)

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
        return self.recovery.ready and database_accepts(self.engine)

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
                lambda: self._inflight == 0 and self.nightly.busy == 0,
                timeout=self.stop_timeout,
            )
            left, reports_left = self._inflight, self.nightly.busy
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
        replayer = threading.Thread(target=self.recovery.final_replay, name="final-replay",
                                    daemon=True)
        replayer.start()
        budget = max(self.stop_timeout - (time.monotonic() - begun), FINAL_REPLAY_MIN_S)
        replayer.join(budget)
        if replayer.is_alive():
            self._emit(logging.ERROR, "spool-flush-timeout", waited_s=round(budget, 1))
        self.threads_left = not clean or replayer.is_alive()
        pending = len(self.spool)
        if not self.threads_left:
            self.collector.close()
        self._emit.last(logging.INFO, "stopped", pending_spool=pending,
                        abandoned_polls=left or None)
        if self._spool_lock is not None and not self.threads_left:
            self._spool_lock.release()
            self._spool_lock = None
        return clean and not self.threads_left

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
