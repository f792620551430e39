"""Helpers shared by the vendor adapters: number and timestamp validation."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from etl.errors import ParseError

# Date and time are both required; seconds, fraction and offset are optional.
_TS_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)?$"
)
# The samples table keeps at most this much of a vendor status string (raw payload keeps it all).
STATUS_MAX_LEN = 16


def parse_timestamp(value: Any, field: str) -> datetime:
    """An aware UTC datetime from an ISO 8601 string (Z or offset; naive is taken as UTC)."""
    if isinstance(value, str):
        # Archives and polls repeat each instant across sources: parse each text once.
        return _parse_timestamp_text(value, field)
    return _parse_timestamp(value, field)


@lru_cache(maxsize=4096)
def _parse_timestamp_text(value: str, field: str) -> datetime:
    return _parse_timestamp(value, field)  # errors raise and are not cached


def _parse_timestamp(value: Any, field: str) -> datetime:
    if not isinstance(value, str) or not _TS_RE.match(value.strip()):
        raise ParseError(f"{field}: not an ISO 8601 date and time: {_short(value)}")
    text = value.strip()
    # fromisoformat in 3.11 wants at most 6 fraction digits.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(f"{field}: not a valid date and time: {_short(value)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def number(value: Any, field: str) -> float:
    """A finite number of 0 or more (booleans and numeric strings are refused)."""
    kind = type(value)
    if kind is int or kind is float:  # the common case, checked in full below otherwise
        result = float(value)
        if 0 <= result < math.inf:
            return result
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(f"{field}: must be a number, got {_short(value)}")
    result = float(value)
    if not math.isfinite(result) or result < 0:
        raise ParseError(f"{field}: must be a finite number of 0 or more, got {_short(value)}")
    return result


def optional_number(obj: dict[str, Any], key: str, field: str) -> float | None:
    value = obj.get(key)
    return None if value is None else number(value, field)


def optional_text(obj: dict[str, Any], key: str, field: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{field}: must be a string, got {_short(value)}")
    return value


def mapping(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParseError(f"{field}: missing or not an object")
    return value


def to_payload(body: Any) -> str:
    """The canonical JSON text stored for a body that did not arrive as text."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
