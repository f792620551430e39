"""Vendor adapters: the documented example payloads parse, bad bodies are refused clearly."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from etl.errors import ParseError
from etl.vendors import get as vendor_kind
from etl.vendors.parse_api import ParseContext

# Verbatim from vendor-apis/wiresocket-usage.md.
WIRESOCKET_EXAMPLE = """{
  "tenantId": "550e8400-e29b-41d4-a716-446655440000",
  "appId": "770k8400-f29b-41d4-b716-556655449999",
  "usage": {
    "connections": {
      "current": 82,
      "limit": 100,
      "percent": 82.0,
      "status": "warning"
    },
    "documents": {
      "current": 4,
      "limit": 20,
      "percent": 20.0,
      "status": "healthy"
    }
  },
  "timestamp": "2026-02-25T14:40:00.000Z"
}"""

# Verbatim from vendor-apis/nected-usage.md.
NECTED_EXAMPLE = """{
  "data": {
    "invocations": 1000
  },
  "code": "success",
  "message": "Success."
}"""

WS = vendor_kind("wiresocket")
NECTED = vendor_kind("nected")
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def ws_body(**changes: object) -> dict:
    body = json.loads(WIRESOCKET_EXAMPLE)
    body.update(changes)
    return body


def test_wiresocket_documented_example_parses() -> None:
    obs = WS.parse(json.loads(WIRESOCKET_EXAMPLE), ParseContext("ws-prod", payload=WIRESOCKET_EXAMPLE))
    assert obs.observed_at == datetime(2026, 2, 25, 14, 40, tzinfo=UTC)
    values = {s.metric: (s.value, s.limit, s.status) for s in obs.samples}
    assert values == {"connections": (82, 100, "warning"), "documents": (4, 20, "healthy")}
    # The non-UUID appId and the tenant are kept, as sent, in the raw payload.
    assert json.loads(obs.payload)["appId"] == "770k8400-f29b-41d4-b716-556655449999"
    assert obs.payload == WIRESOCKET_EXAMPLE


def test_nected_documented_example_parses_with_our_clock() -> None:
    obs = NECTED.parse(json.loads(NECTED_EXAMPLE), ParseContext("rules", received_at=NOW))
    assert obs.observed_at == NOW
    assert [(s.metric, s.value) for s in obs.samples] == [("invocations", 1000)]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-02-25T14:40:00.000Z", datetime(2026, 2, 25, 14, 40, tzinfo=UTC)),
        ("2026-02-25T14:40:00Z", datetime(2026, 2, 25, 14, 40, tzinfo=UTC)),
        ("2026-02-25T15:40:00+01:00", datetime(2026, 2, 25, 14, 40, tzinfo=UTC)),
        ("2026-02-25T14:40:00.123456789Z", datetime(2026, 2, 25, 14, 40, 0, 123456, tzinfo=UTC)),
        # Without a zone the vendor's time is taken as UTC (docs/collecting.md).
        ("2026-02-25T14:40:00", datetime(2026, 2, 25, 14, 40, tzinfo=UTC)),
        ("2026-02-25T14:40:00.500", datetime(2026, 2, 25, 14, 40, 0, 500000, tzinfo=UTC)),
        ("2026-02-25 14:40", datetime(2026, 2, 25, 14, 40, tzinfo=UTC)),
    ],
)
def test_every_wiresocket_timestamp_form_is_read_as_that_utc_instant(stamp: str, expected: datetime) -> None:
    observed = WS.parse(ws_body(timestamp=stamp), ParseContext("ws")).observed_at
    assert observed == expected and observed.utcoffset() == timedelta(0)


def test_wiresocket_timestamp_without_zone_is_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        observed = WS.parse(ws_body(timestamp="2026-07-01T09:30:00"), ParseContext("ws")).observed_at
    finally:
        monkeypatch.undo()
        time.tzset()
    assert observed == datetime(2026, 7, 1, 9, 30, tzinfo=UTC)


def test_unknown_fields_are_kept_not_refused() -> None:
    body = ws_body(region="eu", newThing={"x": 1})
    body["usage"]["connections"]["trend"] = "up"
    obs = WS.parse(body, ParseContext("ws"))
    assert json.loads(obs.payload)["newThing"] == {"x": 1}
    assert json.loads(obs.payload)["usage"]["connections"]["trend"] == "up"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop("timestamp"), "timestamp"),
        (lambda b: b.update(timestamp="yesterday"), "timestamp"),
        (lambda b: b.update(timestamp="2026-02-25"), "timestamp"),
        (lambda b: b["usage"].pop("documents"), "usage.documents"),
        (lambda b: b["usage"]["connections"].pop("current"), "usage.connections.current"),
        (lambda b: b["usage"]["connections"].update(current=-1), "usage.connections.current"),
        (lambda b: b["usage"]["connections"].update(current="82"), "usage.connections.current"),
        (lambda b: b["usage"]["connections"].update(current=True), "usage.connections.current"),
        (lambda b: b.update(appId=42), "appId"),
    ],
)
def test_wiresocket_bad_bodies_name_the_field(change, message: str) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(WIRESOCKET_EXAMPLE)
    change(body)
    with pytest.raises(ParseError, match=message.replace(".", r"\.")):
        WS.parse(body, ParseContext("ws"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"data": {"invocations": 5}, "code": "error", "message": "Boom"}, "code"),
        ({"data": {"invocations": 5}, "message": "no code"}, "code"),
        ({"data": {}, "code": "success"}, "data.invocations"),
        ({"data": {"invocations": float("nan")}, "code": "success"}, "data.invocations"),
        ({"data": {"invocations": -3}, "code": "success"}, "data.invocations"),
        ({"code": "success"}, "data"),
        ([1, 2], "body"),
    ],
)
def test_nected_bad_bodies_are_refused(body: object, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        NECTED.parse(body, ParseContext("rules", received_at=NOW))


def test_credentials_only_go_in_headers() -> None:
    assert WS.auth_headers("abc123") == {"Authorization": "Bearer abc123"}
    assert NECTED.auth_headers("k-999") == {"Nected-API-Key": "k-999"}
