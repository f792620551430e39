"""One poll of one source over HTTP: fetch, check, parse into a PollRecord; no database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import urlsplit

import requests

from etl.collect.http import (
    PACERS,
    Clock,
    FetchResult,
    HttpFailure,
    PacerRegistry,
    Sleep,
    fetch_json,
    new_session,
    poll_deadline,
)
from etl.config import SourceConfig
from etl.errors import ParseError, SecretError
from etl.redact import redact
from etl.timefmt import utc_z, utcnow
from etl.vendors.parse_api import ParseContext
from etl.vendors.parsing import FAR_FROM_CLOCK
from etl.vendors.types import POLL_OUTCOME, Origin, Outcome, PollRecord

log = logging.getLogger("etl.collect")
# A record that says how one poll ended carries `extra=POLL_OUTCOME` (etl.vendors.types).
# `collect` and `backfill` print each poll's outcome in their own summary, so they drop these
# records (`outcomes_in_summary`): a failure was printed twice, once as a log line and once
# in the summary. The daemon keeps this logger's lines below ERROR out of its log
# (etl.runtime.logs): its own `poll` line tells each poll's outcome.
# The loggers that tell a poll's outcome: the collector's, and the writer's (a response the
# database refused).
_OUTCOME_LOGGERS = ("etl.collect", "etl.store")


def _not_an_outcome(record: logging.LogRecord) -> bool:
    return not any(getattr(record, key, False) for key in POLL_OUTCOME)


@contextmanager
def outcomes_in_summary() -> Iterator[None]:
    """While inside, the collector logs no poll's outcome: the caller prints each one once."""
    loggers = [logging.getLogger(name) for name in _OUTCOME_LOGGERS]
    for logger in loggers:
        logger.addFilter(_not_an_outcome)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_not_an_outcome)


class Collector:
    """Polls sources over HTTP: one requests Session per source, pacing per credential.

    `clock` and `sleep` drive deadlines, backoff and pacing (inject a fake pair in tests);
    `now` is the wall clock that stamps results, and observations whose body has no time.
    """

    def __init__(
        self,
        sources: Sequence[SourceConfig],
        *,
        pacers: PacerRegistry | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        now: Callable[[], datetime] = utcnow,
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

    def now(self) -> datetime:
        """The wall clock that stamps results."""
        return self._now()

    def deadline(self, source: SourceConfig) -> float:
        """When a poll of `source` starting now must be over, on this collector's clock."""
        return poll_deadline(self._clock, source.interval_seconds)

    def past(self, deadline: float) -> bool:
        """Whether `deadline` (from `deadline()`) has passed."""
        return self._clock() >= deadline

    def fetch(self, source: SourceConfig, url: str, deadline: float) -> FetchResult:
        """GET `url` for `source` with its credential, pacing, retries and `deadline`.

        One page of a history source (SPEC 10: every page is one request for pacing,
        retries and Retry-After). Raises HttpFailure, or SecretError for a missing secret.
        """
        secret = source.read_secret()
        pacer = self.pacers.get(source.kind, secret or _host(source.url),
                                source.vendor.rate_limit)
        return fetch_json(self._session(source), url, source.vendor.auth_headers(secret),
                          timeout=source.timeout_seconds, deadline=deadline, pacer=pacer,
                          clock=self._clock, sleep=self._sleep, label=source.name,
                          secrets=[secret] if secret else ())

    def poll(self, source: SourceConfig) -> PollRecord:
        """Fetch and parse one response; never touches the database, never raises."""
        started = self._now()
        vendor = source.vendor
        secret = ""
        try:
            secret = source.read_secret()
            # A source without a credential is paced by its URL's host instead.
            pacer = self.pacers.get(source.kind, secret or _host(source.url), vendor.rate_limit)
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
            return self._failed(source, started, Outcome.AUTH_ERROR, str(exc), secret)
        except HttpFailure as exc:
            return self._failed(source, started, exc.outcome, str(exc), secret, exc.http_status,
                                exc.latency_ms, exc.tries, exc.retry_after,
                                exc.retry_after_sent)
        except Exception as exc:  # noqa: BLE001 - one broken poll must not stop the others
            log.debug("%s: unexpected error", source.name, exc_info=False)
            return self._failed(source, started, Outcome.CONNECTION_ERROR,
                                f"unexpected error: {type(exc).__name__}: {exc}", secret)
        received = self._now()
        try:
            observation = vendor.parse(fetched.data, ParseContext(
                source.name, received_at=received, payload=fetched.text, origin=Origin.COLLECT))
        except ParseError as exc:
            return self._failed(source, started, Outcome.INVALID_RESPONSE, f"body refused: {exc}",
                                secret, fetched.status, fetched.latency_ms, fetched.tries)
        notes = [observation.refused_reason()]
        if abs(observation.observed_at - received) > FAR_FROM_CLOCK:
            # SPEC 4: a zero time (0001-01-01T00:00:00Z) or a wrong clock; the reading is kept.
            notes.append(f"the vendor's time {utc_z(observation.observed_at)} is more than a "
                         f"day from the collector's clock: stored at {utc_z(received)}")
            observation = observation._replace(observed_at=received)
        note = "; ".join(n for n in notes if n)
        result = PollRecord(
            source=source.name, outcome=Outcome.OK, started_at=started, finished_at=received,
            http_status=fetched.status, latency_ms=fetched.latency_ms, tries=fetched.tries,
            error=redact(note, [secret] if secret else []) if note else None,
            observation=observation, retry_after=None,
        )
        if result.error is not None:
            log.warning("%s: ok, but %s", source.name, result.error, extra=POLL_OUTCOME)
        elif log.isEnabledFor(logging.INFO):
            log.info("%s: ok in %.0f ms (%d tries)", source.name, fetched.latency_ms,
                     fetched.tries)
        return result

    def _failed(
        self,
        source: SourceConfig,
        started: datetime,
        outcome: Outcome,
        message: str,
        secret: str,
        http_status: int | None = None,
        latency_ms: float | None = None,
        tries: int = 0,
        retry_after: float | None = None,
        retry_after_sent: float | None = None,
    ) -> PollRecord:
        error = redact(message, [secret] if secret else [])
        if tries > 1:
            error += f" (after {tries} tries)"
        log.warning("%s: %s: %s", source.name, outcome, error, extra=POLL_OUTCOME)
        return PollRecord(
            source=source.name, outcome=outcome, started_at=started, finished_at=self._now(),
            http_status=http_status, latency_ms=latency_ms, tries=tries, error=error,
            observation=None, retry_after=retry_after, retry_after_sent=retry_after_sent,
        )

    def close(self) -> None:
        """Close every source's HTTP session."""
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _host(url: str) -> str:
    return urlsplit(url).netloc


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
