"""An archive line of a built-in kind reads through `VendorKind.read` exactly as through `parse`."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from etl.config import SourceConfig
from etl.errors import ParseError
from etl.store.archive_line import parse_line
from etl.vendors import KINDS, ParseContext
from etl.vendors.types import Observation, SampleValue

_KINDS = ("wiresocket", "nected")

# Each source twice: as configured (the import calls the kind's `read`), and bound to a
# copy of its kind without `read` (the import builds a ParseContext and calls `parse`).
FAST = {f"{k}-1": SourceConfig(f"{k}-1", k, 60.0) for k in _KINDS}
GENERIC = {name: dataclasses.replace(src, bound=dataclasses.replace(KINDS[src.kind], read=None))
           for name, src in FAST.items()}

_numbers = (st.integers(-5, 10**16) | st.floats(allow_nan=False) | st.booleans() | st.none()
            | st.sampled_from(["12", "", "-1"]))
_texts = st.none() | st.integers(0, 3) | st.text(max_size=20) | st.sampled_from(["x" * 40])
_times = st.none() | st.integers(0, 5) | st.sampled_from([
    "2026-11-21T10:00:00Z", "2026-11-21T10:00:00.123456789+02:00", "2026-11-21 10:00",
    "1969-12-31T23:59:59Z", "9999-12-31T23:30:00-01:00", "2026-13-01T00:00:00Z", "soon"])


def _optional(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dictionaries holding any subset of `keys`, each with a value from its strategy."""
    return st.fixed_dictionaries({}, optional=keys)


_usage_entry = st.one_of(_numbers, _optional(
    {"current": _numbers, "limit": _numbers, "percent": _numbers, "status": _texts}))
_wiresocket_bodies = st.one_of(_numbers, _optional({
    "tenantId": _texts, "appId": _texts, "timestamp": _times,
    "usage": st.one_of(_numbers, _optional({"connections": _usage_entry,
                                            "documents": _usage_entry}))}))
_nected_bodies = st.one_of(_numbers, _optional({
    "data": st.one_of(_numbers, _optional({"invocations": _numbers})),
    "code": st.sampled_from(["success", "error", ""]) | st.none(),
    "message": _texts}))


def _whole(obs: Observation) -> Observation:
    """`obs`, after checking it and its samples hold every field (kinds build the tuples)."""
    assert len(obs) == len(Observation._fields)
    assert all(len(s) == len(SampleValue._fields) for s in obs.samples)
    assert obs == Observation(*obs)
    return obs


def _outcome(line: bytes, sources: dict[str, SourceConfig]) -> Observation | str:
    try:
        return _whole(parse_line(line, sources))
    except (ParseError, ValueError) as exc:
        # A source bound to its own kind (as GENERIC's are) is told apart in this one
        # message, for http_json's sources: not a difference between read and parse.
        return f"{type(exc).__name__}: {exc}".replace(" without a timestamp", "")


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(_KINDS), ws_body=_wiresocket_bodies, nx_body=_nected_bodies,
       observed_at=_times, other=st.sampled_from(["", ', "window": null', ', "x": 1']))
def test_a_line_reads_the_same_through_read_and_through_parse(  # type: ignore[no-untyped-def]
        kind, ws_body, nx_body, observed_at, other) -> None:
    body = ws_body if kind == "wiresocket" else nx_body
    head = "" if observed_at is None else f'"observed_at": {json.dumps(observed_at)}, '
    line = f'{{"source": "{kind}-1", {head}"body": {json.dumps(body)}{other}}}\n'.encode()
    assert _outcome(line, FAST) == _outcome(line, GENERIC)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(_KINDS), ws_body=_wiresocket_bodies, nx_body=_nected_bodies,
       observed=st.booleans(), received=st.booleans(), payload=st.none() | st.just("{}"),
       origin=st.sampled_from(["collect", "import"]))
def test_read_returns_what_parse_returns_for_the_same_fields(  # type: ignore[no-untyped-def]
        kind, ws_body, nx_body, observed, received, payload, origin) -> None:
    """Also for a live poll's fields (a received time, no observed time)."""
    at = datetime(2026, 11, 21, 10, tzinfo=UTC)
    observed_at = at if observed else None
    received_at = at + timedelta(seconds=1) if received else None
    body = ws_body if kind == "wiresocket" else nx_body
    k = KINDS[kind]
    assert k.read is not None

    def through(call: Any) -> Observation | str:
        try:
            return _whole(call())
        except (ParseError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"

    by_read = through(lambda: k.read(body, "s", observed_at, payload, origin,  # type: ignore[misc]
                                     received_at))
    by_parse = through(lambda: k.parse(body, ParseContext("s", received_at, observed_at,
                                                          payload, origin)))
    assert by_read == by_parse


def test_a_plugin_kind_without_read_still_gets_its_context() -> None:
    """A kind without `read` (every plugin's) is called with a ParseContext, as before."""
    seen: list[ParseContext] = []
    nected = KINDS["nected"]

    def parse(body: Any, context: ParseContext) -> Observation:
        seen.append(context)
        return nected.parse(body, context)

    plugin = dataclasses.replace(nected, parse=parse, read=None)
    sources = {"p": dataclasses.replace(FAST["nected-1"], name="p", bound=plugin)}
    obs = parse_line(b'{"source": "p", "observed_at": "2026-11-21T10:00:00Z", "body": '
                     b'{"data": {"invocations": 5}, "code": "success"}}', sources)
    assert obs.samples[0].value == 5.0
    assert seen == [ParseContext("p", None, datetime(2026, 11, 21, 10, tzinfo=UTC),
                                 '{"data": {"invocations": 5}, "code": "success"}', "import")]
