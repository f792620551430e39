"""The vendor side: one module per kind and the registry of kinds (no SQLAlchemy, no HTTP).

A kind is described once, as a `VendorKind` in its own module; config validation, the
collector, import, export, the writer and the reports read it from here. May import:
the standard library and `etl.errors` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from etl.vendors.types import MetricType, Observation


class Parse(Protocol):
    """Read one vendor body into an Observation (raises etl.errors.ParseError)."""

    def __call__(
        self,
        source: str,
        body: Any,
        *,
        received_at: datetime | None = None,
        observed_at: datetime | None = None,
        payload: str | None = None,
        origin: str = "collect",
    ) -> Observation:
        """Parse `body` of `source` (SPEC 4; raises etl.errors.ParseError naming the field)."""


@dataclass(frozen=True)
class VendorKind:
    """Everything usage-etl knows about one kind of source, in one place.

    Example, a kind whose endpoint returns ``{"calls": 12}`` under a bearer token::

        ACME = VendorKind(
            name="acme",
            metrics={"calls": MetricType.COUNTER},
            secret_keys=("token_env", "token_file"),
            rate_limit=(60, 60.0),
            url=lambda base_url, region: (base_url or "https://api.acme.example") + "/usage",
            auth_headers=lambda secret: {"Authorization": f"Bearer {secret}"},
            parse=parse_acme_body,
        )
    """

    name: str
    # metric -> type, in report order.
    metrics: Mapping[str, MetricType]
    # The config keys naming the credential: (environment variable key, file key).
    secret_keys: tuple[str, str]
    # (requests, seconds): never send one credential more than this, retries included.
    rate_limit: tuple[int, float]
    # The usage URL from the source's `base_url` and `region` (either may be None).
    url: Callable[[str | None, str | None], str]
    auth_headers: Callable[[str], dict[str, str]]
    parse: Parse
    # True when the body carries the observation time (archive lines need no observed_at).
    time_in_body: bool = False
    # Config keys this kind takes beyond the common ones and its secret keys.
    config_keys: frozenset[str] = frozenset()
    # Keys of which one is required (e.g. region or base_url); empty: none.
    one_of_keys: tuple[str, ...] = ()
    # Body fields the reports show for a source of this kind (report column -> body key).
    display_fields: Mapping[str, str] = field(default_factory=dict)
    # Metrics whose vendor reports a plan limit (SPEC 5): the ones an above_pct alert fits.
    limited_metrics: frozenset[str] = frozenset()

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
        return self.parse(source, body, received_at=received_at, observed_at=observed_at,
                          payload=payload, origin=origin)


def _builtin() -> dict[str, VendorKind]:
    from etl.vendors import nected, wiresocket

    return {k.name: k for k in (wiresocket.KIND, nected.KIND)}


KINDS: dict[str, VendorKind] = _builtin()


def get(kind: str) -> VendorKind:
    """The registered kind `kind` (KeyError for an unknown kind; config validation prevents it)."""
    return KINDS[kind]


def metric_type(kind: str, metric: str) -> MetricType:
    """The type of `metric` for a source of `kind` (KeyError if it has no such metric)."""
    return KINDS[kind].metrics[metric]
