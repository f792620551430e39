"""One archive line (JSONL: source, observed_at, window, body) read back as an Observation."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

try:  # a C JSON parser: the standard one cost as much as writing the rows
    import orjson
except ImportError:  # pragma: no cover - a dependency, but the standard parser still works
    orjson = None  # type: ignore[assignment]

from etl.config import SourceConfig
from etl.errors import ParseError
from etl.vendors.parse_api import ParseContext
from etl.vendors.parsing import (
    MAX_JSON_DEPTH,
    check_storable,
    parse_timestamp,
    time_range_problem,
    to_payload,
)
from etl.vendors.types import Observation, Origin

# Plain text: the parse workers send observations back pickled, and a str pickles faster
# than an enum member.
_IMPORT: str = Origin.IMPORT.value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_line(line: bytes | str, sources: dict[str, SourceConfig]) -> Observation:
    """One archive line as an Observation, through the vendor adapter's parse (ParseError if bad).

    The snapshot keeps the body's own text from the line (as the vendor sent it) when it can
    be cut out of the line unambiguously; otherwise the body is serialised again.
    """
    raw = line.encode("utf-8") if isinstance(line, str) else line
    doc, payload = _load_line(raw)
    if not isinstance(doc, dict):
        raise ParseError("not a JSON object")
    name = doc.get("source")
    src = sources.get(name) if type(name) is str else None
    if src is None:
        raise ParseError(_unknown_source(name))
    name = src.name
    if "body" not in doc:
        raise ParseError("body: missing")
    vendor = src.vendor
    observed_at = None
    if doc.get("observed_at") is not None:
        observed_at = _in_range(parse_timestamp(doc["observed_at"], "observed_at"), "observed_at")
    elif not vendor.time_in_body:
        raise ParseError(f"observed_at: required for a {src.kind} source"
                         + ("" if src.bound is None else " without a timestamp"))
    raw_window = doc.get("window")
    history = vendor.history is not None
    window = None if raw_window is None and not history else _window(raw_window, history,
                                                                     src.kind)
    body = doc["body"]
    read = vendor.read if window is None else None
    try:
        if read is not None:  # a built-in kind: no context built per line
            obs = read(body, name, observed_at, payload, _IMPORT)
        else:  # positional: keywords cost a dataclass noticeably more
            obs = vendor.parse(body, ParseContext(name, None, observed_at, payload, _IMPORT,
                                                  window))
    except ParseError as exc:
        raise ParseError(f"body: {exc}") from None
    except ValueError:
        # Without the line's own text the kind stores the body serialised again, which a
        # number beyond a float's range (1e400, read as infinity) cannot be: a bad line,
        # not a crash of the whole import. Any other ValueError is the kind's own bug.
        if payload is not None or _serialisable(body):
            raise
        raise ParseError("body: a number out of range (such as 1e400) cannot be stored") from None
    if observed_at is not None:  # the line's time, whatever the body says (SPEC 4)
        if obs.observed_at != observed_at:
            obs = obs._replace(observed_at=observed_at)
    else:
        _in_range(obs.observed_at, "body: observation time")
    # A kind that does not keep the window (a plugin's) still stores the line's.
    return obs if window is None or obs.window == window else obs._replace(window=window)


def _unknown_source(name: Any) -> str:
    """Why a line's `source` names no configured source."""
    if not isinstance(name, str) or not name:
        return "source: missing"
    return f"source: {name!r} is not a configured source"


def _in_range(at: datetime, field: str) -> datetime:
    """`at`, or a ParseError when it is outside 1970-01-01..9999-12-31 (SPEC 4)."""
    problem = time_range_problem(at, field)
    if problem:
        raise ParseError(problem)
    return at


def _window(raw: Any, history: bool, kind: str) -> tuple[datetime, datetime] | None:
    """A line's request range (SPEC 10): required of history sources, refused elsewhere."""
    if raw is None:
        if history:
            raise ParseError("window: required for a history source")
        return None
    if not history:
        raise ParseError(f"window: only lines of history sources carry one (not {kind})")
    if not isinstance(raw, dict) or set(raw) != {"start", "end"}:
        raise ParseError('window: must be {"start": TIME, "end": TIME}')
    start = _in_range(parse_timestamp(raw["start"], "window.start"), "window.start")
    end = _in_range(parse_timestamp(raw["end"], "window.end"), "window.end")
    if end <= start:
        raise ParseError("window: end is not after start")
    return start, end


def _load_line(raw: bytes) -> tuple[Any, str | None]:
    """The line parsed, and its body's own text when it can be cut out (else None)."""
    split = split_body(raw)
    if split is not None:
        check_storable(raw, split[0])
        return split
    doc: Any = None
    if orjson is not None:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None  # the standard parser below names the problem (or accepts it)
    if doc is None:
        doc = _loads_strict(raw)
    check_storable(raw, doc)
    return doc, None


def _serialisable(body: Any) -> bool:
    try:
        to_payload(body)
    except ValueError:
        return False
    return True


def _loads_strict(line: bytes) -> Any:
    try:
        # Strict UTF-8 (a leading BOM allowed, as json.loads of bytes allows it): json.loads
        # of bytes decodes with "surrogatepass", which let the bytes of a lone surrogate
        # through to the database write, where they stopped the whole import.
        return json.loads(line.decode("utf-8-sig"), parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError:
        raise ParseError("not UTF-8 text") from None
    except RecursionError:
        raise ParseError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ParseError(f"not JSON: {exc}") from None


_BODY_KEY = re.compile(rb'"body"\s*:\s*')


def split_body(raw: bytes) -> tuple[dict[str, Any], str] | None:
    """The line parsed, and its body's own text, if the body is the line's last member.

    The line is parsed in two pieces: up to its last `"body":` with `null}` put in place of
    the rest, and the body's text (from there to the line's closing brace). Each piece is
    parsed once, so the body keeps the vendor's text at no extra cost. A "body" key nested
    deeper leaves the first piece unclosed, and a body that is not the last member leaves
    the second one with more than a value: either fails to parse, and the caller parses
    the whole line instead (the body is then serialised again).
    """
    if orjson is None:
        return None
    match = _BODY_KEY.match(raw, max(raw.rfind(b'"body"'), 0))
    if match is None:
        return None
    end = raw.rstrip()
    close = len(end) - 1
    if close < match.end() or end[close] != 0x7D:  # the line must end with its "}"
        return None
    try:
        head = orjson.loads(raw[:match.end()] + b"null}")
        text = raw[match.end():close].rstrip()
        body = orjson.loads(text)
        if not isinstance(head, dict):
            return None
        head["body"] = body
        return head, text.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return None
