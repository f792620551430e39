"""The one HTTP layer for every vendor: sessions, timeouts, retries, pacing, response checks.

Retries follow a urllib3 ``Retry`` policy (which statuses, how many tries, exponential
backoff with jitter, Retry-After in seconds or as an HTTP date), but the loop that applies
it lives here rather than inside urllib3: every try must first take a slot from the
credential's pacer, and no wait may run past the caller's deadline (the next poll).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from etl import __version__
from etl.collect.body import ACCEPTED_ENCODINGS, MAX_BODY_BYTES, Watchdog, WatchedAdapter, read_body
from etl.collect.failure import HttpFailure
from etl.collect.pacing import PACERS, PACING_MARGIN_SECONDS, Pacer, PacerRegistry
from etl.errors import ParseError
from etl.redact import redact
from etl.vendors.parsing import loads_json
from etl.vendors.types import Outcome

__all__ = [
    "PACERS", "PACING_MARGIN_SECONDS", "FetchResult", "HttpFailure", "Pacer", "PacerRegistry",
    "classify_exception", "default_retry", "fetch_json", "new_session", "parse_retry_after",
    "poll_deadline", "retry_after_sent", "validate_response",
]

log = logging.getLogger("etl.collect.http")

MAX_RETRIES = 3  # so at most 4 tries per poll
BACKOFF_FACTOR = 0.5
BACKOFF_JITTER = 0.5
# Share of a source's interval that one poll may spend, retries and waits included.
POLL_BUDGET_SHARE = 0.8
RETRIABLE_STATUSES = frozenset({429, *range(500, 600)})
# The longest Retry-After we honour (urllib3's own default cap): a vendor asking for more
# (a day, a date next month) is waited this long, and the message says both figures.
RETRY_AFTER_MAX_S = 6 * 3600.0
USER_AGENT = f"usage-etl/{__version__}"

Clock = Callable[[], float]
Sleep = Callable[[float], None]


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
    adapter = WatchedAdapter(max_retries=Retry(0, read=False), pool_connections=1,
                             pool_maxsize=2)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "application/json"
    # What etl.collect.body decodes itself (br or zstd would be decoded, uncapped, by urllib3).
    session.headers["Accept-Encoding"] = ACCEPTED_ENCODINGS
    return session


def validate_response(
    response: requests.Response | None = None,
    body: bytes | None = None,
    *,
    error: BaseException | None = None,
    retry: Retry | None = None,
    secrets: Iterable[str] = (),
) -> Any:
    """Return the JSON of a good response; otherwise raise HttpFailure, retriable or fatal.

    This is the one place that decides what a failure is:

    * connection error -> connection_error, timeout -> timeout (both retriable);
    * 401 / 403 -> auth_error, never retried;
    * 429 -> rate_limited, 5xx -> http_error (retriable, Retry-After honoured);
    * any other non-2xx (redirects included) -> http_error, fatal;
    * a body over MAX_BODY_BYTES, not UTF-8, not JSON, nested too deep or holding text no
      database can store (etl.vendors.parsing.loads_json) -> invalid_response, fatal.

    The start of an error body goes into the message, with `secrets` masked: vendors echo
    credentials back in error bodies.
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
                Outcome.INVALID_RESPONSE, retriable=False, http_status=status,
            )
        try:
            return loads_json(body)
        except ParseError as exc:
            raise HttpFailure(f"response body: {exc}", Outcome.INVALID_RESPONSE,
                              retriable=False, http_status=status) from None
    detail = _snippet(body, secrets)
    if status in (401, 403):
        raise HttpFailure(f"HTTP {status}: credential refused{detail}", Outcome.AUTH_ERROR,
                          retriable=False, http_status=status)
    sent = retry_after_sent(response.headers.get("Retry-After"), retry)
    retry_after = None if sent is None else min(sent, RETRY_AFTER_MAX_S)
    retriable = retry.is_retry("GET", status, retry_after is not None)
    outcome = Outcome.RATE_LIMITED if status == 429 else Outcome.HTTP_ERROR
    if 300 <= status < 400:
        raise HttpFailure(f"HTTP {status}: unexpected redirect (not followed)", outcome,
                          retriable=False, http_status=status)
    capped = (f" (Retry-After {sent:g} s from the vendor, capped at {retry_after:g} s)"
              if sent is not None and retry_after is not None and sent > retry_after else "")
    failure = HttpFailure(f"HTTP {status}{detail}{capped}", outcome, retriable=retriable,
                          http_status=status, retry_after=retry_after)
    failure.retry_after_sent = sent
    raise failure


