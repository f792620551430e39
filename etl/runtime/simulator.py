"""A local simulated vendor speaking the WireSocket and Nected usage APIs, with switchable faults.

Traffic is a deterministic function of (time, seed): daily and weekly cycles, afternoons
that cross the plan limit now and then, and an invocation counter that grows through the
month and resets at the start of the next (UTC). The same model generates history archives
(`generate_archive`), so live polls of a simulator continue a generated history seamlessly.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from etl.config import SourceConfig
from etl.timefmt import utc_z

WIRESOCKET_PATH = "/usage"
NECTED_PATH = "/dev/usage"
# The faults `set_fault` understands (see docs/collecting.md).
FAULTS = (
    "rate_limit",    # 429 with Retry-After
    "unavailable",   # 503 with Retry-After
    "server_error",  # 500
    "unauthorized",  # 401 even for a good credential
    "malformed",     # 200 with a truncated JSON body
    "slow",          # wait `delay` seconds before answering
    "oversize",      # 200 with a body larger than 1 MiB
    "error_code",    # Nected only: 200 whose code is not "success"
)
# Not a fault of its own but a switch on top of any: `echo_credential` makes every error
# body (401, 429, 500, 503) quote the credential the request carried, as careless vendors
# do, so that tests can prove it never reaches our logs, messages or database.
CONNECTIONS_LIMIT = 100
DOCUMENTS_LIMIT = 20


# --- the traffic model --------------------------------------------------------------------


def _unit(seed: int, *parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) for (seed, parts)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _cycle(at: datetime) -> float:
    """Busy-ness in [0, 1]: a daily wave peaking 15:00 UTC, quieter at weekends."""
    hour = at.hour + at.minute / 60 + at.second / 3600
    daily = 0.5 - 0.5 * math.cos(2 * math.pi * (hour - 3) / 24)
    weekly = 0.55 if at.weekday() >= 5 else 1.0
    return daily * weekly


def _status(percent: float) -> str:
    if percent >= 90:
        return "critical"
    if percent >= 75:
        return "warning"
    return "healthy"


def _gauge(seed: int, name: str, at: datetime, base: float, amplitude: float,
           spike: float, noise: float) -> int:
    bucket = int(at.timestamp() // 300)
    value = base + amplitude * _cycle(at) + (_unit(seed, name, bucket) - 0.5) * 2 * noise
    # About one day in four has a busy afternoon that pushes past the plan limit.
    day = at.date().toordinal()
    if _unit(seed, name, "spike", day) < 0.25 and 13 <= at.hour < 17:
        value += spike
    return max(0, round(value))


def wiresocket_body(at: datetime, seed: int = 0) -> dict[str, Any]:
    """The documented WireSocket usage body for instant `at` (aware)."""
    at = at.astimezone(UTC)
    connections = _gauge(seed, "connections", at, 12, 72, 30, 6)
    documents = _gauge(seed, "documents", at, 2, 13, 7, 2)
    tenant = uuid.UUID(bytes=hashlib.blake2b(repr((seed, "tenant")).encode(), digest_size=16).digest(),
                       version=4)
    # Not a UUID on purpose (like the vendor's own example): identifiers are opaque.
    app = f"770k{int(_unit(seed, 'app') * 16**4):04x}-f29b-41d4-b716-{seed % 16**12:012x}"

    def metric(current: int, limit: int) -> dict[str, Any]:
        percent = round(current / limit * 100, 1)
        return {"current": current, "limit": limit, "percent": percent,
                "status": _status(percent)}

    return {
        "tenantId": str(tenant),
        "appId": app,
        "usage": {
            "connections": metric(connections, CONNECTIONS_LIMIT),
            "documents": metric(documents, DOCUMENTS_LIMIT),
        },
        "timestamp": utc_z(at, "milliseconds"),
    }


def _hour_rate(seed: int, hour_start: datetime) -> float:
    """Invocations per hour during the hour starting at `hour_start`."""
    bucket = int(hour_start.timestamp() // 3600)
    return 50 + 190 * _cycle(hour_start + timedelta(minutes=30)) + 40 * _unit(seed, "inv", bucket)


@lru_cache(maxsize=32)
def _month_cumulative(seed: int, year: int, month: int) -> tuple[float, ...]:
    """Invocations counted at the start of each hour of a UTC month (index 0 = 0)."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    hours = int((end - start).total_seconds() // 3600)
    total = 0.0
    cumulative = [0.0]
    for h in range(hours):
        total += _hour_rate(seed, start + timedelta(hours=h))
        cumulative.append(total)
    return tuple(cumulative)


