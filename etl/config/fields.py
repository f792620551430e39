"""Field checks every config table shares: names, numbers, exact decimals, problem lists."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9_-]+$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What is too large to bill (issue 12): every config amount, price and count is at most 10^15
# (etl.vendors.parsing.MAX_READING) with at most 12 decimal places. Within these, every
# amount is exact in reports.compute.pricing's decimal context whatever finite reading the
# database holds; `unit_price = "1e999999999"` is refused here rather than failing a report.
MAX_CONFIG_DECIMAL = Decimal(10**15)
MAX_CONFIG_DECIMAL_PLACES = 12
DECIMAL_RANGE = f"from 0 to 10^15 with at most {MAX_CONFIG_DECIMAL_PLACES} decimal places"
# Longer number text is refused unread: no amount needs it, and Decimal() of a huge literal
# is slow.
_MAX_NUMBER_TEXT = 100


@dataclass
class TopLevel:
    """Collects problems, each named by the file (or the variable that overrode the key)."""

    where: str
    origins: Mapping[str, str]
    problems: list[str] = field(default_factory=list)

    def problem(self, key: str, message: str) -> None:
        """Add `message` about top-level `key`, named by its file or its override."""
        origin = self.origins.get(key)
        self.problems.append(f"{origin}: {message}" if origin else f"{self.where}{key}: {message}")

    def extend(self, found: list[str]) -> None:
        """Add problems found in one table entry, each prefixed with the file."""
        self.problems.extend(self.where + p for p in found)

    def text(self, raw: Mapping[str, Any], key: str, default: str) -> str:
        """The non-empty printable string at `key` (`default` when unset or refused)."""
        value = raw.get(key, default)
        if not isinstance(value, str) or not value.strip():
            self.problem(key, "must be a non-empty string")
            return default
        if not value.isprintable():
            # A NUL or newline would only fail later, deep in a file or database call.
            self.problem(key, "must not contain control characters")
            return default
        return value

    def tables(self, raw: Mapping[str, Any], key: str) -> list[Any]:
        """The array of tables at `key` (`[[key]]`), [] when unset or not an array."""
        value = raw.get(key, [])
        if not isinstance(value, list):
            self.problem(key, f"must be an array of tables ([[{key}]])")
            return []
        return value


def what(value: Any) -> str:
    """The TOML type of `value`, for messages."""
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), (list, "an array"), (dict, "a table")):
        if isinstance(value, kind):
            return name
    if isinstance(value, date | time):
        return "a date/time"
    return type(value).__name__


def number(value: Any) -> float | None:
    """`value` as a float if it is a finite integer or float: nan and inf pass no `<` check."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:  # an integer literal too big for a float
        return None
    return result if math.isfinite(result) else None


def positive(entry: Mapping[str, Any], key: str, label: str, default: float,
             problems: list[str], *, zero_ok: bool = False) -> float:
    """Seconds at `key` of `entry`: finite and above 0 (or 0 too when `zero_ok`)."""
    value = number(entry.get(key, default))
    if value is None or value < 0 or (value == 0 and not zero_ok):
        problems.append(f"{label}.{key}: must be a finite number "
                        + ("of 0 or more" if zero_ok else "above 0"))
        return default
    return value


def named_entry(entry: Any, section: str, i: int, seen: set[str],
                problems: list[str]) -> tuple[str, Any] | None:
    """(label for messages, name) of entry `i` of `[[section]]`; None if it is not a table.

    The label is `section.NAME` for a good, new name, else `section[i]`.
    """
    label = f"{section}[{i}]"
    if not isinstance(entry, dict):
        problems.append(f"{label}: must be a table")
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        problems.append(f"{label}.name: required, lowercase letters, digits, '_' or '-' only")
    elif name in seen:
        problems.append(f"{label}.name: duplicate {section[:-1]} name {name!r}")
    else:
        seen.add(name)
        label = f"{section}.{name}"
    return label, name


def _parsed(value: Any) -> Decimal | None:
    """A TOML integer, float or decimal string as an exact Decimal (any size), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    text = str(value).strip()
    if len(text) > _MAX_NUMBER_TEXT:
        return None
    try:
        # str() first so a TOML float such as 0.1 becomes Decimal("0.1"), not its binary value.
        return Decimal(text)
    except InvalidOperation:
        return None


def decimal_value(value: Any) -> Decimal | None:
    """The one check of every config amount, price and quantity.

    `value` as a Decimal from 0 to MAX_CONFIG_DECIMAL with at most MAX_CONFIG_DECIMAL_PLACES
    places, else None.
    """
    result = _parsed(value)
    if result is None or not result.is_finite() or not 0 <= result <= MAX_CONFIG_DECIMAL:
        return None
    if result and int(result.normalize().as_tuple().exponent) < -MAX_CONFIG_DECIMAL_PLACES:
        return None
    return result


def bounded_decimal(value: Any, key: str, problems: list[str], *, required: bool = False,
                    positive: bool = False) -> Decimal | None:
    """`value` by decimal_value (and above 0 if `positive`); else a problem naming `key`."""
    if value is None:
        if required:
            problems.append(f"{key}: required, a decimal string or number {DECIMAL_RANGE}")
        return None
    result = decimal_value(value)
    if result is not None and not (positive and result == 0):
        return result
    parsed = _parsed(value)
    why = (f" ({value} is too large to bill)"
           if parsed is not None and parsed.is_finite() and parsed > MAX_CONFIG_DECIMAL else "")
    span = (f"above 0, up to 10^15 with at most {MAX_CONFIG_DECIMAL_PLACES} decimal places"
            if positive else DECIMAL_RANGE)
    problems.append(f"{key}: must be a number {span}{why}")
    return None


def local_date(value: Any, key: str, problems: list[str]) -> date | None:
    """A local date given as a TOML date (2026-01-15) or a "YYYY-MM-DD" string.

    None, with a problem naming `key`, for anything else (a date-time included).
    """
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        if DATE_RE.fullmatch(value.strip()):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        # A string is a welcome spelling: say what is wrong with this one (2026-02-30).
        problems.append(f"{key}: {value!r} is not a date (expected YYYY-MM-DD, such as "
                        "2026-01-15)")
        return None
    problems.append(f"{key}: must be a date such as 2026-01-15, not {what(value)}")
    return None