def classify_exception(exc: BaseException) -> HttpFailure:
    """Sort a requests exception into timeout / connection_error (both retriable)."""
    if isinstance(exc, HttpFailure):
        return exc
    cause = exc if isinstance(exc, Exception) else None
    if isinstance(exc, requests.Timeout):
        what = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
        return HttpFailure(f"{what} timed out", Outcome.TIMEOUT, retriable=True, cause=cause)
    if isinstance(exc, requests.ConnectionError):
        return HttpFailure(f"connection failed: {_root_reason(exc)}", Outcome.CONNECTION_ERROR,
                           retriable=True, cause=cause)
    return HttpFailure(f"request failed: {type(exc).__name__}: {_root_reason(exc)}",
                       Outcome.CONNECTION_ERROR, retriable=False, cause=cause)


def parse_retry_after(value: str | None, retry: Retry | None = None) -> float | None:
    """Seconds to wait for a Retry-After header (seconds or HTTP date), capped.

    At most RETRY_AFTER_MAX_S; None if absent, bad or <= 0.
    """
    sent = retry_after_sent(value, retry)
    return None if sent is None else min(sent, RETRY_AFTER_MAX_S)


def retry_after_sent(value: str | None, retry: Retry | None = None) -> float | None:
    """Seconds a Retry-After header asks for, as the vendor sent it (no cap).

    None if absent, bad or <= 0.
    """
    if value is None:
        return None
    policy = (retry or default_retry()).new()
    # urllib3 >= 2.6 caps while parsing; the cap is ours to apply, and to report.
    policy.retry_after_max = math.inf  # type: ignore[assignment,unused-ignore]
    try:
        seconds = policy.parse_retry_after(value)
    except InvalidHeader:
        return None
    return float(seconds) if seconds > 0 else None


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
    secrets: Iterable[str] = (),
) -> FetchResult:
    """GET `url` and return its JSON, retrying per policy until `deadline` (on `clock`).

    Raises HttpFailure with the last try's outcome when the tries, or the time, run out.
    Every message raised or logged has the credentials masked: `secrets` and the values of
    `headers` (what is actually sent, so a credential rotated since the config was read is
    masked too).
    """
    retry = retry or default_retry()
    masked = _sent_secrets(headers, secrets)
    tries = 0
    failure: HttpFailure | None = None
    while True:
        _await_slot(pacer, deadline - clock(), failure, label, sleep)
        # One try, body included, ends by `timeout` and by the poll's deadline, whichever
        # comes first: the socket timeouts bound each connect and each read, the watchdog in
        # _read_capped the whole body (a vendor trickling bytes restarts the read timeout).
        try_ends = min(clock() + timeout, deadline)
        per_try = max(0.05, try_ends - clock())
        tries += 1
        started = time.perf_counter()
        response: requests.Response | None = None
        try:
            with Watchdog(per_try) as dog:
                try:
                    response = _get(session, url, headers, per_try, dog)
                    body = read_body(response, dog)
                finally:
                    if response is not None:
                        response.close()
            data = validate_response(response, body, retry=retry, secrets=masked)
            latency = (time.perf_counter() - started) * 1000
            text = body.decode("utf-8")
            return FetchResult(response.status_code, data, text, tries, latency)
        except HttpFailure as exc:
            failure = exc
        except requests.RequestException as exc:
            failure = classify_exception(exc)
        _mask(failure, masked)
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


