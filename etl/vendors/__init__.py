"""The vendor side: one module per kind and the registry of kinds (no SQLAlchemy, no HTTP).

A kind is described once, as a `VendorKind`: the built-in ones in their own modules
(`wiresocket`, `nected`), sources defined in config by `http_json`, and kinds from other
packages through the entry-point group `usage_etl.vendors` (SPEC 7), loaded when this
registry first needs them. Config validation, the collector, import, export, the writer,
the reports and the simulator read kinds from here; nothing outside `etl.vendors` names a
vendor. May import: the standard library, `etl.errors` and `jmespath`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from etl.vendors.parse_api import PLUGIN_API_VERSION as PLUGIN_API_VERSION
from etl.vendors.parse_api import Parse, adapt_parse
from etl.vendors.parse_api import ParseContext as ParseContext
from etl.vendors.types import MAX_METRIC_LEN, MetricType

if TYPE_CHECKING:
    from etl.vendors.history import HistorySpec
    from etl.vendors.types import Observation

ENTRY_POINT_GROUP = "usage_etl.vendors"
# What the database keeps of a kind's name (snapshots.kind, series.kind).
KIND_NAME_RE = re.compile(r"^[a-z0-9_-]{1,16}$")
BUILT_IN = "built in"

log = logging.getLogger("etl.vendors")


# (the source's whole config table, its label such as "sources.acme", the problem list) ->
# the kind bound to that source, or None once its problems are appended.
Configure = Callable[[Mapping[str, Any], str, list[str]], "VendorKind | None"]
# VendorKind.read: (body, source, observed_at, payload, origin, received_at=None).
Read = Callable[..., "Observation"]


@dataclass(frozen=True)
class SimulatedApi:
    """How `usage-etl simulate` (etl.runtime.simulator) answers for a kind.

    `credential` reads (credential, was it in the query string) from a request's headers
    and parsed query; `body` is the usage body at an instant for a seed; `errors` the error
    bodies by HTTP status; `refusal` a 200 body the kind must refuse (the `error_code`
    fault), None when the kind has none.
    """

    path: str
    credential: Callable[[Mapping[str, str], Mapping[str, list[str]]], tuple[str, bool]]
    body: Callable[[datetime, int], Any]
    errors: Mapping[int, Mapping[str, Any]]
    # Which of the simulator's credential lists this API accepts: "tokens" or "api_keys".
    credential_list: str = "tokens"
    rate_limit: tuple[int, float] = (60, 60.0)
    refusal: Any = None
    # Archive lines for this kind carry `observed_at` (the body has no time of its own).
    line_needs_observed_at: bool = True


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
            config_keys=frozenset({"base_url"}),
            example_body={"calls": 12},
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
    # Request headers for a credential ("" when the source has none: secret_required False).
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
    # A documented usage body (JSON value): `usage-etl vendors` and the contract tests use it.
    example_body: Any = None
    # How the simulator answers for this kind (None: it does not simulate it).
    simulated: SimulatedApi | None = None
    # False: a source may set neither secret key (the endpoint needs no credential).
    secret_required: bool = True
    # NAME -> type for metrics with one series per list item, stored as NAME:KEY (SPEC 7).
    series_metrics: Mapping[str, MetricType] = field(default_factory=dict)
    # Builds the kind of one source from its own keys (http_json); None: every source of
    # the kind is the same.
    configure: Configure | None = None
    # Where the kind comes from: "built in", or "plugin DIST VERSION".
    provider: str = BUILT_IN
    # One line for `usage-etl vendors`.
    summary: str = ""
    # A history source's windows, pages and buckets (SPEC 10); None: it reads "now".
    history: HistorySpec | None = None
    # Reads the secrets a source adds beyond its credential (basic-auth user name, secret
    # headers: SPEC 10); returns their values, raises SecretError naming each one unset.
    more_secrets: Callable[[], list[str]] | None = None
    # Built-in kinds: `parse` with the context's fields passed one by one, (body, source,
    # observed_at, payload, origin, received_at=None), returning what `parse` returns for
    # ParseContext(source, received_at, observed_at, payload, origin). An archive import
    # calls it for lines without a window, and so builds no ParseContext per line (a frozen
    # dataclass: a tenth of a line's parse). None: the import calls `parse`.
    read: Read | None = None

    def metric_type_of(self, metric: str) -> MetricType | None:
        """Return the type of series `metric` of a source of this kind, or None if it has none.

        A per-item series is named `NAME:KEY`.
        """
        found = self.metrics.get(metric)
        if found is None and ":" in metric:
            found = self.series_metrics.get(metric.split(":", 1)[0])
        return found

    def has_limit(self, metric: str) -> bool:
        """Whether the vendor reports a plan limit for series `metric` (SPEC 5)."""
        return metric in self.limited_metrics or (
            ":" in metric and metric.split(":", 1)[0] in self.limited_metrics)

    def metric_names(self) -> str:
        """The metrics a billing rule or alert may name, for messages."""
        return ", ".join([*self.metrics, *(f"{m}:KEY" for m in self.series_metrics)])


@dataclass(frozen=True)
class PluginFailure:
    """An entry point of `usage_etl.vendors` that did not give a usable kind."""

    name: str
    target: str
    reason: str


def _builtin() -> dict[str, VendorKind]:
    from etl.vendors import http_json, nected, wiresocket

    return {k.name: k for k in (wiresocket.KIND, nected.KIND, http_json.KIND)}


def load_plugins(kinds: dict[str, VendorKind], failures: list[PluginFailure]) -> None:
    """Add the kinds of entry-point group `usage_etl.vendors` to `kinds`.

    An entry point names a VendorKind (or a callable returning one) whose `name` is the
    entry point's name. One that fails to import, gives something else, or reuses a taken
    name is recorded in `failures` with the reason and never stops the others.
    """
    from importlib import metadata  # here, not at start-up: it costs more than the CLI

    try:
        points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    except Exception as exc:  # noqa: BLE001 - broken metadata must not stop the built-in kinds
        failures.append(PluginFailure("*", ENTRY_POINT_GROUP, f"cannot list plugins: {exc}"))
        return
    for point in points:
        try:
            kind = _load_point(point, kinds)
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything at import
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            failures.append(PluginFailure(point.name, point.value, reason))
            log.warning("vendor plugin %s (%s) not loaded: %s", point.name, point.value, reason)
            continue
        kinds[kind.name] = kind


def _load_point(point: Any, kinds: Mapping[str, VendorKind]) -> VendorKind:
    """The kind an importlib.metadata.EntryPoint names, checked (raises on anything wrong)."""
    loaded = point.load()
    kind = loaded if isinstance(loaded, VendorKind) else loaded() if callable(loaded) else loaded
    if not isinstance(kind, VendorKind):
        raise TypeError(f"gives {type(kind).__name__}, not an etl.vendors.VendorKind")
    if kind.name != point.name:
        raise ValueError(f"the kind is named {kind.name!r}, the entry point {point.name!r}")
    if not KIND_NAME_RE.fullmatch(kind.name):
        raise ValueError("a kind's name is 1 to 16 lowercase letters, digits, '_' or '-'")
    too_long = [m for m in kind.metrics if len(m) > MAX_METRIC_LEN]
    if too_long:
        raise ValueError(f"metric {too_long[0]!r} is longer than {MAX_METRIC_LEN} characters")
    if kind.name in kinds:
        raise ValueError(f"kind {kind.name!r} is already installed ({kinds[kind.name].provider})")
    # A parse written for plugin API 1 is adapted; another signature is refused (TypeError).
    parse = adapt_parse(kind.parse)
    dist = getattr(point, "dist", None)
    provider = f"plugin {dist.name} {dist.version}" if dist is not None else "plugin"
    if kind.provider != BUILT_IN and parse is kind.parse:
        return kind
    from dataclasses import replace

    return replace(kind, parse=parse,
                   provider=provider if kind.provider == BUILT_IN else kind.provider)


class _Registry(dict[str, VendorKind]):
    """The kinds by name: the built-in ones, and the plugins' loaded on first need.

    Scanning the installed distributions' entry points costs more than the rest of the
    command line's start-up (`usage-etl --help` needs no kind), so it waits until a kind
    that is not built in is asked for, or the registry is listed.
    """

    _loaded = False

    def load(self) -> None:
        """Load the plugin kinds (once; later calls do nothing)."""
        if not self._loaded:
            self._loaded = True
            load_plugins(self, PLUGIN_FAILURES)

    def __missing__(self, name: str) -> VendorKind:
        # Only a kind not found yet loads the plugins: a found one costs a plain dict lookup
        # (an import asks once per archive line).
        self.load()
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if dict.__contains__(self, name):
            return True
        self.load()
        return dict.__contains__(self, name)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self else default

    def __iter__(self) -> Iterator[str]:
        self.load()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self.load()
        return dict.__len__(self)

    def keys(self) -> Any:
        self.load()
        return dict.keys(self)

    def values(self) -> Any:
        self.load()
        return dict.values(self)

    def items(self) -> Any:
        self.load()
        return dict.items(self)


PLUGIN_FAILURES: list[PluginFailure] = []
BUILT_IN_KINDS: dict[str, VendorKind] = _builtin()
KINDS: _Registry = _Registry(BUILT_IN_KINDS)


def get(kind: str) -> VendorKind:
    """The registered kind `kind` (KeyError for an unknown kind; config validation prevents it)."""
    return KINDS[kind]


def metric_type(kind: str, metric: str) -> MetricType:
    """The type of `metric` for a source of `kind` (KeyError if it has no such metric)."""
    return KINDS[kind].metrics[metric]


def plugin_failures() -> list[PluginFailure]:
    """The entry points of `usage_etl.vendors` that did not load, with the reasons."""
    KINDS.load()
    return PLUGIN_FAILURES


def unknown_kind_hint(kind: str) -> str:
    """Why `kind` may be missing: the plugin of that name that failed to load, or ""."""
    for failure in plugin_failures():
        if failure.name == kind:
            return f" (plugin {failure.target} failed to load: {failure.reason})"
    return ""
