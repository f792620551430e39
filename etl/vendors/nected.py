"""Nected adapter: GET {base}/dev/usage with a Nected-API-Key header; counter invocations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from etl.errors import ParseError
from etl.vendors import VendorKind
from etl.vendors.parsing import mapping, number, optional_text, to_payload
from etl.vendors.types import MetricType, Observation, SampleValue

NAME = "nected"
METRICS = ("invocations",)
# Nected documents no number. 10 per minute per key is a conservative guess: the default
# interval is 300 s, so even several sources on one key stay far below it.
RATE_LIMIT = (10, 60.0)


def auth_headers(secret: str) -> dict[str, str]:
    """The request headers that carry a nected API key (never the query string)."""
    return {"Nected-API-Key": secret}


def parse(
    source: str,
    body: Any,
    *,
    received_at: datetime | None = None,
    observed_at: datetime | None = None,
    payload: str | None = None,
    origin: str = "collect",
) -> Observation:
    """One Observation from a usage body.

    Nected's body has no time, so observed_at is the caller's: our UTC clock at the response
    for live polls (`received_at` when `observed_at` is not given), the archive line's
    `observed_at` on import. A 200 whose `code` is not "success" is refused (ParseError).
    """
    doc = mapping(body, "body")
    code = doc.get("code")
    if code != "success":
        message = doc.get("message")
        detail = f": {message}" if isinstance(message, str) and message else ""
        raise ParseError(f"code: vendor reported {code!r} instead of 'success'{detail}"[:300])
    optional_text(doc, "message", "message")
    data = mapping(doc.get("data"), "data")
    if "invocations" not in data:
        raise ParseError("data.invocations: missing")
    value = number(data["invocations"], "data.invocations")
    at = observed_at or received_at
    if at is None:
        raise ParseError("observed_at: required for a nected response")
    # Positional: an import builds one per line, and keywords cost NamedTuple twice as much.
    return Observation(source, NAME, at, payload if payload is not None else to_payload(body),
                       (SampleValue("invocations", value),), received_at, origin)



def url(base_url: str | None, region: str | None) -> str:
    """GET {base_url}/dev/usage, by default https://api.nected.ai/dev/usage."""
    del region
    return (base_url or "https://api.nected.ai").rstrip("/") + "/dev/usage"


KIND = VendorKind(
    name=NAME,
    metrics={"invocations": MetricType.COUNTER},
    secret_keys=("api_key_env", "api_key_file"),
    rate_limit=RATE_LIMIT,
    url=url,
    auth_headers=auth_headers,
    parse=parse,
    config_keys=frozenset({"base_url"}),
)
