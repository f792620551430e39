"""The one HTTP layer for every vendor: sessions, timeouts, retries, pacing, response checks.

Retries follow a urllib3 ``Retry`` policy (which statuses, how many tries, exponential
backoff with jitter, Retry-After in seconds or as an HTTP date), but the loop that applies
it lives here rather than inside urllib3: every try must first take a slot from the
credential's pacer, and no wait may run past the caller's deadline (the next poll).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from etl import __version__
from etl.errors import CollectError

log = logging.getLogger("etl.http")

MAX_BODY_BYTES = 1024 * 1024
MAX_RETRIES = 3  # so at most 4 tries per poll
BACKOFF_FACTOR = 0.5
BACKOFF_JITTER = 0.5
# Share of a source's interval that one poll may spend, retries and waits included.
POLL_BUDGET_SHARE = 0.8
# Extra seconds added to a vendor's rate window: our clock and the vendor's differ a little.
PACING_MARGIN_SECONDS = 1.0
RETRIABLE_STATUSES = frozenset({429, *range(500, 600)})
USER_AGENT = f"usage-etl/{__version__}"

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class HttpFailure(CollectError):
    """A failed try, sorted by `validate_response` / `classify_exception` into an outcome."""

    def __init__(
        self,
        message: str,
        outcome: str,
        *,
        retriable: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
        cause: Exception | None = None,
    ) -> None:
        super().__init__(message, outcome, http_status)
        self.retriable = retriable
        self.retry_after = retry_after
        self.cause = cause
        self.tries = 0
        self.latency_ms: float | None = None


@dataclass(frozen=True)
class FetchResult:
    """A successful response: its JSON, its text, and how we got it."""

    status: int
    data: Any
    text: str
    tries: int
    latency_ms: float


def default_retry() -> Retry:
    """The retry policy: connection errors, timeouts, 429 and 5xx, with backoff and jitter."""
    return Retry(
        total=MAX_RETRIES,
        connect=MAX_RETRIES,
        read=MAX_RETRIES,
        status=MAX_RETRIES,
        other=0,
        redirect=0,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=RETRIABLE_STATUSES,
        backoff_factor=BACKOFF_FACTOR,
        backoff_jitter=BACKOFF_JITTER,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def new_session() -> requests.Session:
    """A Session whose adapters never retry by themselves (`fetch_json` does, paced)."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=Retry(0, read=False), pool_connections=1, pool_maxsize=2)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "application/json"
    return session


class Pacer:
    """A sliding window: at most `limit` sends in any `period` seconds, shared by threads."""

    def __init__(self, limit: int, period: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sent: deque[float] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def reserve(self, max_wait: float) -> float | None:
        """Book the earliest send slot; return seconds to wait for it, or None if > max_wait."""
        with self._lock:
            now = self._clock()
            at = max(now, self._sent[-1]) if self._sent else now
            if len(self._sent) == self.limit:
                at = max(at, self._sent[0] + self.period)
            wait = at - now
            if wait > max_wait:
                return None
            self._sent.append(at)
            return wait

    def sent_times(self) -> list[float]:
        with self._lock:
            return list(self._sent)


class PacerRegistry:
    """One Pacer per (vendor kind, credential), so sources sharing a credential share a budget."""

    def __init__(self, clock: Clock = time.monotonic, margin: float = PACING_MARGIN_SECONDS) -> None:
        self.clock = clock
        self.margin = margin
        self._pacers: dict[tuple[str, str], Pacer] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, secret: str, rate: tuple[int, float]) -> Pacer:
        # Keyed by a digest, so the registry never holds the credential itself.
        key = (kind, hashlib.sha256(secret.encode()).hexdigest())
        with self._lock:
            pacer = self._pacers.get(key)
            if pacer is None:
                pacer = Pacer(rate[0], rate[1] + self.margin, self.clock)
                self._pacers[key] = pacer
            return pacer


# The process-wide registry: every Collector in the process shares it unless given another.
PACERS = PacerRegistry()


def validate_response(
    response: requests.Response | None = None,
    body: bytes | None = None,
    *,
    error: BaseException | None = None,
    retry: Retry | None = None,
) -> Any:
    """Return the JSON of a good response; otherwise raise HttpFailure, retriable or fatal.

    This is the one place that decides what a failure is:

    * connection error -> connection_error, timeout -> timeout (both retriable);
    * 401 / 403 -> auth_error, never retried;
    * 429 -> rate_limited, 5xx -> http_error (retriable, Retry-After honoured);
    * any other non-2xx (redirects included) -> http_error, fatal;
    * a body over MAX_BODY_BYTES, not UTF-8 or not JSON -> invalid_response, fatal.
    """
    retry = retry or default_retry()
    if error is not None:
        raise classify_exception(error)
    assert response is not None
    status = response.status_code
    if 200 <= status < 300:
        if body is None or len(body) > MAX_BODY_BYTES:
            raise HttpFailure(
                f"response body larger than {MAX_BODY_BYTES} bytes",
                "invalid_response", retriable=False, http_status=status,
            )
        try:
            return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise HttpFailure("response body is not UTF-8 text", "invalid_response",
                              retriable=False, http_status=status) from None
        except json.JSONDecodeError as exc:
            raise HttpFailure(f"response body is not JSON ({exc.msg} at char {exc.pos})",
                              "invalid_response", retriable=False, http_status=status) from None
        except ValueError as exc:
            raise HttpFailure(f"response body is not JSON ({exc})", "invalid_response",
                              retriable=False, http_status=status) from None
    detail = _snippet(body)
    if status in (401, 403):
        raise HttpFailure(f"HTTP {status}: credential refused{detail}", "auth_error",
                          retriable=False, http_status=status)
    retry_after = parse_retry_after(response.headers.get("Retry-After"), retry)
    retriable = retry.is_retry("GET", status, retry_after is not None)
    outcome = "rate_limited" if status == 429 else "http_error"
    if 300 <= status < 400:
        raise HttpFailure(f"HTTP {status}: unexpected redirect (not followed)", outcome,
                          retriable=False, http_status=status)
    raise HttpFailure(f"HTTP {status}{detail}", outcome, retriable=retriable,
                      http_status=status, retry_after=retry_after)


