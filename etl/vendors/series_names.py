"""Per-item series names (SPEC 7, amended 2026-12-06): an item's key as the `KEY` of `NAME:KEY`."""

from __future__ import annotations

import math
import re
import unicodedata
from decimal import Decimal
from functools import lru_cache
from typing import Any

_KEY_CHAR_RE = re.compile(r"[^a-z0-9_.-]")
# How much of a refused item's key a message repeats.
SHOWN_KEY_LEN = 60


@lru_cache(maxsize=65536)
def _cached_name(metric: str, value: str | int) -> str:
    return f"{metric}:{series_key(value)}"


def series_name(metric: str, value: Any) -> str:
    """`NAME:KEY` for an item's key `value` (ValueError as series_key).

    History pages repeat each item's key in every bucket: a text or integer key is
    normalized once.
    """
    if type(value) is str or type(value) is int:
        return _cached_name(metric, value)
    return f"{metric}:{series_key(value)}"


def series_key(value: Any) -> str:
    """The `KEY` of a per-item series (SPEC 7, amended 2026-12-06); ValueError if it has none.

    A number as written without exponent (1655371, never 1.65537e+06); text NFKC-normalized
    and case-folded, each character other than a letter, mark or decimal digit of any script,
    `_`, `.` or `-` made `_`.
    """
    if type(value) is str:
        if not value:
            raise ValueError("is empty")
        if value.isascii():  # NFKC leaves ASCII alone, and casefold is lower there
            return _KEY_CHAR_RE.sub("_", value.lower())
        text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
        return "".join(c if c in "_.-" or _kept(c) else "_" for c in text)
    if type(value) is int:
        return str(value)
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError("is not a finite number")
        return format(Decimal(repr(value)), "f")
    if value is None:
        raise ValueError("is missing")
    raise ValueError(f"must be a string or a number, not {_json_type(value)}")


def _kept(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "LM" or category == "Nd"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) \
        else type(value).__name__


def shown_key(value: Any) -> str:
    """A key as it appears in a message: its JSON text, cut to a readable length."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= SHOWN_KEY_LEN else text[:SHOWN_KEY_LEN - 3] + "..."
