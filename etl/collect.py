"""Poll vendor sources (HTTP only, in `Collector`) and store what came back (`store_poll`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from sqlalchemy import Engine, func, insert, select

from etl.config import Config, SourceConfig
from etl.errors import ConfigError, ParseError, SecretError
from etl.http import (
    PACERS,
    Clock,
    HttpFailure,
    PacerRegistry,
    Sleep,
    fetch_json,
    new_session,
    poll_deadline,
)
from etl.locks import pause_holds
from etl.models import CollectionAttempt, SourceState
from etl.redact import redact
from etl.sources import adapter
from etl.store import Observation, StoreResult, record_attempt, store_observations

log = logging.getLogger("etl.collect")

# Polls run in parallel, but a handful of threads is plenty: each poll mostly waits.
MAX_WORKERS = 8
# collect_once stores finished polls in batches: one transaction per batch (still one
# collection_attempts row per poll), after at most this many polls or this long a wait.
STORE_BATCH = 200
STORE_LINGER_S = 0.02
OUTCOMES = ("ok", "auth_error", "rate_limited", "http_error", "timeout", "connection_error",
            "invalid_response", "skipped")


@dataclass
class PollResult:
    """What one poll of one source gave; `error` is already redacted."""

    source: str
    outcome: str
    started_at: datetime
    finished_at: datetime
    http_status: int | None
    latency_ms: float | None
    tries: int
    error: str | None
    observation: Observation | None
    retry_after: float | None
    samples_stored: int = 0  # filled in by store_poll

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Collector:
    """Polls sources over HTTP: one requests Session per source, pacing per credential.

    `clock` and `sleep` drive deadlines, backoff and pacing (inject a fake pair in tests);
    `now` is the wall clock that stamps results and Nected observations.
    """

    def __init__(
        self,
        sources: Sequence[SourceConfig],
        *,
        pacers: PacerRegistry | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.pacers = pacers if pacers is not None else PACERS
        self._clock = clock
        self._sleep = sleep
        self._now = now
        self._lock = threading.Lock()
        self._sessions: dict[str, requests.Session] = {
            s.name: _settled_session(s.url) for s in sources
        }

    def _session(self, source: SourceConfig) -> requests.Session:
        session = self._sessions.get(source.name)
        if session is not None:
            return session
        with self._lock:
            if source.name not in self._sessions:
                self._sessions[source.name] = _settled_session(source.url)
            return self._sessions[source.name]

    def poll(self, source: SourceConfig) -> PollResult:
        """Fetch and parse one response; never touches the database, never raises."""
        started = self._now()
        vendor = adapter(source.kind)
        secret = ""
        try:
            secret = source.read_secret()
            pacer = self.pacers.get(source.kind, secret, vendor.rate_limit)
            fetched = fetch_json(
                self._session(source),
                source.url,
                vendor.auth_headers(secret),
                timeout=source.timeout_seconds,
                deadline=poll_deadline(self._clock, source.interval_seconds),
                pacer=pacer,
                clock=self._clock,
                sleep=self._sleep,
                label=source.name,
            )
        except SecretError as exc:
            return self._failed(source, started, "auth_error", str(exc), secret)
        except HttpFailure as exc:
            return self._failed(source, started, exc.outcome, str(exc), secret, exc.http_status,
                                exc.latency_ms, exc.tries, exc.retry_after)
        except Exception as exc:  # noqa: BLE001 - one broken poll must not stop the others
            log.debug("%s: unexpected error", source.name, exc_info=False)
            return self._failed(source, started, "connection_error",
                                f"unexpected error: {type(exc).__name__}: {exc}", secret)
        received = self._now()
        try:
            observation = vendor.parse_body(
                source.name, fetched.data, received_at=received, payload=fetched.text,
                origin="collect",
            )
        except ParseError as exc:
            return self._failed(source, started, "invalid_response", f"body refused: {exc}",
                                secret, fetched.status, fetched.latency_ms, fetched.tries)
        result = PollResult(
            source=source.name, outcome="ok", started_at=started, finished_at=received,
            http_status=fetched.status, latency_ms=fetched.latency_ms, tries=fetched.tries,
            error=None, observation=observation, retry_after=None,
        )
        if log.isEnabledFor(logging.INFO):
            log.info("%s: ok in %.0f ms (%d tries)", source.name, fetched.latency_ms,
                     fetched.tries)
        return result

    def _failed(
        self,
        source: SourceConfig,
        started: datetime,
        outcome: str,
        message: str,
        secret: str,
        http_status: int | None = None,
        latency_ms: float | None = None,
        tries: int = 0,
        retry_after: float | None = None,
    ) -> PollResult:
        error = redact(message, [secret] if secret else [])
        if tries > 1:
            error += f" (after {tries} tries)"
        log.warning("%s: %s: %s", source.name, outcome, error)
        return PollResult(
            source=source.name, outcome=outcome, started_at=started, finished_at=self._now(),
            http_status=http_status, latency_ms=latency_ms, tries=tries, error=error,
            observation=None, retry_after=retry_after,
        )

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _settled_session(url: str) -> requests.Session:
    """A session with the environment's proxy, CA bundle and netrc settings for `url` read once.

    With trust_env, requests scans the whole environment (and looks for ~/.netrc) on every
    request; with one secret variable per source that scan cost more than the request itself.
    The settings are the same ones requests would pick for `url`, read when the Collector starts.
    """
    session = new_session()
    if not session.trust_env:
        return session
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    if session.auth is None:
        session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    return session


def store_poll(engine: Engine, result: PollResult, *, origin: str = "collect") -> StoreResult:
    """Write the observation (if any) and the collection_attempts row in ONE transaction."""
    stored = StoreResult()
    with engine.begin() as conn:
        if result.observation is not None:
            obs = result.observation
            if obs.origin != origin:
                obs = obs._replace(origin=origin)
            stored = store_observations(conn, [obs])
        record_attempt(
            conn,
            source=result.source,
            started_at=result.started_at,
            finished_at=result.finished_at,
            outcome=result.outcome,
            http_status=result.http_status,
            latency_ms=result.latency_ms,
            tries=result.tries,
            samples_stored=stored.samples,
            error=result.error,
        )
    result.samples_stored = stored.samples
    _log_conflicts(stored)
    return stored


def store_polls(
    engine: Engine, results: Sequence[PollResult], *, origin: str = "collect"
) -> list[StoreResult]:
    """Like store_poll for each result, but all of them in ONE transaction (all or nothing).

    Each result still gets its own collection_attempts row and its own samples_stored.
    """
    if not results:
        return []
    stored: list[StoreResult] = []
    with engine.begin() as conn:
        for result in results:
            one = StoreResult()
            if result.observation is not None:
                obs = result.observation
                if obs.origin != origin:
                    obs = obs._replace(origin=origin)
                one = store_observations(conn, [obs])
            stored.append(one)
        conn.execute(
            insert(CollectionAttempt),
            [
                {
                    "source": r.source,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "outcome": r.outcome,
                    "http_status": r.http_status,
                    "latency_ms": r.latency_ms,
                    "tries": r.tries,
                    "samples_stored": one.samples,
                    "error": r.error,
                }
                for r, one in zip(results, stored, strict=True)
            ],
        )
    for result, one in zip(results, stored, strict=True):
        result.samples_stored = one.samples
        _log_conflicts(one)
    return stored


def _log_conflicts(stored: StoreResult) -> None:
    for conflict in stored.conflicts:
        log.warning("%s: %s at %s: stored value %g kept, %g from the vendor not stored",
                    conflict.source, conflict.metric, conflict.observed_at.isoformat(),
                    conflict.stored, conflict.offered)


def stored_pauses(
    engine: Engine, names: Sequence[str], now: datetime | None = None
) -> dict[str, tuple[datetime, str | None]]:
    """The sources among `names` that a stored pause keeps from being polled now.

    The daemon stores a pause in source_state after a 429/503 with Retry-After or an auth
    failure; whether it still holds is etl.locks.pause_holds, as for the daemon's poll gate.
    Returns name -> (paused_until, reason).
    """
    now = now or _utcnow()
    wanted = set(names)
    with engine.connect() as conn:
        rows = [
            r for r in conn.execute(
                select(SourceState.source, SourceState.paused_until, SourceState.pause_reason,
                       SourceState.updated_at).where(SourceState.paused_until > now)
            )
            if r.source in wanted
        ]
        if not rows:
            return {}
        last_ok = dict(conn.execute(  # type: ignore[arg-type]
            select(CollectionAttempt.source, func.max(CollectionAttempt.started_at))
            .where(CollectionAttempt.source.in_([r.source for r in rows]),
                   CollectionAttempt.outcome == "ok")
            .group_by(CollectionAttempt.source)
        ).all())
    return {
        r.source: (r.paused_until, r.pause_reason) for r in rows
        if pause_holds(r.paused_until, r.updated_at, last_ok.get(r.source), now)
    }


def skipped_poll(source: str, until: datetime, reason: str | None) -> PollResult:
    """The record of a poll not made because the source is paused until `until`."""
    now = _utcnow()
    stamp = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    error = f"paused until {stamp}" + (f" ({reason})" if reason else "") + ": not polled"
    return PollResult(
        source=source, outcome="skipped", started_at=now, finished_at=now, http_status=None,
        latency_ms=None, tries=0, error=error, observation=None, retry_after=None,
    )


def collect_once(
    engine: Engine,
    config: Config,
    names: Sequence[str] = (),
    *,
    collector: Collector | None = None,
    force: bool = False,
) -> list[PollResult]:
    """Poll the (named) sources concurrently with a bounded pool and store each result.

    Finished polls are stored in batches (store_polls: one transaction per batch, one
    collection_attempts row per poll) while the others are still polling. Missing secrets
    are refused up front (SecretError); one failing source never stops the others. A source
    under a stored pause (see `stored_pauses`) is not polled unless `force`: its result is
    recorded with outcome "skipped". Results come back in config order.
    """
    sources = config.select_sources(list(names))
    if not sources:
        raise ConfigError("no sources configured: add a [[sources]] table to the config")
    config.check_secrets(sources)
    results: dict[str, PollResult] = {}
    if not force:
        pauses = stored_pauses(engine, [s.name for s in sources])
        if pauses:
            skipped = [skipped_poll(name, until, reason)
                       for name, (until, reason) in pauses.items()]
            store_polls(engine, skipped)
            results.update((r.source, r) for r in skipped)
            for r in skipped:
                log.warning("%s: %s", r.source, r.error)
            sources = [s for s in sources if s.name not in pauses]
    if not sources:
        return [results[s.name] for s in config.sources if s.name in results]
    own = collector is None
    poller = collector if collector is not None else Collector(sources)
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(sources)),
                                thread_name_prefix="poll") as pool:
            pending: set[Future[PollResult]] = {pool.submit(poller.poll, s) for s in sources}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                # Linger briefly so that one transaction carries many polls.
                deadline = time.monotonic() + STORE_LINGER_S
                while pending and len(done) < STORE_BATCH:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    more, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
                    done |= more
                batch = [f.result() for f in done]
                store_polls(engine, batch)
                results.update((r.source, r) for r in batch)
    finally:
        if own:
            poller.close()
    return [results[s.name] for s in config.sources if s.name in results]
