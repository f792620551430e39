"""Poll vendor sources (HTTP only, in `Collector`) and store what came back (`store_poll`)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from sqlalchemy import Engine

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
from etl.redact import redact
from etl.sources import adapter
from etl.store import Observation, StoreResult, record_attempt, store_observations

log = logging.getLogger("etl.collect")

# Polls run in parallel, but a handful of threads is plenty: each poll mostly waits.
MAX_WORKERS = 8
OUTCOMES = ("ok", "auth_error", "rate_limited", "http_error", "timeout", "connection_error",
            "invalid_response")


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
        self._sessions: dict[str, requests.Session] = {s.name: new_session() for s in sources}

    def _session(self, name: str) -> requests.Session:
        with self._lock:
            if name not in self._sessions:
                self._sessions[name] = new_session()
            return self._sessions[name]

    def poll(self, source: SourceConfig) -> PollResult:
        """Fetch and parse one response; never touches the database, never raises."""
        started = self._now()
        vendor = adapter(source.kind)
        secret = ""
        try:
            secret = source.read_secret()
            pacer = self.pacers.get(source.kind, secret, vendor.rate_limit)
            fetched = fetch_json(
                self._session(source.name),
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
        log.info("%s: ok in %.0f ms (%d tries)", source.name, fetched.latency_ms, fetched.tries)
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


def store_poll(engine: Engine, result: PollResult, *, origin: str = "collect") -> StoreResult:
    """Write the observation (if any) and the collection_attempts row in ONE transaction."""
    stored = StoreResult()
    with engine.begin() as conn:
        if result.observation is not None:
            obs = result.observation
            if obs.origin != origin:
                obs = dataclasses.replace(obs, origin=origin)
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
    for conflict in stored.conflicts:
        log.warning("%s: %s at %s: stored value %g kept, %g from the vendor not stored",
                    conflict.source, conflict.metric, conflict.observed_at.isoformat(),
                    conflict.stored, conflict.offered)
    return stored


def collect_once(
    engine: Engine,
    config: Config,
    names: Sequence[str] = (),
    *,
    collector: Collector | None = None,
) -> list[PollResult]:
    """Poll the (named) sources concurrently with a bounded pool and store each result.

    Missing secrets are refused up front (SecretError); one failing source never stops the
    others. Results come back in config order.
    """
    sources = config.select_sources(list(names))
    if not sources:
        raise ConfigError("no sources configured: add a [[sources]] table to the config")
    config.check_secrets(sources)
    own = collector is None
    poller = collector if collector is not None else Collector(sources)
    results: dict[str, PollResult] = {}
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(sources)),
                                thread_name_prefix="poll") as pool:
            futures = {pool.submit(poller.poll, src): src for src in sources}
            # Stored from this thread, one at a time, as polls finish.
            for future in as_completed(futures):
                result = future.result()
                store_poll(engine, result)
                results[result.source] = result
    finally:
        if own:
            poller.close()
    return [results[s.name] for s in sources]
