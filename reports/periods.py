"""Report periods: local days and months in a time zone, as UTC instants (int microseconds)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from etl.config import BillingRule
from etl.errors import InputError
from etl.timefmt import parse_day, to_micros

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
    day = parse_day(text, what)
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


def previous_month(first: date) -> date:
    """The first day of the month before the one starting on `first`."""
    return date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)


def period_label(day: date, cycle_day: int = 1) -> date:
    """The label (first of its month) of the billing period holding the local date `day`.

    A period starts on day `cycle_day` (1-28) of the month that labels it (SPEC 11).
    """
    first = day.replace(day=1)
    return first if day.day >= cycle_day else previous_month(first)


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
        """The local dates of the period, first to last (a new list each time)."""
        return list(self._days)

    @cached_property
    def _days(self) -> tuple[date, ...]:
        # Made once: a billing report asks each rule's period for its days several times.
        n = (self.end - self.start).days
        return tuple(self.start + timedelta(days=i) for i in range(n))

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


def billing_period(label: date, cycle_day: int, tz: ZoneInfo) -> Period:
    """The billing period labelled `label` (its month's first day) for a rule's `cycle_day`.

    The one definition of a rule's period (SPEC 11): local day `cycle_day` of the label's
    month, 00:00 in `tz`, up to the same day of the next month (exclusive). `cycle_day` 1
    is the calendar month; 1-28 exist in every month, so no period is cut short.
    """
    first = label.replace(day=1)
    return days_period(first.replace(day=cycle_day), next_month(first).replace(day=cycle_day),
                       tz)


@dataclass(frozen=True)
class RulePeriod:
    """A `[[billing]]` rule with the period of one label it prices.

    `index` is the rule's place in the config's rules (credits pay rules of one source whose
    periods start the same day in this order).
    """

    index: int
    rule: BillingRule
    label: date
    period: Period


def rule_periods(rules: Sequence[BillingRule], label: date, tz: ZoneInfo) -> list[RulePeriod]:
    """Each rule that prices its period labelled `label`, with that period (SPEC 11).

    A rule prices the period if it is valid on the period's first local day (valid_from on
    or before it, valid_until after it); of several rules of one series, at most one is.
    """
    out = []
    # One period per cycle day: rules mostly share one, and building its day boundaries
    # per rule was a tenth of a warm month's reports (200 rules).
    periods: dict[int, Period] = {}
    for i, rule in enumerate(rules):
        period = periods.get(rule.cycle_day)
        if period is None:
            period = periods[rule.cycle_day] = billing_period(label, rule.cycle_day, tz)
        if rule.valid_on(period.start):
            out.append(RulePeriod(i, rule, label.replace(day=1), period))
    return out


def span(periods: Sequence[Period], tz: ZoneInfo) -> Period:
    """The local days from the earliest start to the latest end of `periods` (not empty)."""
    return days_period(min(p.start for p in periods), max(p.end for p in periods), tz)


def label_text(label: date) -> str:
    """A period's label as reports and invoices write it: YYYY-MM."""
    return label.strftime("%Y-%m")
