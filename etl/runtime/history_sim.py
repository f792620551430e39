"""Simulated usage-history APIs (SPEC 10) in their vendors' shapes, with a truth to check against.

One loopback server answers OpenAI usage, Anthropic usage report, Twilio daily usage
records, GitHub billing usage, Datadog hourly usage and Stripe meter event summaries, each
as its documentation shows: how times are sent (Unix seconds, RFC 3339, dates, `YYYY-MM-DDThh`,
year/month/day), inclusive or exclusive ends, bucket layout, paging style, string numbers
(Twilio), a last page that still carries a cursor (Anthropic), a 400 for times not aligned
to the bucket width (Stripe). Usage is a deterministic function of (vendor, key, bucket
start); `revise()` changes the recent buckets, as vendors do for hours or days afterwards.
`truth()` is what a reader should end up with.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
Query = Mapping[str, str]


class BadRequestError(Exception):
    """The request is one the vendor answers with 400 (the message is the vendor's)."""


@dataclass(frozen=True)
class Shape:
    """One vendor's history endpoint: path, bucket width, keys, page size, how to read and write."""

    name: str
    path: str
    width: timedelta
    keys: tuple[str, ...]
    page_size: int
    # (query) -> [start, end) asked for, raising BadRequestError as the vendor would.
    span: Callable[[Query], tuple[datetime, datetime]]
    # (buckets of this page: [(start, {key: value})], query, page index, more pages?) -> body
    body: Callable[[list[tuple[datetime, dict[str, float]]], Query, int, bool], Any]
    # The query parameter carrying the page cursor, and how a cursor maps to a page index.
    cursor: str
    auth: str = "bearer"  # bearer | basic | x-api-key | datadog


def _unix(q: Query, key: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(q[key]), UTC)
    except (KeyError, ValueError):
        raise BadRequestError(f"{key}: required, Unix seconds") from None


def _aligned(at: datetime, width: timedelta, what: str) -> datetime:
    if (at - datetime(1970, 1, 1, tzinfo=UTC)) % width:
        raise BadRequestError(f"{what} must be aligned with the value_grouping_window")
    return at


def _rfc(q: Query, key: str) -> datetime:
    try:
        return datetime.fromisoformat(q[key].replace("Z", "+00:00")).astimezone(UTC)
    except (KeyError, ValueError):
        raise BadRequestError(f"{key}: required, RFC 3339") from None


def _openai(buckets: list[tuple[datetime, dict[str, float]]], q: Query, page: int,
            more: bool) -> Any:
    return {"object": "page", "has_more": more, "next_page": f"page_{page + 1}" if more else None,
            "data": [{"object": "bucket", "start_time": int(s.timestamp()),
                      "end_time": int((s + DAY).timestamp()),
                      "results": [{"object": "organization.usage.completions.result",
                                   "model": k, "output_tokens": int(v), "input_tokens": 0,
                                   "num_model_requests": 1} for k, v in vals.items()]}
                     for s, vals in buckets]}


def _anthropic(buckets: list[tuple[datetime, dict[str, float]]], q: Query, page: int,
               more: bool) -> Any:
    # The last page still carries a cursor: only has_more says it is the last.
    return {"has_more": more, "next_page": f"cursor-{page + 1}",
            "data": [{"starting_at": s.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "ending_at": (s + HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "results": [{"model": k, "output_tokens": int(v),
                                   "uncached_input_tokens": 0} for k, v in vals.items()]}
                     for s, vals in buckets]}


def _twilio(buckets: list[tuple[datetime, dict[str, float]]], q: Query, page: int,
            more: bool) -> Any:
    records = [{"category": k, "start_date": s.strftime("%Y-%m-%d"),
                "end_date": s.strftime("%Y-%m-%d"), "count": str(int(v)), "usage": str(int(v)),
                "usage_unit": "messages", "price": f"{v * 0.0079:.4f}", "price_unit": "usd"}
               for s, vals in buckets for k, v in vals.items()]
    nxt = None
    if more:
        nxt = (f"/2010-04-01/Accounts/AC0/Usage/Records/Daily.json?"
               f"{urlencode({**q, 'Page': page + 1})}")
    return {"usage_records": records, "page": page, "next_page_uri": nxt,
            "first_page_uri": "/2010-04-01/Accounts/AC0/Usage/Records/Daily.json"}


def _github(buckets: list[tuple[datetime, dict[str, float]]], q: Query, page: int,
            more: bool) -> Any:
    return {"usageItems": [{"date": s.strftime("%Y-%m-%dT%H:%M:%SZ"), "product": "Actions",
                            "sku": k, "quantity": v, "unitType": "minutes",
                            "pricePerUnit": 0.008, "grossAmount": round(v * 0.008, 4),
                            "discountAmount": 0, "netAmount": round(v * 0.008, 4),
                            "organizationName": "acme"} for s, vals in buckets
                           for k, v in vals.items()]}


def _datadog(buckets: list[tuple[datetime, dict[str, float]]], q: Query, page: int,
             more: bool) -> Any:
    return {"data": [{"id": f"rec{s:%Y%m%d%H}", "type": "usage_timeseries", "attributes": {
                "timestamp": s.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "product_family": "infra_hosts",
                "org_name": "acme", "public_id": "abc",
                "measurements": [{"usage_type": k, "value": int(v)} for k, v in vals.items()]}}
                     for s, vals in buckets],
            "meta": {"pagination": {"next_record_id": f"rec-{page + 1}" if more else None}}}


def _stripe(buckets: list[tuple[datetime, dict[str, float]]], q: Query, page: int,
            more: bool) -> Any:
    return {"object": "list", "has_more": more, "url": "/v1/billing/meters/mtr_1/event_summaries",
            "data": [{"id": f"mtrusg_{page}_{i}", "object": "billing.meter_event_summary",
                      "aggregated_value": v, "start_time": int(s.timestamp()),
                      "end_time": int((s + HOUR).timestamp()), "meter": "mtr_1"}
                     for i, (s, vals) in enumerate(buckets) for v in vals.values()]}


def _twilio_span(q: Query) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(q["StartDate"], "%Y-%m-%d").replace(tzinfo=UTC)
        end = datetime.strptime(q["EndDate"], "%Y-%m-%d").replace(tzinfo=UTC)
    except (KeyError, ValueError):
        raise BadRequestError("StartDate and EndDate: required, YYYY-MM-DD") from None
    return start, end + DAY  # EndDate is inclusive


def _github_span(q: Query) -> tuple[datetime, datetime]:
    try:
        day = datetime(int(q["year"]), int(q["month"]), int(q["day"]), tzinfo=UTC)
    except (KeyError, ValueError):
        raise BadRequestError("year, month and day: required") from None
    return day, day + DAY


def _datadog_span(q: Query) -> tuple[datetime, datetime]:
    try:
        start, end = (datetime.strptime(q[f"filter[timestamp][{k}]"], "%Y-%m-%dT%H")
                      .replace(tzinfo=UTC) for k in ("start", "end"))
    except (KeyError, ValueError):
        raise BadRequestError("filter[timestamp][start]/[end]: YYYY-MM-DDThh") from None
    return start, end


SHAPES = {s.name: s for s in (
    Shape("openai", "/v1/organization/usage/completions", DAY, ("gpt-4o", "o1-mini"), 3,
          lambda q: (_unix(q, "start_time"), _unix(q, "end_time")), _openai, "page"),
    Shape("anthropic", "/v1/organizations/usage_report/messages", HOUR,
          ("claude-3-5-sonnet-20241022", "claude-3-haiku-20240307"), 24,
          lambda q: (_rfc(q, "starting_at"), _rfc(q, "ending_at")), _anthropic, "page",
          auth="x-api-key"),
    Shape("twilio", "/2010-04-01/Accounts/AC0/Usage/Records/Daily.json", DAY, ("sms", "calls"),
          4, _twilio_span, _twilio, "Page", auth="basic"),
    Shape("github", "/organizations/acme/settings/billing/usage", DAY,
          ("actions_linux", "actions_macos"), 1000, _github_span, _github, ""),
    Shape("datadog", "/api/v2/usage/hourly_usage", HOUR, ("agent_host_count",), 10,
          _datadog_span, _datadog, "page[next_record_id]", auth="datadog"),
    Shape("stripe", "/v1/billing/meters/mtr_1/event_summaries", HOUR, ("api_calls",), 10,
          lambda q: (_aligned(_unix(q, "start_time"), HOUR, "start_time"),
                     _aligned(_unix(q, "end_time"), HOUR, "end_time")), _stripe,
          "starting_after"),
)}
CREDENTIALS = {"bearer": "sim-token", "x-api-key": "sim-key", "basic": "AC0:sim-secret",
               "datadog": "sim-api-key/sim-app-key"}


def base_value(vendor: str, key: str, start: datetime) -> float:
    """The usage of one bucket before any revision: a deterministic function of its start."""
    hours = int(start.timestamp()) // 3600
    return float((hours * 7 + len(key) * 13 + len(vendor)) % 97 + 1)


class HistorySimulator:
    """The six history APIs on one loopback port; `now` is the vendor's clock (injectable)."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 port: int = 0) -> None:
        self.now = now
        self._revised: dict[tuple[str, str, datetime], float] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, int]] = []  # (vendor, status)
        handler = type("Handler", (_Handler,), {"sim": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        # A client's idle keep-alive connection must not hold the simulator's stop.
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL (`http://127.0.0.1:PORT`)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HistorySimulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def value(self, vendor: str, key: str, start: datetime) -> float:
        """A bucket's current value (its latest revision)."""
        with self._lock:
            found = self._revised.get((vendor, key, start))
        return base_value(vendor, key, start) if found is None else found

    def revise(self, vendor: str, since: timedelta, add: float = 5) -> int:
        """Add `add` to every bucket of `vendor` that started within `since` before now."""
        shape = SHAPES[vendor]
        now = self.now()
        at = self.floor(shape, now - since)
        count = 0
        while at < now:
            for key in shape.keys:
                value = self.value(vendor, key, at) + add
                with self._lock:
                    self._revised[(vendor, key, at)] = value
                count += 1
            at += shape.width
        return count

    @staticmethod
    def floor(shape: Shape, at: datetime) -> datetime:
        """The start of the bucket holding `at`."""
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return epoch + (at - epoch) // shape.width * shape.width

    def buckets(self, shape: Shape, start: datetime, end: datetime
                ) -> list[tuple[datetime, dict[str, float]]]:
        """Every bucket of [start, end) that has started by now, with its values."""
        found, at, now = [], self.floor(shape, start), self.now()
        while at < end and at < now:
            found.append((at, {k: self.value(shape.name, k, at) for k in shape.keys}))
            at += shape.width
        return found

    def truth(self, vendor: str, key: str, start: datetime, end: datetime) -> float:
        """Σ of the current values of the buckets of [start, end) (whole buckets)."""
        return sum(vals[key] for _, vals in self.buckets(SHAPES[vendor], start, end))


class _Handler(BaseHTTPRequestHandler):
    sim: HistorySimulator

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the base's name
        parts = urlsplit(self.path)
        shape = next((s for s in SHAPES.values() if s.path == parts.path), None)
        if shape is None:
            return self._send(404, {"error": "not found"}, "?")
        if not self._authorized(shape):
            return self._send(401, {"error": "unauthorized"}, shape.name)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            start, end = shape.span(query)
            if end <= start:
                raise BadRequestError("the end must be after the start")
        except BadRequestError as exc:
            return self._send(400, {"error": {"message": str(exc)}}, shape.name)
        buckets = self.sim.buckets(shape, start, end)
        page = _page_index(shape, query)
        chunk = buckets[page * shape.page_size:(page + 1) * shape.page_size]
        more = (page + 1) * shape.page_size < len(buckets)
        return self._send(200, shape.body(chunk, query, page, more), shape.name)

    def _authorized(self, shape: Shape) -> bool:
        headers = self.headers
        if shape.auth == "bearer":
            return headers.get("Authorization") == f"Bearer {CREDENTIALS['bearer']}"
        if shape.auth == "x-api-key":
            return headers.get("x-api-key") == CREDENTIALS["x-api-key"]
        if shape.auth == "basic":
            sent = base64.b64encode(CREDENTIALS["basic"].encode()).decode()
            return headers.get("Authorization") == f"Basic {sent}"
        api, app = CREDENTIALS["datadog"].split("/")
        return headers.get("DD-API-KEY") == api and headers.get("DD-APPLICATION-KEY") == app

    def _send(self, status: int, body: Any, vendor: str) -> None:
        data = json.dumps(body).encode()
        self.sim.requests.append((vendor, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _page_index(shape: Shape, query: Query) -> int:
    cursor = query.get(shape.cursor) if shape.cursor else None
    if not cursor:
        return 0
    if shape.name == "stripe":  # starting_after = the last id of the page before
        return int(cursor.split("_")[1]) + 1
    if shape.name == "twilio":
        return int(cursor)
    return int(cursor.rsplit("_", 1)[-1].rsplit("-", 1)[-1])
