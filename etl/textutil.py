"""Text rules shared by every side: the first line of an error, spreadsheet-safe cells, numbers."""

from __future__ import annotations

import math

# Spreadsheets run a cell that starts with one of these as a formula (SPEC 6).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def first_line(exc: BaseException) -> str:
    """The first line of what `exc` says (a driver error's own message when it wraps one)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def formula_safe(text: str) -> str:
    """`text` with a leading `'` when a spreadsheet would run it as a formula (SPEC 6)."""
    return "'" + text if text.startswith(FORMULA_START) else text


def number_text(value: float) -> str:
    """A stored reading as short exact text: `12` for a whole number, else its repr (`0.1`)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# Numbers people read keep at least this many significant digits (and at least two decimals):
# 0.0047 TB is 0.0047, not 0.00; 1,234.57 stays as it was.
SIGNIFICANT_DIGITS = 4
LEAST_DECIMALS = 2
# Past this many decimals (below 1e-16 or so) a number is written with an exponent.
MOST_DECIMALS = 18


def readable_decimals(value: float) -> int:
    """The decimals that show `value` with SIGNIFICANT_DIGITS, at least LEAST_DECIMALS."""
    if value == 0 or not math.isfinite(value):
        return LEAST_DECIMALS
    return max(LEAST_DECIMALS, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value))))


def round_readable(value: float) -> float:
    """`value` rounded for people, keeping its significant digits (a percentage, a reading)."""
    return round(value, readable_decimals(value))


def readable_number(value: float) -> str:
    """`value` for people: thousands grouped, whole numbers without decimals.

    Others get the decimals SIGNIFICANT_DIGITS need, trailing zeros past LEAST_DECIMALS dropped.
    """
    if value.is_integer():
        return f"{value:,.0f}"
    decimals = readable_decimals(value)
    if decimals > MOST_DECIMALS:
        return f"{value:.{SIGNIFICANT_DIGITS}g}"
    text = f"{value:,.{decimals}f}"
    whole, _, part = text.partition(".")
    part = part.rstrip("0").ljust(LEAST_DECIMALS, "0")
    return f"{whole}.{part}"
