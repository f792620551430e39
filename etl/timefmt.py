"""UTC instants as `...Z` text and epoch microseconds, UTC months, and the YYYY-MM-DD days commands take."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal

from etl.errors import InputError

Precision = Literal["auto", "seconds", "milliseconds", "microseconds"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str, what: str) -> date:
    """A `YYYY-MM-DD` calendar day given as option `what`; InputError (exit 2) if it is not one.

    The one rule for the days commands take (`report`, `export`, `backfill`).
    """
    try:
        if not _DAY_RE.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a date (expected YYYY-MM-DD)") from None


def utc_z(at: datetime, precision: Precision = "auto") -> str:
    """`at` in UTC as ISO 8601 with a `Z`: ``2026-11-21T10:00:00Z``.

    "auto" keeps microseconds only when there are any (archives round-trip exactly);
    the others always write that many digits (log lines line up).
    """
    at = at.astimezone(UTC)
    if precision == "auto":
        spec = "seconds" if at.microsecond == 0 else "microseconds"
        return at.isoformat(timespec=spec).replace("+00:00", "Z")
    return at.isoformat(timespec=precision).replace("+00:00", "Z")


def utc_human(at: datetime | None, empty: str = "-") -> str:
    """`at` in UTC for people: ``2026-11-21 10:00:00Z`` (`empty` for None)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at is not None else empty


def utcnow() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch for an aware datetime (naive is taken as UTC).

    Exact integer arithmetic (no float seconds): what SQLite stores and reports compute on.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int, tz: tzinfo | None = None) -> datetime:
    """Microseconds since the Unix epoch as an aware datetime in UTC (or in `tz`)."""
    at = EPOCH + timedelta(microseconds=int(value))
    return at.astimezone(tz) if tz is not None else at


def month_start(at: datetime) -> datetime:
    """The first instant of `at`'s UTC month."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    """The first instant of the UTC month after the one starting at `start`.

    December 9999 has no next month a datetime holds: its last instant stands in for it.
    """
    if (start.year, start.month) == (9999, 12):
        return datetime.max.replace(tzinfo=UTC)
    return (start + timedelta(days=32)).replace(day=1)