def nected_invocations(at: datetime, seed: int = 0) -> int:
    """The cumulative invocation count at `at`: grows all month, resets at the month start."""
    at = at.astimezone(UTC)
    cumulative = _month_cumulative(seed, at.year, at.month)
    month_start = datetime(at.year, at.month, 1, tzinfo=UTC)
    elapsed = (at - month_start).total_seconds() / 3600
    hour = int(elapsed)
    rate = _hour_rate(seed, month_start + timedelta(hours=hour))
    return int(cumulative[hour] + rate * (elapsed - hour))


def nected_body(at: datetime, seed: int = 0) -> dict[str, Any]:
    """The documented Nected usage body for instant `at`."""
    return {"data": {"invocations": nected_invocations(at, seed)}, "code": "success",
            "message": "Success."}




def generate_archive(
    sources: Sequence[SourceConfig | tuple[str, str]],
    start: datetime,
    end: datetime,
    step_seconds: float | None = None,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Archive lines (SPEC 4) for every source from `start` (included) to `end` (excluded).

    `sources` are SourceConfigs or (name, kind) pairs. Each source is sampled every
    `step_seconds`, or its own interval_seconds when not given (300 s for a bare pair), at
    multiples of the step since the epoch, so regenerating gives the same keys. Lines come
    in time order. The values are those a SimulatedVendor with the same seed serves.
    """
    streams: list[Iterable[tuple[float, int, dict[str, Any]]]] = []
    for order, src in enumerate(sources):
        if isinstance(src, SourceConfig):
            name, kind, interval = src.name, src.kind, src.interval_seconds
        else:
            name, kind = src
            interval = 300.0
        step = float(step_seconds or interval)
        streams.append(_source_lines(name, kind, start, end, step, seed, order))
    for _ts, _order, line in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        yield line


def _source_lines(name: str, kind: str, start: datetime, end: datetime, step: float,
                  seed: int, order: int) -> Iterator[tuple[float, int, dict[str, Any]]]:
    if kind not in ("wiresocket", "nected"):
        raise ValueError(f"unknown source kind {kind!r}")
    ts = math.ceil(start.timestamp() / step) * step
    stop = end.timestamp()
    while ts < stop:
        at = datetime.fromtimestamp(ts, UTC)
        if kind == "wiresocket":
            line: dict[str, Any] = {"source": name, "body": wiresocket_body(at, seed)}
        else:
            line = {"source": name, "observed_at": utc_z(at), "body": nected_body(at, seed)}
        yield ts, order, line
        ts += step


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator saw (credentials are not kept, only whether they were good)."""

    at: float
    vendor: str
    status: int
    authorized: bool
    credential_in_query: bool


class _Fault:
    def __init__(self, name: str, vendor: str | None, times: int | None, retry_after: str | None,
                 delay: float) -> None:
        self.name = name
        self.vendor = vendor
        self.remaining = times
        self.retry_after = retry_after
        self.delay = delay


class SimulatedVendor:
    """Both vendor APIs on one loopback port; use as a context manager or start()/stop().

    WireSocket answers at {base_url}/usage (Bearer token or ?token=), Nected at
    {base_url}/dev/usage (Nected-API-Key header). Every credential may make at most
    `ws_rate` requests per window on WireSocket (429 + Retry-After beyond that, always on).
    With `echo_credential` (also settable later) every error body quotes the credential.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        tokens: Iterable[str] = ("sim-token",),
        api_keys: Iterable[str] = ("sim-key",),
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        ws_rate: tuple[int, float] = (12, 60.0),
        nected_rate: tuple[int, float] = (60, 60.0),
        echo_credential: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.tokens = tuple(tokens)
        self.api_keys = tuple(api_keys)
        self.seed = seed
        self.clock = clock
        self.rates = {"wiresocket": ws_rate, "nected": nected_rate}
        self.echo_credential = echo_credential
        self.records: list[RequestRecord] = []
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._fault: _Fault | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> SimulatedVendor:
        """Start serving on a background thread (port 0 picks a free port); returns self."""
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.vendor = self  # type: ignore[attr-defined]
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="simulated-vendor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; requests in flight are let go."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SimulatedVendor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to configure as the sources' `base_url`."""
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        """The first valid WireSocket token."""
        return self.tokens[0]

    @property
    def api_key(self) -> str:
        """The first valid Nected API key."""
        return self.api_keys[0]

    # control and inspection

    def set_fault(
        self,
        fault: str | None,
        *,
        vendor: str | None = None,
        times: int | None = None,
        retry_after: str | None = "1",
        delay: float = 2.0,
    ) -> None:
        """Switch a fault on (None switches it off).

        `vendor` limits it to "wiresocket" or "nected"; `times` to the next N requests;
        `retry_after` is the header value sent with 429 and 503 (None: no header);
        `delay` is how long "slow" waits.
        """
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (expected one of: {', '.join(FAULTS)})")
        with self._lock:
            self._fault = None if fault is None else _Fault(fault, vendor, times, retry_after,
                                                            delay)

    def request_count(self, vendor: str | None = None, status: int | None = None) -> int:
        """How many requests were recorded, optionally of one vendor and/or HTTP status."""
        with self._lock:
            return sum(
                1 for r in self.records
                if (vendor is None or r.vendor == vendor) and (status is None or r.status == status)
            )

    def reset_counts(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.records.clear()

    # request handling (called from handler threads)

    def _take_fault(self, vendor: str) -> _Fault | None:
        with self._lock:
            fault = self._fault
            if fault is None or (fault.vendor is not None and fault.vendor != vendor):
                return None
            if fault.name == "error_code" and vendor != "nected":
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = None
            return fault

    def _rate_check(self, vendor: str, credential: str) -> float | None:
        """None if allowed, else seconds until the next request would be."""
        limit, period = self.rates[vendor]
        key = (vendor, hashlib.sha256(credential.encode()).hexdigest())
        with self._lock:
            now = self.clock()
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - period:
                window.popleft()
            window.append(now)
            if len(window) > limit:
                return max(1.0, window[-limit - 1] + period - now)
            return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)

    def respond(self, path: str, headers: Any) -> tuple[int, dict[str, str], bytes, float]:
        """(status, headers, body, delay before answering) for one GET."""
        parts = urlsplit(path)
        if parts.path == WIRESOCKET_PATH:
            vendor = "wiresocket"
            auth = headers.get("Authorization", "")
            query_token = parse_qs(parts.query).get("token", [""])[0]
            credential = auth[7:].strip() if auth.startswith("Bearer ") else query_token
            ok = credential in self.tokens
        elif parts.path == NECTED_PATH:
            vendor = "nected"
            query_token = ""
            credential = headers.get("Nected-API-Key", "")
            ok = credential in self.api_keys
        else:
            return 404, {}, _json({"error": "not_found", "message": "No such endpoint"}), 0.0
        status, extra, body, delay = self._answer(vendor, credential, ok)
        self._record(RequestRecord(self.clock(), vendor, status, ok, bool(query_token)))
        return status, extra, body, delay

    def _answer(self, vendor: str, credential: str, ok: bool
                ) -> tuple[int, dict[str, str], bytes, float]:
        echo = credential if self.echo_credential else None
        if not ok:
            return 401, {}, _error_body(vendor, 401, echo), 0.0
        wait = self._rate_check(vendor, credential)
        if wait is not None:
            return 429, {"Retry-After": str(math.ceil(wait))}, _error_body(vendor, 429, echo), 0.0
        fault = self._take_fault(vendor)
        name = fault.name if fault else None
        retry_hdr = {"Retry-After": fault.retry_after} if fault and fault.retry_after else {}
        if name == "unauthorized":
            return 401, {}, _error_body(vendor, 401, echo), 0.0
        if name == "rate_limit":
            return 429, retry_hdr, _error_body(vendor, 429, echo), 0.0
        if name == "unavailable":
            return 503, retry_hdr, _error_body(vendor, 503, echo), 0.0
        if name == "server_error":
            return 500, {}, _error_body(vendor, 500, echo), 0.0
        if name == "malformed":
            return 200, {}, b'{"usage": {"connections": {"current": 8', 0.0
        if name == "oversize":
            return 200, {}, _json({"padding": "x" * (1024 * 1024 + 10), "code": "success"}), 0.0
        if name == "error_code":
            return 200, {}, _json({"data": None, "code": "error",
                                   "message": "Something went wrong."}), 0.0
        now = datetime.fromtimestamp(self.clock(), UTC)
        body = wiresocket_body(now, self.seed) if vendor == "wiresocket" else nected_body(
            now, self.seed)
        return 200, {}, _json(body), fault.delay if name == "slow" and fault else 0.0


_ERRORS = {
    "wiresocket": {
        401: {"error": "unauthorized", "message": "JWT is missing or invalid"},
        429: {"error": "rate_limited", "message": "This endpoint allows 12 requests per minute"},
        500: {"error": "internal", "message": "Internal error"},
        503: {"error": "unavailable", "message": "Node degraded or overloaded"},
    },
    "nected": {
        401: {"code": "UNAUTHORIZED", "message": "Missing/invalid API key"},
        429: {"code": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded"},
        500: {"code": "INTERNAL_SERVER_ERROR", "message": "Unexpected system error"},
        503: {"code": "SERVICE_UNAVAILABLE", "message": "Service unavailable"},
    },
}


def _error_body(vendor: str, status: int, echo: str | None = None) -> bytes:
    body = dict(_ERRORS[vendor][status])
    if echo is None:
        return _json(body)
    # Early in the body, where the start of it that clients log would show it, and in every
    # encoding careless vendors use: PHP-style JSON ("/" as "\/", below), HTML references
    # (hex, decimal and named, mixed), URL encoding.
    body = {"credential": echo, "html": _html_references(echo),
            "url": quote(echo, safe=""), **body,
            "detail": f"request with credential {echo} refused"}
    return _json(body).replace(b"/", b"\\/")


def _html_references(text: str) -> str:
    """The `text` with each character outside [A-Za-z0-9] as an HTML reference.

    In turn hexadecimal (&#x2F;), decimal (&#43;) and named where HTML has a name (&equals;).
    """
    names = {"/": "&sol;", "+": "&plus;", "=": "&equals;", "_": "&lowbar;",
             ".": "&period;", "&": "&amp;"}
    out = []
    for i, c in enumerate(text):
        if c.isascii() and c.isalnum():
            out.append(c)
        elif i % 3 == 0:
            out.append(f"&#x{ord(c):X};")
        elif i % 3 == 1:
            out.append(f"&#{ord(c)};")
        else:
            out.append(names.get(c, f"&#x{ord(c):x};"))
    return "".join(out)


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "SimulatedVendor/1.0"

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        vendor: SimulatedVendor = self.server.vendor  # type: ignore[attr-defined]
        status, headers, body, delay = vendor.respond(self.path, self.headers)
        if delay > 0 and vendor._stopping.wait(delay):
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout test); nothing to do

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The request line may hold a ?token=: never print it.
        return
