"""The DataFrame API's arguments and typed columns: times in a zone, name filters, dtypes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from etl.errors import InputError
from reports.periods import DATE_RE, local_midnight, parse_month, resolve_tz

TimeLike = date | datetime | str
NameFilter = str | Iterable[str] | None


def zone(name: str) -> ZoneInfo:
    """The zone named `name` (an InputError naming `tz` if there is none)."""
    return resolve_tz(name, "tz")


def parse_time(value: TimeLike, what: str) -> date | datetime:
    """A date or datetime from a date, datetime or ISO string; InputError naming `what`."""
    if isinstance(value, date):  # datetime and pd.Timestamp are dates too
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if DATE_RE.match(text):
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise InputError(f"{what}: {value!r} is not a date or an ISO 8601 date-time")


def instant(value: TimeLike, zone: ZoneInfo, what: str, *, end: bool = False) -> datetime:
    """An aware instant; a date is its local midnight (for `end`: the next one)."""
    parsed = parse_time(value, what)
    if isinstance(parsed, datetime):
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)
    return local_midnight(parsed + timedelta(days=1) if end else parsed, zone)


def day(value: TimeLike, zone: ZoneInfo, what: str) -> date:
    """The local day of a date, a datetime (naive = local) or an ISO string."""
    parsed = parse_time(value, what)
    if isinstance(parsed, datetime):
        return parsed.astimezone(zone).date() if parsed.tzinfo is not None else parsed.date()
    return parsed


def month(value: TimeLike) -> date:
    """The first day of the month `value` names ("YYYY-MM" or any date in it)."""
    if isinstance(value, str):
        text = value.strip()
        if DATE_RE.match(text):
            return date.fromisoformat(text).replace(day=1)
        return parse_month(text, "month")
    if isinstance(value, date):
        return value.replace(day=1)
    raise InputError(f"month: {value!r} is not a month (expected YYYY-MM)")


def names(value: NameFilter) -> list[str] | None:
    """A name filter as a list (None: no filter)."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def check_names(what: str, wanted: list[str] | None, known: Iterable[str]) -> None:
    """InputError naming the wanted names that are not known, and the known ones."""
    if wanted is None:
        return
    have = sorted(set(known))
    unknown = [w for w in wanted if w not in have]
    if unknown:
        raise InputError(f"{what}: {', '.join(map(repr, unknown))} not found "
                         f"(known: {', '.join(have) or 'none'})")


def timestamps(micros: Sequence[Any] | pd.Series, zone: ZoneInfo) -> pd.Series:
    """Aware timestamps in `zone` (microsecond resolution) from epoch microseconds."""
    values = pd.Series(micros, dtype="Int64")
    return pd.to_datetime(values, unit="us", utc=True).dt.tz_convert(zone)


def local_days(days: pd.Series, zone: ZoneInfo) -> pd.Series:
    """Each local date as the aware instant its day starts at, in `zone`."""
    starts = {d: local_midnight(d, zone) for d in days.dropna().unique()}
    out = pd.to_datetime(days.map(starts), utc=True).dt.tz_convert(zone)
    return out.astype(f"datetime64[us, {zone.key}]")


def category(values: pd.Series, order: Sequence[str] | None = None) -> pd.Series:
    """`values` as a categorical, its categories in `order` (default: sorted)."""
    cats = list(order) if order is not None else sorted(values.dropna().unique())
    return values.astype(pd.CategoricalDtype(cats))


def floats(values: pd.Series) -> pd.Series:
    """`values` as nullable Float64 (None and <NA> stay missing)."""
    return pd.Series([None if v is None or v is pd.NA else float(v) for v in values],
                     index=values.index, dtype="Float64")


def bounds(start: TimeLike | None, end: TimeLike | None,
            zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """[lo, hi) instants of the `start`/`end` arguments (either None: open)."""
    lo = instant(start, zone, "start") if start is not None else None
    hi = instant(end, zone, "end", end=True) if end is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise InputError(f"end: {end!r} is not after start {start!r}")
    return lo, hi
