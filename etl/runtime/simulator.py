"""A local simulated vendor: every registered kind's usage API, plus one vendor no kind knows.

Each kind says how the simulator answers for it (`VendorKind.simulated`: path, credential,
body, error bodies, rate limit); the simulator adds a per-project vendor
(`etl.runtime.simulated_apis.PROJECTS_API`) that a source reaches only through
`kind = "http_json"`. Traffic is a deterministic function of (time, seed) (etl.vendors.traffic),
and the same model generates history archives (`simulated_apis.generate_archive`), so live
polls of a simulator continue a generated history seamlessly. Faults are switchable.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, assert_never
from urllib.parse import parse_qs, quote, urlsplit

from etl.runtime.simulated_apis import simulated_apis
from etl.vendors import SimulatedApi


class Fault(StrEnum):
    """The faults `set_fault` switches on (see docs/collecting.md)."""

    RATE_LIMIT = "rate_limit"      # 429 with Retry-After
    UNAVAILABLE = "unavailable"    # 503 with Retry-After
    SERVER_ERROR = "server_error"  # 500
    UNAUTHORIZED = "unauthorized"  # 401 even for a good credential
    MALFORMED = "malformed"        # 200 with a truncated JSON body
    SLOW = "slow"                  # wait `delay` seconds before answering
    OVERSIZE = "oversize"          # 200 with a body larger than 1 MiB
    ERROR_CODE = "error_code"      # a 200 the kind must refuse (SimulatedApi.refusal)
    UNLIMITED = "unlimited"        # WireSocket only: an "unlimited" plan (limit -1/null/absent)
    TRICKLE = "trickle"            # 200 at once, then the body one byte every `delay` seconds


FAULTS = tuple(f.value for f in Fault)
# Internal: marks a response whose body the handler sends byte by byte (never sent).
TRICKLE_HEADER = "X-Simulator-Trickle"
# Not a fault of its own but a switch on top of any: `echo_credential` makes every error
# body (401, 429, 500, 503) quote the credential the request carried, as careless vendors
# do, so that tests can prove it never reaches our logs, messages or database.


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator saw (credentials are not kept, only whether they were good)."""

    at: float
    vendor: str
    status: int
    authorized: bool
    credential_in_query: bool


class _Fault:
    def __init__(self, name: Fault, vendor: str | None, times: int | None, retry_after: str | None,
                 delay: float) -> None:
        self.name = name
        self.vendor = vendor
        self.remaining = times
        self.retry_after = retry_after
        self.delay = delay


