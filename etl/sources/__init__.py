"""Vendor adapters, one module per vendor kind, and the registry that maps a kind to its adapter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etl.sources import nected, wiresocket
from etl.store import Observation


@dataclass(frozen=True)
class Adapter:
    """What the collector and the importer need to know about one vendor kind."""

    kind: str
    # (requests, seconds): never send one credential more than this, retries included.
    rate_limit: tuple[int, float]
    auth_headers: Callable[[str], dict[str, str]]
    parse: Callable[..., Observation]

    def parse_body(
        self,
        source: str,
        body: Any,
        *,
        received_at: datetime | None = None,
        observed_at: datetime | None = None,
        payload: str | None = None,
        origin: str = "collect",
    ) -> Observation:
        """Validate `body` and read its samples (raises etl.errors.ParseError)."""
        return self.parse(
            source,
            body,
            received_at=received_at,
            observed_at=observed_at,
            payload=payload,
            origin=origin,
        )


ADAPTERS: dict[str, Adapter] = {
    mod.KIND: Adapter(mod.KIND, mod.RATE_LIMIT, mod.auth_headers, mod.parse)
    for mod in (wiresocket, nected)
}


def adapter(kind: str) -> Adapter:
    """The adapter for a vendor kind (KeyError for an unknown kind; config validation prevents it)."""
    return ADAPTERS[kind]