def _get(session: requests.Session, url: str, headers: Mapping[str, str], per_try: float,
         dog: Watchdog) -> requests.Response:
    """Send the GET and read its status and headers, all before `dog` cuts the try."""
    try:
        response = session.get(url, headers=dict(headers), timeout=(per_try, per_try),
                               stream=True, allow_redirects=False)
    except requests.RequestException:
        if not dog.cut.is_set():
            raise
    else:
        if not dog.cut.is_set():
            return response
        # Cut off mid-headers, http.client takes the end of the stream for their end.
        response.close()
    # The vendor was still sending its status line and headers (or TLS) when time was up.
    raise HttpFailure(f"timed out: no complete answer (status and headers) in {per_try:.1f} s",
                      Outcome.TIMEOUT, retriable=True)


def _await_slot(pacer: Pacer | None, remaining: float, failure: HttpFailure | None,
                label: str, sleep: Sleep) -> None:
    """Before a try: wait for the credential's request slot, all within `remaining` seconds.

    Raises the last failure (or a timeout) when no time is left, and _no_slot's failure
    when the pacer has no slot before the deadline: no try may start past it.
    """
    if remaining <= 0:
        raise failure or HttpFailure("no time left before the next poll", Outcome.TIMEOUT,
                                     retriable=False)
    if pacer is None:
        return
    wait = pacer.reserve(max(0.0, remaining - 0.05))
    if wait is None:
        raise _no_slot(pacer, failure)
    if wait > 0:
        log.info("%s: pacing, waiting %.1f s for a request slot", label, wait)
        sleep(wait)


def poll_deadline(clock: Clock, interval_seconds: float) -> float:
    """When a poll must be over: before the source's next poll is due."""
    return clock() + interval_seconds * POLL_BUDGET_SHARE


def _increment(
    retry: Retry, url: str, failure: HttpFailure, response: requests.Response | None
) -> Retry:
    if failure.outcome is Outcome.TIMEOUT:
        err: Exception = (
            ConnectTimeoutError("connect timed out") if "connect" in str(failure)
            else ReadTimeoutError(None, url, "read timed out")  # type: ignore[arg-type]
        )
        return retry.increment("GET", url, error=err)
    if failure.outcome is Outcome.CONNECTION_ERROR:
        return retry.increment("GET", url, error=NewConnectionError(None, str(failure)))  # type: ignore[arg-type]
    raw = response.raw if response is not None else None
    return retry.increment("GET", url, response=raw)


def _snippet(body: bytes | None, secrets: Iterable[str] = ()) -> str:
    if not body:
        return ""
    # Masked before it is cut: a credential straddling the cut would leave its start behind.
    text = redact(body[:64 * 1024].decode("utf-8", "replace"), secrets)
    text = text[:300].strip().replace("\n", " ").replace("\r", " ")
    return f": {text[:200]}" if text else ""


def _sent_secrets(headers: Mapping[str, str], secrets: Iterable[str]) -> tuple[str, ...]:
    """The credentials in `headers` (whole values and the part after an auth scheme)."""
    found = [s for s in secrets if s]
    for value in headers.values():
        found.append(value)
        scheme, _, credential = value.partition(" ")
        if credential and scheme.isalpha():
            found.append(credential.strip())
    return tuple(found)


def _mask(failure: HttpFailure, secrets: tuple[str, ...]) -> None:
    # Also for exceptions of requests: their text may quote a header or a URL.
    text = str(failure)
    clean = redact(text, secrets)
    if clean != text:
        failure.args = (clean,)


def _no_slot(pacer: Pacer, last: HttpFailure | None) -> HttpFailure:
    """The failure for a try that found no request slot before the deadline.

    After earlier tries the poll keeps what they saw (outcome, HTTP status, tries,
    Retry-After) and says why it stopped; before any try nothing was sent.
    """
    limit = (f"this credential may make at most {pacer.limit} requests per "
             f"{pacer.period:g} s")
    if last is None:
        return HttpFailure(f"not sent: {limit} and no slot is free before the next poll",
                           Outcome.RATE_LIMITED, retriable=False)
    failure = HttpFailure(
        f"{last}, then no request slot before the next poll ({limit})", last.outcome,
        retriable=False, http_status=last.http_status, retry_after=last.retry_after,
        cause=last.cause,
    )
    failure.tries = last.tries
    failure.retry_after_sent = last.retry_after_sent
    failure.latency_ms = last.latency_ms
    return failure


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
