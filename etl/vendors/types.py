"""Domain types every side shares: samples, observations, poll records and their vocabularies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class MetricType(StrEnum):
    """How a metric's samples are read (SPEC 5, 10): a level, a running total, or a bucket's use."""

    GAUGE = "gauge"
    COUNTER = "counter"
    # A quantity used over [bucket start, bucket end) (SPEC 10): history sources only.
    INTERVAL = "interval"


# The `extra` of a log record that says how one poll ended (failed, skipped, ok with a note,
# refused by the database, kept in the spool). `collect` and `backfill` print each poll's
# outcome in their own summary and drop these records while they run
# (etl.collect.poll.outcomes_in_summary). Here, not in etl.collect, because the store tells
# outcomes too and never loads the collect side.
POLL_OUTCOME: dict[str, object] = {"poll_outcome": True}


class Outcome(StrEnum):
    """How one poll of one source ended; stored in `collection_attempts.outcome`."""

    OK = "ok"
    AUTH_ERROR = "auth_error"
    RATE_LIMITED = "rate_limited"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    INVALID_RESPONSE = "invalid_response"
    SKIPPED = "skipped"


class Origin(StrEnum):
    """How an observation reached the database; stored in `snapshots.origin`."""

    COLLECT = "collect"
    IMPORT = "import"
    SPOOL = "spool"


# The longest series metric name the database keeps (series.metric, the alert tables'
# metric), `NAME:KEY` included (SPEC 7, amended 2026-12-06; migration 0004).
MAX_METRIC_LEN = 200
# Refused items named in a poll's or an import line's reason; the rest are counted.
REFUSED_SHOWN = 5


# A history sample's bucket (SPEC 10): (start, end); (None, None) for an instant.
Bucket = tuple[datetime | None, datetime | None]


class SampleValue(NamedTuple):
    """One metric's value in a vendor response (`limit` None: the plan has no limit)."""

    metric: str
    value: float
    limit: float | None = None
    status: str | None = None
    # Set by kinds whose metric types depend on the source (http_json); None: the kind's own.
    metric_type: MetricType | None = None
    # History sources (SPEC 10): the bucket [start, end) the value covers; None: an instant.
    bucket_start: datetime | None = None
    bucket_end: datetime | None = None


# A NamedTuple made from the tuple of all its fields, in order, skipping its `__new__` (a
# Python function that fills in defaults: about half of what building one costs, and a kind
# builds two or three per archive line). Only where every field is given: tests check that
# what is built so has all of them.
new_tuple = tuple.__new__


class Observation(NamedTuple):
    """One parsed vendor response: the raw body plus the samples read from it.

    A NamedTuple rather than a dataclass: an import builds millions of them, and the parse
    worker process sends them back pickled (a tuple pickles about six times faster).
    """

    source: str
    kind: str
    observed_at: datetime
    payload: str
    samples: tuple[SampleValue, ...]
    received_at: datetime | None = None
    origin: str = Origin.COLLECT
    # Items of the response left out, each with its reason (SPEC 7: a poll is still `ok`).
    refused: tuple[str, ...] = ()
    # History sources (SPEC 10): the request range [start, end) this page answered.
    window: tuple[datetime, datetime] | None = None

    def refused_reason(self) -> str | None:
        """The refused items as one line, the first few named; None when none was refused."""
        if not self.refused:
            return None
        shown = "; ".join(self.refused[:REFUSED_SHOWN])
        more = len(self.refused) - REFUSED_SHOWN
        tail = f"; and {more} more" if more > 0 else ""
        return f"items refused: {shown}{tail}"


@dataclass
class PollRecord:
    """What one poll of one source gave: the attempt, and its observation when it succeeded.

    The one record of a poll: the collector makes it, the writer stores it, the spool keeps
    it on disk while the database is away. `error` is already redacted.
    """

    source: str
    outcome: Outcome
    started_at: datetime
    finished_at: datetime
    http_status: int | None
    latency_ms: float | None
    tries: int
    error: str | None
    observation: Observation | None
    retry_after: float | None = None  # seconds to wait, as capped by etl.collect.http
    samples_stored: int = 0  # filled in by the writer
    retry_after_sent: float | None = None  # what the vendor's Retry-After asked for
    # History sources (SPEC 10): a request range read whose store the database refused, kept
    # (and spooled) to be stored later as a poll stores it: its pages (each with its window,
    # for coverage), and the read-up-to point `H` moves to with them.
    pages: tuple[Observation, ...] = ()
    read_up_to: datetime | None = None

    @property
    def ok(self) -> bool:
        """True when the poll got a valid response."""
        return self.outcome is Outcome.OK
