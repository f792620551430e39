"""Report periods: local days and months in a time zone, as UTC instants (int microseconds)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from etl.errors import InputError
from etl.store.models import to_micros

MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
US_PER_SECOND = 1_000_000
# Stored times lie in 1970-01-01..9999-12-31 (SPEC 4); the day after the last a report
# covers must still start, in any zone, before the end of 9999.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9999, 12, 30)


def resolve_tz(name: str, what: str = "--tz") -> ZoneInfo:
    """The IANA zone `name`, or an InputError naming it and the option `what`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InputError(f"{what}: {name!r} is not an IANA time zone name") from None


def parse_date(text: str, what: str = "--date") -> date:
    """A YYYY-MM-DD date a report can cover, or an InputError naming the option."""
    try:
        if not DATE_RE.match(text):
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a date (expected YYYY-MM-DD)") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InputError(f"{what}: {text} is outside the days reports cover "
                         f"({FIRST_DAY} to {LAST_DAY})")
    return day


def parse_month(text: str, what: str = "--month") -> date:
    """The first day of a YYYY-MM month a report can cover, or an InputError naming the option."""
    m = MONTH_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1:
        raise InputError(f"{what}: {text!r} is not a month (expected YYYY-MM)")
    first = date(int(m.group(1)), int(m.group(2)), 1)
    if not FIRST_DAY <= first < LAST_DAY.replace(day=1):
        raise InputError(f"{what}: {text} is outside the months reports cover "
                         f"({FIRST_DAY:%Y-%m} to 9999-11)")
    return first


def next_month(first: date) -> date:
    """The first day of the month after the one starting on `first`."""
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which `day` starts in `tz`.

    Built from the wall-clock midnight with zoneinfo (fold=0): where midnight itself is skipped
    by a DST jump, this lands on the first instant that exists that day.
    """
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """Consecutive local days [start, end) in a zone, with their UTC boundaries."""

    start: date  # first local day
    end: date  # first local day after the period
    tz: ZoneInfo
    bounds: np.ndarray  # int64 microseconds, len(days) + 1 boundaries

    @property
    def days(self) -> list[date]:
        """The local dates of the period, first to last."""
        n = (self.end - self.start).days
        return [self.start + timedelta(days=i) for i in range(n)]

    @property
    def start_us(self) -> int:
        """The period's start, microseconds since the Unix epoch (UTC)."""
        return int(self.bounds[0])

    @property
    def end_us(self) -> int:
        """The period's end (exclusive), microseconds since the Unix epoch (UTC)."""
        return int(self.bounds[-1])

    def day_seconds(self) -> np.ndarray:
        """Each day's length in seconds (82800 or 90000 on DST changes)."""
        return np.diff(self.bounds) // US_PER_SECOND


def days_period(start: date, end_exclusive: date, tz: ZoneInfo) -> Period:
    """The local days from `start` up to (not including) `end_exclusive`."""
    if end_exclusive <= start:
        raise InputError(f"--end: {end_exclusive - timedelta(days=1)} is before --start {start}")
    n = (end_exclusive - start).days
    bounds = np.array(
        [to_micros(local_midnight(start + timedelta(days=i), tz)) for i in range(n + 1)],
        dtype=np.int64,
    )
    return Period(start, end_exclusive, tz, bounds)


def month_period(month: date, tz: ZoneInfo) -> Period:
    """All local days of the month starting at `month` (a first-of-month date)."""
    return days_period(month, next_month(month), tz)


def us_to_datetime(us: int, tz: ZoneInfo | None = None) -> datetime:
    """An aware datetime (UTC, or `tz`) for epoch microseconds."""
    value = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))
    return value.astimezone(tz) if tz is not None else value
