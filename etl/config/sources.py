"""The `[[sources]]` table (SPEC 2): `SourceConfig` and the checks of every source key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from etl.config.fields import ENV_NAME_RE, NAME_RE, TopLevel, number, what
from etl.config.focus import SOURCE_FOCUS_KEYS, focus_text
from etl.secrets import read_secret
from etl.vendors import BUILT_IN_KINDS, KINDS, VendorKind, unknown_kind_hint
from etl.vendors.parsing import http_url_problem

MIN_INTERVAL_SECONDS = 5.0
# The longest interval, staleness or timeout a source may set: a year (366 days). Longer
# ones only overflow date arithmetic (timedelta, microsecond counts) far from the config.
MAX_SECONDS = 366 * 24 * 3600.0
REGION_RE = re.compile(r"^[a-z0-9-]+$")
SOURCE_COMMON_KEYS = {
    "name", "kind", "interval_seconds", "staleness_seconds", "timeout_seconds",
} | SOURCE_FOCUS_KEYS


def _kind_keys(kind: VendorKind) -> set[str]:
    """The keys a source of `kind` takes beyond the common ones."""
    return set(kind.config_keys) | set(kind.secret_keys)


# Every key some kind of source accepts: what an entry of unknown kind is checked against.
# (Built-in kinds: the keys docs/configuration.md lists; _any_source_keys() adds plugins'.)
SOURCE_ANY_KEYS = SOURCE_COMMON_KEYS.union(*(_kind_keys(k) for k in BUILT_IN_KINDS.values()))


def _any_source_keys() -> set[str]:
    return SOURCE_COMMON_KEYS.union(*(_kind_keys(k) for k in KINDS.values()))


@dataclass(frozen=True)
class SourceConfig:
    """One `[[sources]]` entry."""

    name: str
    kind: str
    interval_seconds: float
    region: str | None = None
    base_url: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    staleness_seconds: float | None = None
    timeout_seconds: float = 10.0
    # Who bills it and the account billed, as FOCUS names them (SPEC 12; None: its kind, its name).
    vendor_name: str | None = None
    account_id: str | None = None
    # The source's own kind when its definition is in the config (http_json); None: the
    # registered kind `kind`.
    bound: VendorKind | None = field(default=None, compare=False, repr=False)

    @property
    def vendor(self) -> VendorKind:
        """What this source is: its metrics, URL rule, headers, request budget and parse."""
        return self.bound if self.bound is not None else KINDS[self.kind]

    @property
    def metrics(self) -> tuple[str, ...]:
        """The source's fixed metric names, in report order.

        Per-item series come from the history: see `VendorKind.series_metrics`.
        """
        return tuple(self.vendor.metrics)

    @property
    def staleness(self) -> float:
        """Seconds one sample is taken to cover (SPEC 5: 2 x interval unless set)."""
        if self.staleness_seconds is not None:
            return self.staleness_seconds
        return 2 * self.interval_seconds

    @property
    def url(self) -> str:
        """The usage endpoint, by the kind's URL rule."""
        return self.vendor.url(self.base_url, self.region)

    @property
    def secret_origin(self) -> str:
        """Where the credential comes from, for messages (never the value)."""
        env_key, file_key = self.vendor.secret_keys
        if self.secret_env:
            return f"sources.{self.name}.{env_key} (${self.secret_env})"
        return f"sources.{self.name}.{file_key} ({self.secret_file})"

    def read_secret(self) -> str:
        """The credential, read now from its environment variable or file.

        "" when the source names neither: an endpoint that needs no credential.
        """
        if self.secret_env is None and self.secret_file is None:
            return ""
        return read_secret(self.secret_origin, self.secret_env, self.secret_file)


