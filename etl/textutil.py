"""Text rules shared by every side: the first line of an error, spreadsheet-safe cells, numbers."""

from __future__ import annotations

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