def classify_exception(exc: BaseException) -> HttpFailure:
    """Sort a requests exception into timeout / connection_error (both retriable)."""
    if isinstance(exc, HttpFailure):
        return exc
    cause = exc if isinstance(exc, Exception) else None
    if isinstance(exc, requests.Timeout):
        what = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
        return HttpFailure(f"{what} timed out", "timeout", retriable=True, cause=cause)
    if isinstance(exc, requests.ConnectionError):
        return HttpFailure(f"connection failed: {_root_reason(exc)}", "connection_error",
                           retriable=True, cause=cause)
    return HttpFailure(f"request failed: {type(exc).__name__}: {_root_reason(exc)}",
                       "connection_error", retriable=False, cause=cause)


def parse_retry_after(value: str | None, retry: Retry | None = None) -> float | None:
    """Seconds from a Retry-After header (seconds or HTTP date); None if absent, bad or <= 0."""
    if value is None:
        return None
    try:
        seconds = (retry or default_retry()).parse_retry_after(value)
    except InvalidHeader:
        return None
    return seconds if seconds > 0 else None


def fetch_json(
    session: requests.Session,
    url: str,
    headers: Mapping[str, str],
    *,
    timeout: float,
    deadline: float,
    pacer: Pacer | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    retry: Retry | None = None,
    label: str = "",
) -> FetchResult:
    """GET `url` and return its JSON, retrying per policy until `deadline` (on `clock`).

    Raises HttpFailure with the last try's outcome when the tries, or the time, run out.
    """
    retry = retry or default_retry()
    tries = 0
    while True:
        remaining = deadline - clock()
        if pacer is not None:
            wait = pacer.reserve(max(0.0, remaining - 0.05))
            if wait is None:
                raise HttpFailure(
                    f"not sent: this credential may make at most {pacer.limit} requests per "
                    f"{pacer.period:g} s and no slot is free before the next poll",
                    "rate_limited", retriable=False,
                )
            if wait > 0:
                log.info("%s: pacing, waiting %.1f s for a request slot", label, wait)
                sleep(wait)
        per_try = max(0.05, min(timeout, deadline - clock()))
        tries += 1
        started = time.perf_counter()
        response: requests.Response | None = None
        try:
            try:
                response = session.get(
                    url, headers=dict(headers), timeout=(per_try, per_try),
                    stream=True, allow_redirects=False,
                )
                body = _read_capped(response)
            finally:
                if response is not None:
                    response.close()
            data = validate_response(response, body, retry=retry)
            latency = (time.perf_counter() - started) * 1000
            text = body.decode("utf-8")
            return FetchResult(response.status_code, data, text, tries, latency)
        except HttpFailure as exc:
            failure = exc
        except requests.RequestException as exc:
            failure = classify_exception(exc)
        failure.tries = tries
        failure.latency_ms = (time.perf_counter() - started) * 1000
        if not failure.retriable:
            raise failure
        try:
            retry = _increment(retry, url, failure, response)
        except MaxRetryError:
            raise failure from None
        delay = failure.retry_after
        if delay is None:
            delay = retry.get_backoff_time() or random.uniform(0, BACKOFF_JITTER)
        if clock() + delay >= deadline:
            raise failure
        log.info("%s: %s, retry %d in %.1f s", label, failure, tries, delay)
        sleep(delay)


def poll_deadline(clock: Clock, interval_seconds: float) -> float:
    """When a poll must be over: before the source's next poll is due."""
    return clock() + interval_seconds * POLL_BUDGET_SHARE


def _increment(
    retry: Retry, url: str, failure: HttpFailure, response: requests.Response | None
) -> Retry:
    if failure.outcome == "timeout":
        err: Exception = (
            ConnectTimeoutError("connect timed out") if "connect" in str(failure)
            else ReadTimeoutError(None, url, "read timed out")  # type: ignore[arg-type]
        )
        return retry.increment("GET", url, error=err)
    if failure.outcome == "connection_error":
        return retry.increment("GET", url, error=NewConnectionError(None, str(failure)))  # type: ignore[arg-type]
    raw = response.raw if response is not None else None
    return retry.increment("GET", url, response=raw)


def _read_capped(response: requests.Response) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HttpFailure(
            f"response body of {declared} bytes is larger than {MAX_BODY_BYTES}",
            "invalid_response", retriable=False, http_status=response.status_code,
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpFailure(
                f"response body larger than {MAX_BODY_BYTES} bytes",
                "invalid_response", retriable=False, http_status=response.status_code,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _snippet(body: bytes | None) -> str:
    if not body:
        return ""
    text = body[:300].decode("utf-8", "replace").strip().replace("\n", " ")
    return f": {text[:200]}" if text else ""


def _root_reason(exc: BaseException) -> str:
    # requests nests urllib3's reason several levels deep; the innermost line is the useful one.
    seen = exc
    while True:
        nxt = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen or not isinstance(nxt, BaseException):
            break
        seen = nxt
    text = str(seen).strip().splitlines()[0] if str(seen).strip() else type(seen).__name__
    return text[:200]