def parse_sources(
    raw_sources: list[Any], top: TopLevel
) -> tuple[list[SourceConfig], dict[str, VendorKind | None]]:
    """The valid sources, and every named entry with its kind (None when unusable).

    A billing rule naming a broken source is checked against its kind rather than told the
    source does not exist.
    """
    sources: list[SourceConfig] = []
    declared: dict[str, VendorKind | None] = {}
    for i, entry in enumerate(raw_sources):
        found: list[str] = []
        name = entry.get("name") if isinstance(entry, dict) else None
        duplicate = isinstance(name, str) and name in declared
        if duplicate:
            found.append(f"sources[{i}].name: duplicate source name {name!r}")
        src = _parse_source(entry, i, found, duplicate=duplicate)
        top.extend(found)
        if isinstance(name, str) and not duplicate:
            declared[name] = src.vendor if src is not None else _plain_kind(entry)
            if src is not None:
                sources.append(src)
    return sources, declared


def _plain_kind(entry: Mapping[str, Any]) -> VendorKind | None:
    """The registered kind of a broken entry, when its metrics do not depend on the entry."""
    name = entry.get("kind")
    kind = KINDS.get(name) if isinstance(name, str) else None
    return kind if kind is not None and kind.configure is None else None


def _base_url_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be an http:// or https:// URL, not {what(value)}"
    return http_url_problem(value)


def _parse_source(
    entry: Any, i: int, problems: list[str], *, duplicate: bool = False
) -> SourceConfig | None:
    """The source in `entry`, or None once every problem with it is added to `problems`.

    A duplicate is still checked, labelled by its index since its name is taken, but never
    returned. A kind with its own keys (`http_json`) checks them in its `configure` hook.
    """
    if not isinstance(entry, dict):
        problems.append(f"sources[{i}]: must be a table")
        return None
    before = len(problems)
    name, label = _source_name(entry, i, problems, duplicate)
    kind = _source_kind(entry, label, problems)
    interval, staleness, timeout = _source_durations(entry, label, problems)
    region, base_url = _source_location(entry, label, kind, problems)
    secret_env, secret_file = _source_secret(entry, label, kind, problems)
    vendor_name = focus_text(entry, "vendor_name", label, problems)
    account_id = focus_text(entry, "account_id", label, problems)
    vendor = kind
    if kind is not None and kind.configure is not None:
        vendor = kind.configure(entry, label, problems)
    if duplicate or len(problems) > before:
        return None
    assert name is not None and kind is not None and vendor is not None
    assert interval is not None and timeout is not None
    return SourceConfig(
        name=name, kind=kind.name, interval_seconds=interval, region=region, base_url=base_url,
        secret_env=secret_env, secret_file=secret_file, staleness_seconds=staleness,
        timeout_seconds=timeout, vendor_name=vendor_name, account_id=account_id,
        bound=vendor if vendor is not kind else None,
    )


def _source_name(
    entry: Mapping[str, Any], i: int, problems: list[str], duplicate: bool
) -> tuple[str | None, str]:
    """(the name if valid, the label its problems carry)."""
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        problems.append(f"sources[{i}].name: required, lowercase letters, digits, '_' or '-' only")
        return None, f"sources[{i}]"
    return name, f"sources[{i}]" if duplicate else f"sources.{name}"


def _source_kind(entry: Mapping[str, Any], label: str, problems: list[str]) -> VendorKind | None:
    """The registered kind, after the keys it does not take are reported."""
    kind = entry.get("kind")
    # Listing the kinds loads the plugins' (etl.vendors.KINDS): only a message needs them all.
    if kind is None:
        problems.append(f"{label}.kind: required, one of: {', '.join(KINDS)}")
    elif not isinstance(kind, str):
        problems.append(f"{label}.kind: must be a string, not {what(kind)} "
                        f"(one of: {', '.join(KINDS)})")
    elif kind not in KINDS:
        problems.append(f"{label}.kind: unknown kind {kind!r} (expected one of: "
                        f"{', '.join(KINDS)}){unknown_kind_hint(kind)}")
    found = KINDS.get(kind) if isinstance(kind, str) else None
    if found is not None:
        for key in sorted(set(entry) - SOURCE_COMMON_KEYS - _kind_keys(found)):
            problems.append(f"{label}.{key}: unknown key for a {found.name} source")
    else:
        # Without a kind, still report what no kind accepts, so one run shows everything.
        for key in sorted(set(entry) - _any_source_keys()):
            problems.append(f"{label}.{key}: unknown key")
    return found