class SimulatedVendor:
    """Every simulated API (`simulated_apis()`) on one loopback port.

    Use as a context manager or start()/stop().

    Each API accepts the credentials of its `credential_list`: `tokens` or `api_keys`. Every
    credential may make at most its API's `rate_limit` requests per window (429 +
    Retry-After beyond that, always on); `rates` overrides that per vendor name. With
    `echo_credential` (also settable later) every error body quotes the credential.
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
        rates: Mapping[str, tuple[int, float]] | None = None,
        echo_credential: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.tokens = tuple(tokens)
        self.api_keys = tuple(api_keys)
        self.seed = seed
        self.clock = clock
        self.apis = simulated_apis()
        self.rates = {name: api.rate_limit for name, api in self.apis.items()} | dict(rates or {})
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
        """The first valid token (APIs whose credential_list is "tokens")."""
        return self.tokens[0]

    @property
    def api_key(self) -> str:
        """The first valid API key (APIs whose credential_list is "api_keys")."""
        return self.api_keys[0]

    def url(self, vendor: str) -> str:
        """The usage URL of simulated vendor `vendor` (a kind's name, or "projects")."""
        return self.base_url + self.apis[vendor].path

    # control and inspection

    def set_fault(
        self,
        fault: Fault | str | None,
        *,
        vendor: str | None = None,
        times: int | None = None,
        retry_after: str | None = "1",
        delay: float = 2.0,
    ) -> None:
        """Switch a fault on (None switches it off).

        `vendor` limits it to one simulated vendor (a kind's name, or "projects");
        `times` to the next N requests;
        `retry_after` is the header value sent with 429 and 503 (None: no header);
        `delay` is how long "slow" waits, and "trickle" between two bytes of the body.
        """
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (expected one of: {', '.join(FAULTS)})")
        with self._lock:
            self._fault = None if fault is None else _Fault(Fault(fault), vendor, times,
                                                            retry_after, delay)

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
            if fault.name is Fault.ERROR_CODE and self.apis[vendor].refusal is None:
                return None
            if fault.name is Fault.UNLIMITED and vendor != "wiresocket":
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
        vendor = next((name for name, api in self.apis.items() if api.path == parts.path), None)
        if vendor is None:
            return 404, {}, _json({"error": "not_found", "message": "No such endpoint"}), 0.0
        api = self.apis[vendor]
        credential, in_query = api.credential(headers, parse_qs(parts.query))
        accepted = self.tokens if api.credential_list == "tokens" else self.api_keys
        ok = bool(credential) and credential in accepted
        status, extra, body, delay = self._answer(vendor, credential, ok)
        self._record(RequestRecord(self.clock(), vendor, status, ok, in_query))
        return status, extra, body, delay

    def _answer(self, vendor: str, credential: str, ok: bool
                ) -> tuple[int, dict[str, str], bytes, float]:
        api = self.apis[vendor]
        echo = credential if self.echo_credential else None
        if not ok:
            return 401, {}, _error_body(api, 401, echo), 0.0
        wait = self._rate_check(vendor, credential)
        if wait is not None:
            return 429, {"Retry-After": str(math.ceil(wait))}, _error_body(api, 429, echo), 0.0
        fault = self._take_fault(vendor)
        now = datetime.fromtimestamp(self.clock(), UTC)
        if fault is None:
            return 200, {}, _json(api.body(now, self.seed)), 0.0
        match fault.name:
            case Fault.UNAUTHORIZED | Fault.RATE_LIMIT | Fault.UNAVAILABLE | Fault.SERVER_ERROR:
                status = _FAULT_STATUS[fault.name]
                retry = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                extra = retry if status in (429, 503) else {}
                return status, extra, _error_body(api, status, echo), 0.0
            case Fault.MALFORMED:
                return 200, {}, b'{"usage": {"connections": {"current": 8', 0.0
            case Fault.OVERSIZE:
                body = {"padding": "x" * (1024 * 1024 + 10), "code": "success"}
                return 200, {}, _json(body), 0.0
            case Fault.ERROR_CODE:
                return 200, {}, _json(api.refusal), 0.0
            case Fault.UNLIMITED:
                return 200, {}, _json(unlimited_plan(api.body(now, self.seed))), 0.0
            case Fault.TRICKLE:
                return 200, {TRICKLE_HEADER: "1"}, _json(api.body(now, self.seed)), fault.delay
            case Fault.SLOW:
                return 200, {}, _json(api.body(now, self.seed)), fault.delay
            case _:
                assert_never(fault.name)


_FAULT_STATUS = {Fault.UNAUTHORIZED: 401, Fault.RATE_LIMIT: 429, Fault.UNAVAILABLE: 503,
                 Fault.SERVER_ERROR: 500}


def unlimited_plan(body: dict[str, Any]) -> dict[str, Any]:
    """A WireSocket body as an "unlimited" plan sends it: the three ways of saying no limit.

    connections: limit -1 with a null percent and status; documents: limit null and no
    percent or status at all.
    """
    usage = body["usage"]
    usage["connections"].update(limit=-1, percent=None, status=None)
    usage["documents"] = {"current": usage["documents"]["current"], "limit": None}
    return body


def _error_body(api: SimulatedApi, status: int, echo: str | None = None) -> bytes:
    body = dict(api.errors[status])
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
        trickle = headers.pop(TRICKLE_HEADER, None) is not None
        if delay > 0 and not trickle and vendor._stopping.wait(delay):
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not trickle:
                self.wfile.write(body)
                return
            self.wfile.flush()
            for i in range(len(body)):  # each byte on its own, like a stalling vendor
                if vendor._stopping.wait(delay):
                    return
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
        except OSError:
            pass  # the client gave up (a timeout test); nothing to do

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # The request line may hold a ?token=: never print it.
        return
