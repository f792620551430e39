"""Nected adapter: GET {base}/dev/usage with a Nected-API-Key header; counter invocations."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from etl.errors import ParseError
from etl.vendors import ParseContext, SimulatedApi, VendorKind, traffic
from etl.vendors.parsing import mapping, number, optional_text, to_payload
from etl.vendors.types import MetricType, Observation, SampleValue, new_tuple

NAME = "nected"
METRICS = ("invocations",)
# Nected documents no number. 10 per minute per key is a conservative guess: the default
# interval is 300 s, so even several sources on one key stay far below it.
RATE_LIMIT = (10, 60.0)


def auth_headers(secret: str) -> dict[str, str]:
    """The request headers that carry a nected API key (never the query string)."""
    return {"Nected-API-Key": secret}


def parse(body: Any, context: ParseContext) -> Observation:
    """One Observation from a usage body.

    Nected's body has no time, so observed_at is the caller's: our UTC clock at the response
    for live polls (`received_at` when `observed_at` is not given), the archive line's
    `observed_at` on import. A 200 whose `code` is not "success" is refused (ParseError).
    """
    return read(body, context.source, context.observed_at, context.payload, context.origin,
                context.received_at)


def read(body: Any, source: str, observed_at: datetime | None, payload: str | None,
         origin: str, received_at: datetime | None = None) -> Observation:
    """`parse` with the context's fields one by one (VendorKind.read: an import's lines)."""
    doc = body if type(body) is dict else mapping(body, "body")
    code = doc.get("code")
    if code != "success":
        message = doc.get("message")
        detail = f": {message}" if isinstance(message, str) and message else ""
        raise ParseError(f"code: vendor reported {code!r} instead of 'success'{detail}"[:300])
    if type(doc.get("message", "")) is not str:  # the helper names a bad one
        optional_text(doc, "message", "message")
    data = doc.get("data")
    if type(data) is not dict:
        data = mapping(data, "data")
    if "invocations" not in data:
        raise ParseError("data.invocations: missing")
    value = number(data["invocations"], "data.invocations")
    at = observed_at or received_at
    if at is None:
        raise ParseError("observed_at: required for a nected response")
    # Built as the tuples themselves, every field given (see new_tuple): per line of an import.
    return new_tuple(Observation, (
        source, NAME, at, payload if payload is not None else to_payload(body),
        (new_tuple(SampleValue, ("invocations", value, None, None, None, None, None)),),
        received_at, origin, (), None))



def url(base_url: str | None, region: str | None) -> str:
    """GET {base_url}/dev/usage, by default https://api.nected.ai/dev/usage."""
    del region
    return (base_url or "https://api.nected.ai").rstrip("/") + "/dev/usage"


# The vendor's documented example (vendor-apis/nected-usage.md).
EXAMPLE_BODY: dict[str, Any] = {"data": {"invocations": 1000}, "code": "success",
                                "message": "Success."}


def simulated_body(at: datetime, seed: int = 0) -> dict[str, Any]:
    """The documented usage body for instant `at`: a counter that resets each month."""
    return {"data": {"invocations": traffic.monthly_counter(at, seed)}, "code": "success",
            "message": "Success."}


def _credential(headers: Mapping[str, str], query: Mapping[str, list[str]]) -> tuple[str, bool]:
    del query
    return headers.get("Nected-API-Key", ""), False


SIMULATED = SimulatedApi(
    path="/dev/usage",
    credential=_credential,
    body=simulated_body,
    errors={
        401: {"code": "UNAUTHORIZED", "message": "Missing/invalid API key"},
        429: {"code": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded"},
        500: {"code": "INTERNAL_SERVER_ERROR", "message": "Unexpected system error"},
        503: {"code": "SERVICE_UNAVAILABLE", "message": "Service unavailable"},
    },
    credential_list="api_keys",
    rate_limit=(60, 60.0),
    refusal={"data": None, "code": "error", "message": "Something went wrong."},
)

KIND = VendorKind(
    name=NAME,
    metrics={"invocations": MetricType.COUNTER},
    secret_keys=("api_key_env", "api_key_file"),
    rate_limit=RATE_LIMIT,
    url=url,
    auth_headers=auth_headers,
    parse=parse,
    read=read,
    config_keys=frozenset({"base_url"}),
    example_body=EXAMPLE_BODY,
    simulated=SIMULATED,
    summary="Nected rule invocations: GET https://api.nected.ai/dev/usage",
)