def _source_durations(
    entry: Mapping[str, Any], label: str, problems: list[str]
) -> tuple[float | None, float | None, float | None]:
    """(interval_seconds, staleness_seconds or None when unset, timeout_seconds)."""
    interval = number(entry.get("interval_seconds", 60))
    if interval is None or not MIN_INTERVAL_SECONDS <= interval <= MAX_SECONDS:
        problems.append(
            f"{label}.interval_seconds: must be a finite number of seconds from "
            f"{MIN_INTERVAL_SECONDS:g} to {MAX_SECONDS:.0f} (366 days)"
        )
    staleness = entry.get("staleness_seconds")
    if staleness is not None:
        staleness = number(staleness)
        if staleness is None or not 0 < staleness <= MAX_SECONDS:
            problems.append(f"{label}.staleness_seconds: must be a finite positive number of seconds "
                            f"up to {MAX_SECONDS:.0f} (366 days)")
    timeout = number(entry.get("timeout_seconds", 10))
    if timeout is None or not 0 < timeout <= MAX_SECONDS:
        problems.append(f"{label}.timeout_seconds: must be a finite positive number of seconds "
                        f"up to {MAX_SECONDS:.0f} (366 days)")
    return interval, staleness, timeout


def _source_location(
    entry: Mapping[str, Any], label: str, kind: VendorKind | None, problems: list[str]
) -> tuple[str | None, str | None]:
    """(region, base_url), and one of the kind's `one_of_keys` when it has them."""
    region = entry.get("region")
    base_url = entry.get("base_url")
    if base_url is not None:
        url_problem = _base_url_problem(base_url)
        if url_problem:
            problems.append(f"{label}.base_url: {url_problem}")
    if region is not None and (not isinstance(region, str) or not REGION_RE.fullmatch(region)):
        problems.append(f"{label}.region: must be lowercase letters, digits or '-'")
    one_of = kind.one_of_keys if kind is not None else ()
    if kind is not None and one_of and all(entry.get(key) is None for key in one_of):
        problems.append(f"{label}.{one_of[0]}: required for a {kind.name} source "
                        f"(or set {' or '.join(one_of[1:])})")
    return region, base_url


def _source_secret(
    entry: Mapping[str, Any], label: str, kind: VendorKind | None, problems: list[str]
) -> tuple[str | None, str | None]:
    """Return (environment variable, file) naming the credential.

    Checked against every kind's keys when the kind is unknown.
    """
    pairs = [kind.secret_keys] if kind is not None else sorted(
        {k.secret_keys for k in KINDS.values()})
    for env_key, file_key in pairs:
        secret_env, secret_file = entry.get(env_key), entry.get(file_key)
        if kind is not None and secret_env is not None and secret_file is not None:
            problems.append(f"{label}.{env_key}: set only one of {env_key} or {file_key}")
        elif kind is not None and kind.secret_required and secret_env is None is secret_file:
            problems.append(f"{label}.{env_key}: set exactly one of {env_key} or {file_key}")
        if secret_env is not None and (
            not isinstance(secret_env, str) or not ENV_NAME_RE.fullmatch(secret_env)
        ):
            problems.append(
                f"{label}.{env_key}: must name an environment variable (letters, digits, '_')"
            )
        if secret_file is not None and (
            not isinstance(secret_file, str) or not secret_file or not secret_file.isprintable()
        ):
            problems.append(f"{label}.{file_key}: must be a file path")
    if kind is None:
        return None, None
    return entry.get(kind.secret_keys[0]), entry.get(kind.secret_keys[1])
