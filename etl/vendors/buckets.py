"""Time arithmetic of history sources (SPEC 10): durations, alignment and bucket times."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from etl.errors import ParseError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION_RE = re.compile(r"^(\d+)(s|m|h|d|w|mo)$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_HOUR_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")
_RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$")
# Unix times above this are milliseconds (10^11 s is the year 5138).
MILLIS_ABOVE = 10**11
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@dataclass(frozen=True)
class Span:
    """A duration: whole seconds, or whole calendar months in UTC (`mo`)."""

    seconds: int = 0
    months: int = 0

    def __bool__(self) -> bool:
        return bool(self.seconds or self.months)

    def after(self, at: datetime) -> datetime:
        """`at` plus this span (months keep the day of the month; bounds are month starts)."""
        if not self.months:
            return at + timedelta(seconds=self.seconds)
        index = at.year * 12 + at.month - 1 + self.months
        return at.replace(year=index // 12, month=index % 12 + 1)

    def before(self, at: datetime) -> datetime:
        """`at` minus this span."""
        if not self.months:
            return at - timedelta(seconds=self.seconds)
        return Span(months=-self.months).after(at)

    def floor(self, at: datetime) -> datetime:
        """The latest multiple of this span in UTC at or before `at` (months: month starts)."""
        at = at.astimezone(UTC)
        if self.months:
            index = (at.year * 12 + at.month - 1) // self.months * self.months
            return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
        seconds = (at - EARLIEST) // timedelta(seconds=self.seconds) * self.seconds
        return EARLIEST + timedelta(seconds=seconds)

    def ceil(self, at: datetime) -> datetime:
        """The earliest multiple of this span in UTC at or after `at`."""
        low = self.floor(at)
        return low if low == at else self.after(low)


def parse_span(value: Any, key: str, *, months: bool = False, zero: bool = True) -> Span:
    """A duration from config: seconds as a number, or `"30d"`-style text (SPEC 10).

    `months`: the key also takes `mo` (step, align, width). `zero`: 0 is allowed.
    Raises ValueError naming what is wrong (the caller adds the key).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        span = Span(seconds=value)
        if value < 0:
            raise ValueError(f"{key}: must not be negative")
    elif isinstance(value, str) and (match := _DURATION_RE.fullmatch(value.strip())):
        count, unit = int(match.group(1)), match.group(2)
        if unit == "mo":
            if not months:
                raise ValueError(f"{key}: months ('mo') are not a duration here")
            span = Span(months=count)
        else:
            span = Span(seconds=count * _UNITS[unit])
    else:
        raise ValueError(f"{key}: must be seconds or a whole number with a unit "
                         f"(s, m, h, d, w{', mo' if months else ''}), such as \"1d\"")
    if not zero and not span:
        raise ValueError(f"{key}: must be more than 0")
    return span


def bucket_time(value: Any, field: str) -> datetime:
    """A bucket's start or end as a vendor writes it (SPEC 10), as an aware UTC datetime.

    A JSON number is Unix seconds (milliseconds above 10^11); text is RFC 3339 with an
    offset or `Z`, a date `YYYY-MM-DD` (UTC midnight) or `YYYY-MM-DDThh` (UTC). Raises
    ParseError naming `field` for anything else, or a time before 1970 or after 9999.
    """
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            seconds = value / 1000 if value > MILLIS_ABOVE else value
            at = EARLIEST + timedelta(seconds=seconds)
        elif isinstance(value, str) and _DATE_RE.fullmatch(value):
            day = date.fromisoformat(value)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
        elif isinstance(value, str) and _DATE_HOUR_RE.fullmatch(value):
            at = datetime.strptime(value, "%Y-%m-%dT%H").replace(tzinfo=UTC)
        elif isinstance(value, str) and _RFC3339_RE.fullmatch(value):
            text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("z", "Z"))
            at = datetime.fromisoformat(text).astimezone(UTC)
        else:
            raise ValueError
    except (ValueError, OverflowError):
        raise ParseError(f"{field}: not a Unix time, RFC 3339 time or date: "
                         f"{str(value)[:40]!r}") from None
    if not EARLIEST <= at <= LATEST:
        raise ParseError(f"{field}: {str(value)[:40]!r} is before 1970 or after 9999")
    return at
