"""Reading history sources (SPEC 10): which range a poll reads, and one request range page by page.

No database here: the runtime (etl.runtime.history) stores each range read in one
transaction and moves the source's read-up-to point `H`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from etl.collect.http import HttpFailure
from etl.collect.poll import Collector
from etl.config import SourceConfig
from etl.errors import ParseError
from etl.vendors.history import HistorySpec, with_params
from etl.vendors.parse_api import ParseContext
from etl.vendors.types import Observation, Origin, Outcome

ONE_US = timedelta(microseconds=1)


@dataclass
class RangeRead:
    """The pages of one request range, and how the requests went (for the attempt row)."""

    start: datetime
    end: datetime
    pages: list[Observation]
    tries: int = 0
    http_status: int | None = None
    latency_ms: float = 0.0


def history_of(source: SourceConfig) -> HistorySpec:
    """The source's HistorySpec (ValueError for a source that is not a history source)."""
    spec = source.vendor.history
    if spec is None:
        raise ValueError(f"{source.name} is not a history source")
    return spec


def poll_span(spec: HistorySpec, read_up_to: datetime | None, now: datetime
              ) -> tuple[datetime, datetime]:
    """[floor(H - lookback), ceil(now)) — the first time [floor(now - backfill), ceil(now))."""
    window = spec.window
    start = (window.backfill.before(now) if read_up_to is None
             else window.lookback.before(read_up_to))
    return window.align.floor(start), window.align.ceil(now)


def settled(spec: HistorySpec, end: datetime, now: datetime) -> datetime:
    """Where `H` may move after reading a range ending at `end`: never past floor(now)."""
    return min(end, spec.window.align.floor(now))


def read_range(collector: Collector, source: SourceConfig, start: datetime, end: datetime,
               deadline: float) -> RangeRead:
    """Every page of the request range [start, end), oldest page first.

    Each page is one Observation whose `window` is the range and whose observed_at is when
    it arrived (strictly later than the page before, so pages keep distinct keys). Raises
    HttpFailure (a request failed after its retries; more than `max_pages` pages is
    `invalid_response`), ParseError (a body that does not parse) or SecretError.
    """
    spec = history_of(source)
    url, params = spec.request(start, end)
    paginator = spec.pages.make() if spec.pages is not None else None
    found = RangeRead(start, end, [])
    while True:
        fetched = collector.fetch(source, with_params(url, params), deadline)
        found.tries += fetched.tries
        found.http_status = fetched.status
        found.latency_ms += fetched.latency_ms
        received = collector.now()
        if found.pages and received <= found.pages[-1].observed_at:
            received = found.pages[-1].observed_at + ONE_US
        try:
            obs = source.vendor.parse(fetched.data, ParseContext(
                source.name, received_at=received, payload=fetched.text, origin=Origin.COLLECT,
                window=(start, end), page=len(found.pages) + 1))
        except ParseError as exc:
            raise ParseError(f"page {len(found.pages) + 1}: {exc}") from None
        found.pages.append(obs._replace(observed_at=received, window=(start, end)))
        if paginator is None or spec.pages is None:
            return found
        if spec.pages.more is not None and spec.pages.more(fetched.data) is False:
            return found
        items = spec.buckets.each(fetched.data)
        following = paginator.next(fetched.data, len(items) if isinstance(items, list) else 0,
                                   url, params)
        if following is None:
            return found
        if len(found.pages) >= spec.pages.max_pages:
            raise HttpFailure(f"more than max_pages ({spec.pages.max_pages}) pages for the "
                              "range", Outcome.INVALID_RESPONSE, retriable=False)
        url, params = following
