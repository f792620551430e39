"""WireSocket adapter: GET {base}/usage with a bearer token; gauges connections and documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from etl.errors import ParseError
from etl.vendors import VendorKind
from etl.vendors.parsing import (
    STATUS_MAX_LEN,
    mapping,
    number,
    optional_number,
    optional_text,
    parse_timestamp,
    to_payload,
)
from etl.vendors.types import MetricType, Observation, SampleValue

NAME = "wiresocket"
METRICS = ("connections", "documents")
# "this endpoint allows 12 requests per minute" (vendor docs), retries included.
RATE_LIMIT = (12, 60.0)
# Field names for error messages, built once rather than per line of an archive.
_FIELDS = {m: (f"usage.{m}", f"usage.{m}.current", f"usage.{m}.limit", f"usage.{m}.percent",
               f"usage.{m}.status") for m in METRICS}


def auth_headers(secret: str) -> dict[str, str]:
    """The credential as a header; never the documented `?token=` form (URLs reach logs)."""
    return {"Authorization": f"Bearer {secret}"}


def parse(
    source: str,
    body: Any,
    *,
    received_at: datetime | None = None,
    observed_at: datetime | None = None,
    payload: str | None = None,
    origin: str = "collect",
) -> Observation:
    """One Observation from a usage body; observed_at is always the body's `timestamp`.

    `observed_at` is accepted for a uniform adapter signature and ignored: the vendor's
    timestamp is the observation time (SPEC 5). tenantId, appId and any unknown fields stay
    in the raw payload; identifiers are opaque strings, never checked for a UUID shape.
    """
    del observed_at
    doc = mapping(body, "body")
    for key in ("tenantId", "appId"):
        optional_text(doc, key, key)
    at = parse_timestamp(doc.get("timestamp"), "timestamp")
    usage = mapping(doc.get("usage"), "usage")
    samples = []
    for metric in METRICS:
        f_entry, f_current, f_limit, f_percent, f_status = _FIELDS[metric]
        entry = mapping(usage.get(metric), f_entry)
        if "current" not in entry:
            raise ParseError(f"{f_current}: missing")
        value = number(entry["current"], f_current)
        limit = optional_number(entry, "limit", f_limit)
        optional_number(entry, "percent", f_percent)
        status = optional_text(entry, "status", f_status)
        # Positional: an import builds these per line, and keywords cost twice as much.
        samples.append(SampleValue(metric, value, limit,
                                   status[:STATUS_MAX_LEN] if status is not None else None))
    return Observation(source, NAME, at, payload if payload is not None else to_payload(body),
                       tuple(samples), received_at, origin)


def url(base_url: str | None, region: str | None) -> str:
    """GET {base_url}/usage, by default https://{region}.ws.wiresocket.com/usage."""
    base = base_url or f"https://{region}.ws.wiresocket.com"
    return base.rstrip("/") + "/usage"


KIND = VendorKind(
    name=NAME,
    metrics={m: MetricType.GAUGE for m in METRICS},
    secret_keys=("token_env", "token_file"),
    rate_limit=RATE_LIMIT,
    url=url,
    auth_headers=auth_headers,
    parse=parse,
    time_in_body=True,
    config_keys=frozenset({"region", "base_url"}),
    one_of_keys=("region", "base_url"),
    display_fields={"tenant_id": "tenantId", "app_id": "appId"},
    limited_metrics=frozenset(METRICS),
)
