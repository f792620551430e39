"""An example vendor plugin for usage-etl: Acme's usage API as the kind "acme" (docs/vendors.md).

GET {base_url}/usage.json with the key in an `X-Acme-Key` header answers
``{"calls": 1200, "calls_limit": 100000, "at": "2026-11-21T10:00:00Z"}``.
Written for plugin API 2: ``parse(body, context)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from etl.errors import ParseError
from etl.vendors import ParseContext, VendorKind
from etl.vendors.parsing import mapping, number, parse_timestamp, to_payload
from etl.vendors.types import MetricType, Observation, SampleValue


def read_calls(body: Any) -> tuple[SampleValue, datetime]:
    """The `calls` sample (value and plan limit) and the body's own time `at`."""
    doc = mapping(body, "body")
    if "calls" not in doc:
        raise ParseError("calls: missing")
    value = number(doc["calls"], "calls")
    raw_limit = doc.get("calls_limit")
    # SPEC 5: a missing, null or negative limit is no limit.
    limit = float(raw_limit) if type(raw_limit) in (int, float) and raw_limit >= 0 else None
    return SampleValue("calls", value, limit), parse_timestamp(doc.get("at"), "at")


def parse(body: Any, context: ParseContext) -> Observation:
    """One Observation: the counter `calls`, its plan limit, the body's own time `at`."""
    sample, at = read_calls(body)
    payload = context.payload if context.payload is not None else to_payload(body)
    return Observation(context.source, "acme", at, payload, (sample,), context.received_at,
                       context.origin)


KIND = VendorKind(
    name="acme",
    metrics={"calls": MetricType.COUNTER},
    secret_keys=("token_env", "token_file"),
    rate_limit=(30, 60.0),
    url=lambda base_url, region: (base_url or "https://api.acme.example").rstrip("/")
    + "/usage.json",
    auth_headers=lambda secret: {"X-Acme-Key": secret},
    parse=parse,
    time_in_body=True,
    config_keys=frozenset({"base_url"}),
    example_body={"calls": 1200, "calls_limit": 100000, "at": "2026-11-21T10:00:00Z"},
    summary="Acme API calls (an example plugin)",
)
