"""Helpers shared by the vendor adapters: number and timestamp validation."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from etl.errors import ParseError

try:  # a C JSON parser (a dependency; the standard one below names the same problems)
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

# Date and time are both required; seconds, fraction and offset are optional.
_TS_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)?$"
)
# The samples table keeps at most this much of a vendor status string (raw payload keeps it all).
STATUS_MAX_LEN = 16
# The largest reading usage-etl stores and bills (docs/collecting.md, "Hostile numbers"):
# 10**15 units. Below 2**53 (about 9.007e15) a float64 holds every whole number exactly, so
# each reading, each counter increment and each decimal-scaled reading stays exact; a larger
# one (1e308, 2**64) could only be billed as a rounded or overflowing figure. Reports skip a
# stored reading above it (one written before this check), so every report of stored data ends.
MAX_READING = 1e15
# The deepest nesting of vendor JSON read (a usage body is 3 levels deep, an archive line 4):
# deeper text is hostile, and would exhaust the recursion of parsers and serialisers.
MAX_JSON_DEPTH = 64
# The times an archive line may carry (SPEC 4, amended 2026-12-06), both ends included.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime.max.replace(tzinfo=UTC)
TIME_RANGE = "1970-01-01 to 9999-12-31"
# A live poll's vendor time further than this from the collector's clock is not believed.
FAR_FROM_CLOCK = timedelta(days=1)


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
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:30-01:00 is in year 10000 in UTC
        raise ParseError(f"{field}: {_short(value)} is outside {TIME_RANGE}") from None


def time_range_problem(at: datetime, field: str) -> str | None:
    """Why `at` is not a time an archive line may hold (SPEC 4), or None."""
    if EARLIEST_TIME <= at <= LATEST_TIME:
        return None
    return f"{field}: {at.isoformat().replace('+00:00', 'Z')} is outside {TIME_RANGE}"


def number(value: Any, field: str) -> float:
    """A reading: a finite number from 0 to MAX_READING (booleans, numeric strings refused)."""
    kind = type(value)
    if kind is int or kind is float:  # the common case, checked in full below otherwise
        if 0 <= value <= MAX_READING:
            return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(f"{field}: must be a number, got {_short(value)}")
    try:
        result = float(value)
    except OverflowError:  # an integer too large for a float
        result = math.inf
    if not math.isfinite(result) or result < 0:
        raise ParseError(f"{field}: must be a finite number of 0 or more, got {_short(value)}")
    if result > MAX_READING:
        raise ParseError(f"{field}: {_short(value)} is above 10^15, the largest reading "
                         "usage-etl can bill exactly")
    return result


def plan_limit(obj: dict[str, Any], key: str) -> float | None:
    """A plan limit: None (no limit) when missing, null, negative or not a finite number.

    Vendors write -1 (or null, or nothing) for "unlimited"; a limit is never a reason to
    refuse the reading it comes with (SPEC 5). 0 stays 0 (it has no percentage either).
    """
    return limit_value(obj.get(key))


def limit_value(value: Any) -> float | None:
    """The plan_limit rule for a value already found (http_json's limit expression)."""
    kind = type(value)
    if not (kind is int or kind is float) or not value >= 0:
        return None
    try:
        limit = float(value)
    except OverflowError:  # an integer too large for a float: as good as no limit
        return None
    return limit if limit < math.inf else None


def optional_status(obj: dict[str, Any], key: str) -> str | None:
    """A vendor status word, cut to STATUS_MAX_LEN; None when missing, empty or not text.

    The status only describes the reading (its percentage of the limit): like the limit it
    is never a reason to refuse the reading (SPEC 5).
    """
    value = obj.get(key)
    if type(value) is not str or not value:
        return None
    return value[:STATUS_MAX_LEN]


def optional_text(obj: dict[str, Any], key: str, field: str) -> str | None:
    """`obj[key]` as text, None when absent or null (raises ParseError naming `field`)."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{field}: must be a string, got {_short(value)}")
    return value


def mapping(value: Any, field: str) -> dict[str, Any]:
    """`value` when it is a JSON object (raises ParseError naming `field` otherwise)."""
    if not isinstance(value, dict):
        raise ParseError(f"{field}: missing or not an object")
    return value


def loads_json(raw: bytes) -> Any:
    """Vendor JSON text (an HTTP body, an archive line) as Python values, or ParseError.

    Refused: text that is not UTF-8, not JSON (NaN and Infinity included), nested deeper
    than MAX_JSON_DEPTH, or holding a string no database can store (see `check_storable`).
    The message is a phrase to follow "response body" or a line's position: "not JSON
    (Expecting value at char 0)".
    """
    doc: Any = None
    if orjson is not None:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None  # the standard parser names the problem (or accepts lone surrogates)
    if doc is None:
        try:
            doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise ParseError("not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ParseError(f"not JSON ({exc.msg} at char {exc.pos})") from None
        except RecursionError:
            raise ParseError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as exc:
            raise ParseError(f"not JSON ({exc})") from None
    check_storable(raw, doc)
    return doc


# The bytes NUL and backslash, as the integers `in` finds in bytes without trying a
# conversion first (see check_storable).
_NUL = 0x00
_BACKSLASH = 0x5C
_BRACKET = 0x5B  # [


def check_storable(raw: bytes, doc: Any) -> None:
    """Refuse a body too deep or holding text a database cannot store (raises ParseError).

    That is `doc`, parsed from `raw`, nesting deeper than MAX_JSON_DEPTH or holding text
    a database cannot store: a NUL character (PostgreSQL refuses it in text) or a lone UTF-16
    surrogate such as "\\ud800" (not Unicode, so not UTF-8 either).

    Costs a few passes over the bytes for ordinary text: only text with a \\u escape (or
    NUL bytes, as UTF-16 has) and many brackets is walked.
    """
    if _NUL not in raw and (_BACKSLASH not in raw or b"\\u" not in raw):
        # UTF-8 JSON text holds a NUL or a surrogate only as a \\u escape (a raw control
        # character or an invalid UTF-8 byte is refused by the parser; UTF-16 or UTF-32
        # text, which the standard parser also reads, has NUL bytes), so only the depth is
        # left to check, and it is read from the text: a history page holds thousands of
        # strings, and walking them cost as much as parsing it. (One-byte searches first,
        # for a byte's value: they are memchr. `b"\\x00" in raw` first tries its operand as
        # an integer and formats the TypeError that fails, 2,000 instructions a test.) Text
        # with no more opening brackets than that cannot nest deeper: counting them is
        # cheaper than reading the depth.
        # (Counting is a loop over every byte; most bodies have no list, found by memchr.)
        openers = raw.count(b"{") + (raw.count(b"[") if _BRACKET in raw else 0)
        if openers > MAX_JSON_DEPTH and _text_depth(raw) > MAX_JSON_DEPTH:
            raise ParseError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return
    if raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH and b"\\u" not in raw:
        return
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ParseError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)


# For _text_depth: every bracket made a brace, everything but braces and quotes dropped.
_AS_BRACES = bytes.maketrans(b"[]", b"{}")
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'{}[]"')


def _text_depth(raw: bytes) -> int:
    """How deeply the JSON text `raw` (UTF-8, parsed already, so valid) nests containers.

    Escapes and strings are taken out (in UTF-8 no byte of a multibyte character is ASCII),
    leaving only the brackets, which nest properly; each pass then removes the innermost
    pairs. All of it is bytes methods: no Python step per character or per value.
    """
    if b"\\" in raw:  # an escaped backslash or quote is not a string's end
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = raw.translate(_AS_BRACES, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in text:  # strings holding brackets: keep what is outside the quotes
        text = b"".join(text.split(b'"')[0::2])
    depth = 0
    while text and depth <= MAX_JSON_DEPTH:
        depth += 1
        text = text.replace(b"{}", b"")
    return depth


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise ParseError(f"text {_short(text)} holds a NUL character (\\u0000), which a "
                         "database cannot store")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError(f"text {_short(text)} holds a lone surrogate (such as \\ud800): "
                             "not Unicode text") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def to_payload(body: Any) -> str:
    """The canonical JSON text stored for a body that did not arrive as text."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def http_url_problem(value: Any) -> str | None:
    """What is wrong with `value` as a usage endpoint (an http(s) URL), or None.

    No credentials or query string: URLs reach logs, and secrets go only in headers.
    """
    if not isinstance(value, str):
        return "must be an http:// or https:// URL, not " + type(value).__name__
    if any(c.isspace() or not c.isprintable() for c in value):
        return "must not contain spaces or control characters"
    try:
        parsed = urlparse(value)
        _ = parsed.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        return "must be an http:// or https:// URL"
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return "must be an http:// or https:// URL"
    if parsed.username or parsed.password or parsed.query:
        return "must not hold credentials or a query string"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
