"""The example plugin as written for plugin API 1 (`parse(source, body, *, ...)`): kind "acme1".

usage-etl recognises the version 1 signature and adapts it (docs/vendors.md).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from acme_usage import KIND as ACME
from acme_usage import read_calls

from etl.vendors.parsing import to_payload
from etl.vendors.types import Observation


def parse(source: str, body: Any, *, received_at: datetime | None = None,
          observed_at: datetime | None = None, payload: str | None = None,
          origin: str = "collect") -> Observation:
    """One Observation, as a version 1 parse function reads it."""
    del observed_at  # the body carries the observation time
    sample, at = read_calls(body)
    return Observation(source, "acme1", at, payload if payload is not None else to_payload(body),
                       (sample,), received_at, origin)


KIND = replace(ACME, name="acme1", parse=parse, summary="Acme API calls (plugin API 1)")
