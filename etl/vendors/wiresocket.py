"""WireSocket adapter: GET {base}/usage with a bearer token; gauges connections and documents."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from etl.errors import ParseError
from etl.vendors import ParseContext, SimulatedApi, VendorKind, traffic
from etl.vendors.parsing import (
    STATUS_MAX_LEN,
    limit_value,
    mapping,
    number,
    optional_status,
    optional_text,
    parse_timestamp,
    to_payload,
)
from etl.vendors.types import MetricType, Observation, SampleValue, new_tuple

NAME = "wiresocket"
METRICS = ("connections", "documents")
# "this endpoint allows 12 requests per minute" (vendor docs), retries included.
RATE_LIMIT = (12, 60.0)
# Field names for error messages, built once rather than per line of an archive.
_FIELDS = {m: (f"usage.{m}", f"usage.{m}.current") for m in METRICS}


def auth_headers(secret: str) -> dict[str, str]:
    """The credential as a header; never the documented `?token=` form (URLs reach logs)."""
    return {"Authorization": f"Bearer {secret}"}


def parse(body: Any, context: ParseContext) -> Observation:
    """One Observation from a usage body; observed_at is always the body's `timestamp`.

    The context's `observed_at` is ignored: the vendor's timestamp is the observation time
    (SPEC 5). tenantId, appId and any unknown fields stay in the raw payload; identifiers are
    opaque strings, never checked for a UUID shape.
    """
    return read(body, context.source, context.observed_at, context.payload, context.origin,
                context.received_at)


def read(body: Any, source: str, observed_at: datetime | None, payload: str | None,
         origin: str, received_at: datetime | None = None) -> Observation:
    """`parse` with the context's fields one by one (VendorKind.read: an import's lines)."""
    del observed_at  # the body's timestamp is the observation time
    # Each check calls its helper (which names the problem) only when the value is not the
    # common one: an import runs this for every line.
    doc = body if type(body) is dict else mapping(body, "body")
    for key in ("tenantId", "appId"):
        if type(doc.get(key, "")) is not str:
            optional_text(doc, key, key)
    at = parse_timestamp(doc.get("timestamp"), "timestamp")
    usage = doc.get("usage")
    if type(usage) is not dict:
        usage = mapping(usage, "usage")
    samples = []
    for metric in METRICS:
        f_entry, f_current = _FIELDS[metric]
        entry = usage.get(metric)
        if type(entry) is not dict:
            entry = mapping(entry, f_entry)
        if "current" not in entry:
            raise ParseError(f"{f_current}: missing")
        value = number(entry["current"], f_current)
        # limit, percent and status describe the reading and never refuse it (SPEC 5): an
        # "unlimited" plan sends -1 or null; percent is ours to compute, so it is not read.
        status = entry.get("status")
        if type(status) is not str or len(status) > STATUS_MAX_LEN:
            status = optional_status(entry, "status")
        # Built as the tuple itself, every field given (see new_tuple): per line of an import.
        samples.append(new_tuple(SampleValue, (metric, value, limit_value(entry.get("limit")),
                                               status or None, None, None, None)))
    return new_tuple(Observation, (source, NAME, at,
                                   payload if payload is not None else to_payload(body),
                                   tuple(samples), received_at, origin, (), None))


def url(base_url: str | None, region: str | None) -> str:
    """GET {base_url}/usage, by default https://{region}.ws.wiresocket.com/usage."""
    base = base_url or f"https://{region}.ws.wiresocket.com"
    return base.rstrip("/") + "/usage"


CONNECTIONS_LIMIT = 100
DOCUMENTS_LIMIT = 20
# The vendor's documented example (vendor-apis/wiresocket-usage.md).
EXAMPLE_BODY: dict[str, Any] = {
    "tenantId": "550e8400-e29b-41d4-a716-446655440000",
    "appId": "770k8400-f29b-41d4-b716-556655449999",
    "usage": {
        "connections": {"current": 82, "limit": 100, "percent": 82.0, "status": "warning"},
        "documents": {"current": 4, "limit": 20, "percent": 20.0, "status": "healthy"},
    },
    "timestamp": "2026-02-25T14:40:00.000Z",
}


def simulated_body(at: datetime, seed: int = 0) -> dict[str, Any]:
    """The documented usage body for instant `at` (aware), from the traffic model."""
    at = at.astimezone(UTC)
    connections = traffic.gauge(seed, "connections", at, 12, 72, 30, 6)
    documents = traffic.gauge(seed, "documents", at, 2, 13, 7, 2)
    tenant = uuid.UUID(bytes=hashlib.blake2b(repr((seed, "tenant")).encode(),
                                             digest_size=16).digest(), version=4)
    # Not a UUID on purpose (like the vendor's own example): identifiers are opaque.
    app = f"770k{int(traffic.unit(seed, 'app') * 16**4):04x}-f29b-41d4-b716-{seed % 16**12:012x}"

    def metric(current: int, limit: int) -> dict[str, Any]:
        percent = round(current / limit * 100, 1)
        return {"current": current, "limit": limit, "percent": percent,
                "status": traffic.level_status(percent)}

    return {
        "tenantId": str(tenant),
        "appId": app,
        "usage": {
            "connections": metric(connections, CONNECTIONS_LIMIT),
            "documents": metric(documents, DOCUMENTS_LIMIT),
        },
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
    }


def _credential(headers: Mapping[str, str], query: Mapping[str, list[str]]) -> tuple[str, bool]:
    """The bearer token, else the documented `?token=` (and whether it came that way)."""
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:].strip(), False
    token = query.get("token", [""])[0]
    return token, bool(token)


SIMULATED = SimulatedApi(
    path="/usage",
    credential=_credential,
    body=simulated_body,
    errors={
        401: {"error": "unauthorized", "message": "JWT is missing or invalid"},
        429: {"error": "rate_limited", "message": "This endpoint allows 12 requests per minute"},
        500: {"error": "internal", "message": "Internal error"},
        503: {"error": "unavailable", "message": "Node degraded or overloaded"},
    },
    credential_list="tokens",
    rate_limit=RATE_LIMIT,
    line_needs_observed_at=False,
)

KIND = VendorKind(
    name=NAME,
    metrics={m: MetricType.GAUGE for m in METRICS},
    secret_keys=("token_env", "token_file"),
    rate_limit=RATE_LIMIT,
    url=url,
    auth_headers=auth_headers,
    parse=parse,
    read=read,
    time_in_body=True,
    config_keys=frozenset({"region", "base_url"}),
    one_of_keys=("region", "base_url"),
    display_fields={"tenantId": "tenantId", "appId": "appId"},
    example_body=EXAMPLE_BODY,
    simulated=SIMULATED,
    summary="WireSocket realtime usage: GET https://REGION.ws.wiresocket.com/usage",
    limited_metrics=frozenset(METRICS),
)
