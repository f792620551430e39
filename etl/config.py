"""Load and validate the TOML config (SPEC section 2); every problem is reported at once."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etl.alerts.rules import (
    AlertRule,
    Condition,
    EmailNotifier,
    Notifier,
    NotifierKind,
    SecretRef,
    WebhookNotifier,
    webhook_url,
)
from etl.billing_rules import (
    BILLING_KEYS,
    Aggregation,
    BillingRule,
    Credit,
    bounded_decimal,
    decimal_value,
    parse_aggregation,
    parse_pricing,
)
from etl.errors import ConfigError, SecretError
from etl.secrets import read_secret
from etl.vendors import BUILT_IN_KINDS, KINDS, VendorKind, unknown_kind_hint
from etl.vendors.parsing import http_url_problem
from etl.vendors.types import MetricType

DEFAULT_CONFIG_PATH = "usage-etl.toml"
DEFAULT_DATABASE_URL = "sqlite:///usage.db"
DEFAULT_REPORTS_DIR = "reports-out"
DEFAULT_SPOOL_DIR = ".usage-etl-spool"
# A config file is a few KB; a larger one is refused unread (`--config /dev/zero`).
MAX_CONFIG_BYTES = 1024 * 1024
MIN_INTERVAL_SECONDS = 5.0
# The longest interval, staleness or timeout a source may set: a year (366 days). Longer
# ones only overflow date arithmetic (timedelta, microsecond counts) far from the config.
MAX_SECONDS = 366 * 24 * 3600.0
# Config money and quantities (included, prices): at most 10^15, the largest reading
# (etl.vendors.parsing.MAX_READING), and at most 12 decimal places; anything beyond is a
# typo or hostile ("1e999999999") and cannot be billed exactly (docs/configuration.md).
NAME_RE = re.compile(r"^[a-z0-9_-]+$")
REGION_RE = re.compile(r"^[a-z0-9-]+$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DB_URL_RE = re.compile(r"^(?P<backend>[A-Za-z0-9]+)(?:\+(?P<driver>[A-Za-z0-9_]+))?://(?P<rest>.*)$", re.S)

TOP_KEYS = {
    "database_url", "timezone", "reports_dir", "spool_dir", "sources", "billing", "alerts",
    "notifiers", "metrics_listen",
}
SOURCE_COMMON_KEYS = {
    "name", "kind", "interval_seconds", "staleness_seconds", "timeout_seconds",
}


def _kind_keys(kind: VendorKind) -> set[str]:
    """The keys a source of `kind` takes beyond the common ones."""
    return set(kind.config_keys) | set(kind.secret_keys)


# Every key some kind of source accepts: what an entry of unknown kind is checked against.
# (Built-in kinds: the keys docs/configuration.md lists; _any_source_keys() adds plugins'.)
SOURCE_ANY_KEYS = SOURCE_COMMON_KEYS.union(*(_kind_keys(k) for k in BUILT_IN_KINDS.values()))


def _any_source_keys() -> set[str]:
    return SOURCE_COMMON_KEYS.union(*(_kind_keys(k) for k in KINDS.values()))
# Environment variables that override top-level keys (the CLI's --database-url beats them).
ENV_OVERRIDES = {
    "USAGE_ETL_DATABASE_URL": "database_url",
    "USAGE_ETL_TIMEZONE": "timezone",
    "USAGE_ETL_REPORTS_DIR": "reports_dir",
    "USAGE_ETL_SPOOL_DIR": "spool_dir",
}
# Database URL schemes and drivers usage-etl is built and tested for ("" = the default driver).
DATABASE_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}


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


@dataclass(frozen=True)
class Config:
    """The whole validated config."""

    database_url: str = DEFAULT_DATABASE_URL
    timezone: str = "UTC"
    reports_dir: str = DEFAULT_REPORTS_DIR
    spool_dir: str = DEFAULT_SPOOL_DIR
    sources: tuple[SourceConfig, ...] = ()
    billing: tuple[BillingRule, ...] = ()
    credits: tuple[Credit, ...] = ()
    alerts: tuple[AlertRule, ...] = ()
    notifiers: tuple[Notifier, ...] = ()
    metrics_listen: str | None = None
    path: str | None = field(default=None, compare=False)

    @property
    def tz(self) -> ZoneInfo:
        """The report timezone (`timezone`, SPEC 2) as a ZoneInfo."""
        return ZoneInfo(self.timezone)

    def source(self, name: str) -> SourceConfig:
        """The source named `name`.

        Raises:
            ConfigError: no source has that name.
        """
        for src in self.sources:
            if src.name == name:
                return src
        raise ConfigError(f"no source named {name!r} in the config")

    def select_sources(self, names: tuple[str, ...] | list[str] = ()) -> list[SourceConfig]:
        """The named sources (all when none are named); unknown names are a ConfigError."""
        if not names:
            return list(self.sources)
        known = {s.name for s in self.sources}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError([f"--source {n}: no such source in the config" for n in unknown])
        return [s for s in self.sources if s.name in names]

    def check_secrets(self, sources: list[SourceConfig] | None = None) -> None:
        """Refuse, one line per source, any credential that cannot be read."""
        problems: list[str] = []
        for src in sources if sources is not None else self.sources:
            try:
                src.read_secret()
            except SecretError as exc:
                problems.extend(exc.problems)
        if problems:
            raise SecretError(problems)

    def alert(self, name: str) -> AlertRule:
        """The alert named `name`.

        Raises:
            ConfigError: no alert has that name.
        """
        for rule in self.alerts:
            if rule.name == name:
                return rule
        raise ConfigError(f"no alert named {name!r} in the config")

    def check_notifier_secrets(self, names: Collection[str] | None = None) -> None:
        """Refuse a webhook URL or SMTP password that cannot be read, one line per notifier.

        `names` limits the check to those notifiers (default: all). Raises SecretError
        (exit 2); the message names the key, never the value.
        """
        problems: list[str] = []
        for notifier in self.notifiers:
            if names is not None and notifier.name not in names:
                continue
            try:
                if isinstance(notifier, WebhookNotifier):
                    webhook_url(notifier)
                elif notifier.password is not None:
                    notifier.password.read()
            except SecretError as exc:
                problems.extend(exc.problems)
        if problems:
            raise SecretError(problems)


def find_config_path(explicit: str | None) -> tuple[Path, bool]:
    """(path, was it asked for): --config, else $USAGE_ETL_CONFIG, else ./usage-etl.toml."""
    if explicit:
        return Path(explicit), True
    env = os.environ.get("USAGE_ETL_CONFIG")
    if env:
        return Path(env), True
    return Path(DEFAULT_CONFIG_PATH), False


def load_config(path: str | None = None, database_url: str | None = None) -> Config:
    """Read, override from the environment and validate the config.

    A config file that was asked for (``--config`` or ``$USAGE_ETL_CONFIG``) must exist; the
    default ``./usage-etl.toml`` may be absent, which gives a config with no sources.
    `database_url` is the ``--database-url`` option: it beats the file and the environment,
    and an empty one is refused rather than ignored.
    """
    cfg_path, explicit = find_config_path(path)
    raw: dict[str, Any] = {}
    if cfg_path.exists() or explicit:
        try:
            with cfg_path.open("rb") as fh:
                data = fh.read(MAX_CONFIG_BYTES + 1)  # never all of /dev/zero
            if len(data) > MAX_CONFIG_BYTES:
                raise ConfigError(f"config file {cfg_path}: larger than "
                                  f"{MAX_CONFIG_BYTES // 1024 // 1024} MiB, not a usage-etl config")
            raw = tomllib.loads(data.decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {cfg_path}: not found") from None
        except OSError as exc:
            raise ConfigError(f"config file {cfg_path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {cfg_path}: not UTF-8 ({_bad_byte(exc)})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {cfg_path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"config file {cfg_path}: not valid TOML: nested too deep") from None
    # A bad overridden value is blamed on the variable or option the user set, not on a file
    # that may not even mention the key.
    origins: dict[str, str] = {}
    for env, key in ENV_OVERRIDES.items():
        value = os.environ.get(env)
        if value:
            raw[key] = value
            origins[key] = f"${env}"
    if database_url is not None:
        raw["database_url"] = database_url
        origins["database_url"] = "--database-url"
    return parse_config(raw, str(cfg_path) if (cfg_path.exists() or explicit) else None, origins)


def parse_config(
    raw: dict[str, Any], path: str | None = None, origins: Mapping[str, str] | None = None
) -> Config:
    """Validate a config mapping (as read from TOML); raise ConfigError listing every problem.

    `origins` maps an overridden top-level key to where its value came from
    (``$USAGE_ETL_TIMEZONE``, ``--database-url``): its problems name that, not `path`.
    """
    top = _TopLevel(f"{path}: " if path else "", origins or {})
    for key in sorted(set(raw) - TOP_KEYS):
        top.problem(key, "unknown key")
    settings = _parse_settings(raw, top)
    sources, declared = _parse_sources(top.tables(raw, "sources"), top)
    billing = _parse_billing_rules(top.tables(raw, "billing"), declared, top)
    metrics_listen = raw.get("metrics_listen")
    if metrics_listen is not None:
        listen_problem = listen_address_problem(metrics_listen)
        if listen_problem:
            top.problem("metrics_listen", listen_problem)
            metrics_listen = None
    notifiers = _parse_notifiers(raw.get("notifiers", []), top.problems, top.where)
    alerts = _parse_alerts(raw.get("alerts", []), top.problems, top.where, sources=sources,
                           declared=declared, billing=billing,
                           notifiers={n.name for n in notifiers}, raw_notifiers=raw.get("notifiers"))
    if top.problems:
        raise ConfigError(top.problems)
    return Config(**settings, sources=tuple(sources), billing=tuple(billing), credits=(),
                  alerts=tuple(alerts), notifiers=tuple(notifiers),
                  metrics_listen=metrics_listen, path=path)


@dataclass
class _TopLevel:
    """Collects problems, each named by the file (or the variable that overrode the key)."""

    where: str
    origins: Mapping[str, str]
    problems: list[str] = field(default_factory=list)

    def problem(self, key: str, message: str) -> None:
        origin = self.origins.get(key)
        self.problems.append(f"{origin}: {message}" if origin else f"{self.where}{key}: {message}")

    def extend(self, found: list[str]) -> None:
        self.problems.extend(self.where + p for p in found)

    def text(self, raw: Mapping[str, Any], key: str, default: str) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str) or not value.strip():
            self.problem(key, "must be a non-empty string")
            return default
        if not value.isprintable():
            # A NUL or newline would only fail later, deep in a file or database call.
            self.problem(key, "must not contain control characters")
            return default
        return value

    def tables(self, raw: Mapping[str, Any], key: str) -> list[Any]:
        value = raw.get(key, [])
        if not isinstance(value, list):
            self.problem(key, f"must be an array of tables ([[{key}]])")
            return []
        return value


def _parse_settings(raw: Mapping[str, Any], top: _TopLevel) -> dict[str, str]:
    """database_url, timezone, reports_dir and spool_dir, defaults filled in."""
    database_url = top.text(raw, "database_url", DEFAULT_DATABASE_URL)
    url_problem = database_url_problem(database_url)
    if url_problem:
        top.problem("database_url", url_problem)
    timezone = top.text(raw, "timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        top.problem("timezone", f"{timezone!r} is not an IANA time zone name")
        timezone = "UTC"
    return {
        "database_url": database_url,
        "timezone": timezone,
        "reports_dir": top.text(raw, "reports_dir", DEFAULT_REPORTS_DIR),
        "spool_dir": top.text(raw, "spool_dir", DEFAULT_SPOOL_DIR),
    }


def _parse_sources(
    raw_sources: list[Any], top: _TopLevel
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


def _parse_billing_rules(
    raw_billing: list[Any], declared: Mapping[str, VendorKind | None], top: _TopLevel
) -> list[BillingRule]:
    billing: list[BillingRule] = []
    seen_rules: set[tuple[str, str]] = set()
    for i, entry in enumerate(raw_billing):
        found: list[str] = []
        rule = _parse_billing(entry, i, declared, found)
        if rule is not None and (rule.source, rule.metric) in seen_rules:
            found.append(f"billing[{i}]: a rule for {rule.source}/{rule.metric} is already defined")
        elif rule is not None:
            seen_rules.add((rule.source, rule.metric))
            billing.append(rule)
        top.extend(found)
    return billing


def normalize_url(url: str) -> str:
    """Pick psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def database_url_problem(url: str) -> str | None:
    """What is wrong with the form of database URL `url`, or None; nothing is opened.

    Checked with the standard library, so reading a config loads no database driver.
    """
    from etl.redact import redact_url

    match = _DB_URL_RE.match(normalize_url(url))
    if match is None:
        return f"cannot parse {redact_url(url)!r} as a database URL"
    backend, driver, rest = match["backend"], match["driver"] or "", match["rest"]
    if driver not in DATABASE_DRIVERS.get(backend, ()):
        scheme = url.split("://", 1)[0]
        return (
            f"scheme {scheme!r} is not supported "
            "(use sqlite:///PATH or postgresql://[USER@]HOST[:PORT]/DB)"
        )
    if backend == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if path.split("?", 1)[0] in ("", ":memory:"):
            # With one connection per use, every connection would see a new, empty database.
            return ("an in-memory SQLite database cannot hold history; "
                    "give a file: sqlite:///PATH")
        return None
    try:
        urlsplit("//" + rest).port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        return f"cannot parse {redact_url(url)!r} as a database URL"
    return None


def _bad_byte(exc: UnicodeDecodeError) -> str:
    line = exc.object.count(b"\n", 0, exc.start) + 1
    return f"byte 0x{exc.object[exc.start]:02x} on line {line}"


def _what(value: Any) -> str:
    """The TOML type of `value`, for messages."""
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), (list, "an array"), (dict, "a table")):
        if isinstance(value, kind):
            return name
    if isinstance(value, date | time):
        return "a date/time"
    return type(value).__name__


def _number(value: Any) -> float | None:
    """`value` as a float if it is a finite integer or float: nan and inf pass no `<` check."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer literal too big for a float
        return None
    return number if math.isfinite(number) else None


def _base_url_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be an http:// or https:// URL, not {_what(value)}"
    return http_url_problem(value)


def _parse_source(
    entry: Any, i: int, problems: list[str], *, duplicate: bool = False
) -> SourceConfig | None:
    """The source in `entry`, or None once every problem with it is added to `problems`.

    A duplicate is still checked, labelled by its index since its name is taken, but never
    returned.
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
        timeout_seconds=timeout, bound=vendor if vendor is not kind else None,
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
    expected = ", ".join(KINDS)
    if kind is None:
        problems.append(f"{label}.kind: required, one of: {expected}")
    elif not isinstance(kind, str):
        problems.append(f"{label}.kind: must be a string, not {_what(kind)} (one of: {expected})")
    elif kind not in KINDS:
        problems.append(f"{label}.kind: unknown kind {kind!r} (expected one of: {expected})"
                        f"{unknown_kind_hint(kind)}")
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
    interval = _number(entry.get("interval_seconds", 60))
    if interval is None or not MIN_INTERVAL_SECONDS <= interval <= MAX_SECONDS:
        problems.append(
            f"{label}.interval_seconds: must be a finite number of seconds from "
            f"{MIN_INTERVAL_SECONDS:g} to {MAX_SECONDS:.0f} (366 days)"
        )
    staleness = entry.get("staleness_seconds")
    if staleness is not None:
        staleness = _number(staleness)
        if staleness is None or not 0 < staleness <= MAX_SECONDS:
            problems.append(f"{label}.staleness_seconds: must be a finite positive number of seconds "
                            f"up to {MAX_SECONDS:.0f} (366 days)")
    timeout = _number(entry.get("timeout_seconds", 10))
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


def _parse_billing(
    entry: Any, i: int, declared: Mapping[str, VendorKind | None], problems: list[str]
) -> BillingRule | None:
    """The rule in `entry`, or None once every problem with it is added to `problems`.

    `declared` maps each source name in the config to its kind (None when that is unknown).
    A per-item series is named in full (`tokens:gpt-4o`, SPEC 7).
    """
    label = f"billing[{i}]"
    if not isinstance(entry, dict):
        problems.append(f"{label}: must be a table")
        return None
    before = len(problems)
    for key in sorted(set(entry) - BILLING_KEYS):
        problems.append(f"{label}.{key}: unknown key")
    source, kind = _billing_source(entry.get("source"), label, declared, problems)
    metric = _billing_metric(entry.get("metric"), label, source, kind, problems)
    aggregation = parse_aggregation(entry.get("aggregation"), f"{label}.aggregation", problems)
    if (
        aggregation is Aggregation.INCREASE
        and kind is not None
        and metric is not None
        and kind.metric_type_of(metric) == MetricType.GAUGE
    ):
        problems.append(f"{label}.aggregation: 'increase' needs a counter; {metric!r} is a gauge")
    # Unset, a rule bills from the first unit in US dollars (documented in docs/configuration.md).
    included = bounded_decimal(entry.get("included", 0), f"{label}.included", problems)
    pricing = parse_pricing(entry, label, problems)
    currency = entry.get("currency", "USD")
    if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency):
        problems.append(f"{label}.currency: must be a three-letter code such as 'USD'")
    if len(problems) > before or kind is None:
        return None
    assert source is not None and metric is not None and aggregation is not None
    assert included is not None and pricing is not None
    return BillingRule(
        source=source,
        metric=metric,
        aggregation=aggregation,
        included=included,
        unit_price=pricing.unit_price,
        currency=currency,
        pricing=pricing.pricing,
        package_size=pricing.package_size,
        package_price=pricing.package_price,
        tiers=pricing.tiers,
        flat_fee=pricing.flat_fee,
        minimum=pricing.minimum,
    )


def _billing_source(
    source: Any, label: str, declared: Mapping[str, VendorKind | None], problems: list[str]
) -> tuple[str | None, VendorKind | None]:
    """(the source name, its kind) of a rule; the kind is None when it cannot be checked."""
    if source is None:
        problems.append(f"{label}.source: required, the name of a [[sources]] entry")
    elif not isinstance(source, str):
        problems.append(f"{label}.source: must be a string naming a source, not {_what(source)}")
    elif source not in declared:
        problems.append(f"{label}.source: {source!r} is not a configured source")
    else:
        return source, declared[source]
    return None, None


def _billing_metric(
    metric: Any, label: str, source: str | None, kind: VendorKind | None, problems: list[str]
) -> str | None:
    if metric is None:
        problems.append(f"{label}.metric: required, the name of one of the source's metrics")
    elif not isinstance(metric, str):
        problems.append(f"{label}.metric: must be a string, not {_what(metric)}")
    elif kind is not None and kind.metric_type_of(metric) is None:
        problems.append(
            f"{label}.metric: {metric!r} is not a metric of {kind.name} source {source!r} "
            f"(expected one of: {kind.metric_names()})"
        )
    else:
        return metric
    return None


# --- [[notifiers]] and [[alerts]] (SPEC 8) -----------------------------------------------

NOTIFIER_KEYS: dict[str, set[str]] = {
    NotifierKind.WEBHOOK: {"name", "kind", "url_env", "url_file", "timeout_seconds"},
    NotifierKind.EMAIL: {
        "name", "kind", "smtp_host", "smtp_port", "starttls", "username", "password_env",
        "password_file", "from", "to", "timeout_seconds",
    },
}
ALERT_KEYS = {"name", "source", "metric", "clear_pct", "for_seconds", "repeat_seconds",
              "notify"} | {str(c) for c in Condition}
EMAIL_RE = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+$")


def listen_address_problem(value: Any) -> str | None:
    """What is wrong with a `HOST:PORT` to listen on (SPEC 9), or None."""
    if not isinstance(value, str) or ":" not in value:
        return "must be HOST:PORT, for example 127.0.0.1:9108"
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or any(c.isspace() or not c.isprintable() for c in host):
        return "must be HOST:PORT, for example 127.0.0.1:9108"
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        return f"port {port!r} is not a number from 0 to 65535"
    return None


def split_listen_address(value: str) -> tuple[str, int]:
    """(host, port) of a checked `HOST:PORT` (brackets of an IPv6 host dropped)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _secret_ref(entry: dict[str, Any], label: str, env_key: str, file_key: str,
                problems: list[str], *, required: bool) -> SecretRef | None:
    env, file = entry.get(env_key), entry.get(file_key)
    if env is not None and file is not None:
        problems.append(f"{label}.{env_key}: set only one of {env_key} or {file_key}")
        return None
    if env is None and file is None:
        if required:
            problems.append(f"{label}.{env_key}: set one of {env_key} or {file_key} "
                            "(the value is a secret and never goes in the config)")
        return None
    if env is not None:
        if not isinstance(env, str) or not ENV_NAME_RE.fullmatch(env):
            problems.append(
                f"{label}.{env_key}: must name an environment variable (letters, digits, '_')")
            return None
        return SecretRef(f"{label}.{env_key}", env=env)
    if not isinstance(file, str) or not file or not file.isprintable():
        problems.append(f"{label}.{file_key}: must be a file path")
        return None
    return SecretRef(f"{label}.{file_key}", file=file)


def _positive(entry: dict[str, Any], key: str, label: str, default: float,
              problems: list[str], *, zero_ok: bool = False) -> float:
    value = _number(entry.get(key, default))
    if value is None or value < 0 or (value == 0 and not zero_ok):
        problems.append(f"{label}.{key}: must be a finite number "
                        + ("of 0 or more" if zero_ok else "above 0"))
        return default
    return value


def _parse_notifiers(raw: Any, problems: list[str], where: str) -> list[Notifier]:
    if not isinstance(raw, list):
        problems.append(f"{where}notifiers: must be an array of tables ([[notifiers]])")
        return []
    out: list[Notifier] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        found: list[str] = []
        notifier = _parse_notifier(entry, i, seen, found)
        problems.extend(where + p for p in found)
        if notifier is not None:
            out.append(notifier)
    return out


def _named_entry(entry: Any, section: str, i: int, seen: set[str],
                 problems: list[str]) -> tuple[str, Any] | None:
    """(label for messages, name) of entry `i` of `[[section]]`; None if it is not a table.

    The label is `section.NAME` for a good, new name, else `section[i]`.
    """
    label = f"{section}[{i}]"
    if not isinstance(entry, dict):
        problems.append(f"{label}: must be a table")
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        problems.append(f"{label}.name: required, lowercase letters, digits, '_' or '-' only")
    elif name in seen:
        problems.append(f"{label}.name: duplicate {section[:-1]} name {name!r}")
    else:
        seen.add(name)
        label = f"{section}.{name}"
    return label, name


def _parse_notifier(entry: Any, i: int, seen: set[str], problems: list[str]) -> Notifier | None:
    before = len(problems)
    named = _named_entry(entry, "notifiers", i, seen, problems)
    if named is None:
        return None
    label, name = named
    kind = entry.get("kind")
    if kind not in NOTIFIER_KEYS:
        problems.append(f"{label}.kind: must be 'webhook' or 'email'")
        return None
    for key in sorted(set(entry) - NOTIFIER_KEYS[kind]):
        problems.append(f"{label}.{key}: unknown key for a {kind} notifier")
    timeout = _positive(entry, "timeout_seconds", label, 10.0, problems)
    notifier: Notifier | None = None
    if kind == NotifierKind.WEBHOOK:
        url = _secret_ref(entry, label, "url_env", "url_file", problems, required=True)
        if url is not None:
            notifier = WebhookNotifier(name=str(name), url=url, timeout_seconds=timeout)
    else:
        notifier = _parse_email(entry, label, str(name), timeout, problems)
    return notifier if len(problems) == before else None


def _parse_email(entry: dict[str, Any], label: str, name: str, timeout: float,
                 problems: list[str]) -> EmailNotifier | None:
    host = entry.get("smtp_host")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        problems.append(f"{label}.smtp_host: required, a host name")
    port = entry.get("smtp_port", 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        problems.append(f"{label}.smtp_port: must be a whole number from 1 to 65535")
        port = 587
    starttls = entry.get("starttls", port != 25)
    if not isinstance(starttls, bool):
        problems.append(f"{label}.starttls: must be true or false")
    username = entry.get("username")
    if username is not None and (not isinstance(username, str) or not username.isprintable()
                                 or not username):
        problems.append(f"{label}.username: must be a non-empty string")
    password = _secret_ref(entry, label, "password_env", "password_file", problems,
                           required=False)
    if password is not None and username is None:
        problems.append(f"{label}.username: required with a password")
    sender = entry.get("from")
    if not isinstance(sender, str) or not EMAIL_RE.fullmatch(sender):
        problems.append(f"{label}.from: required, an email address")
    to = entry.get("to")
    if isinstance(to, str):
        to = [to]
    if (not isinstance(to, list) or not to
            or not all(isinstance(t, str) and EMAIL_RE.fullmatch(t) for t in to)):
        problems.append(f"{label}.to: required, a list of email addresses")
    if not isinstance(host, str) or not isinstance(sender, str) or not isinstance(to, list):
        return None
    return EmailNotifier(
        name=name, smtp_host=host, smtp_port=port, starttls=bool(starttls), sender=sender,
        to=tuple(to), username=username, password=password, timeout_seconds=timeout,
    )


def _parse_alerts(
    raw: Any, problems: list[str], where: str, *, sources: list[SourceConfig],
    declared: Mapping[str, VendorKind | None], billing: list[BillingRule], notifiers: set[str],
    raw_notifiers: Any,
) -> list[AlertRule]:
    if not isinstance(raw, list):
        problems.append(f"{where}alerts: must be an array of tables ([[alerts]])")
        return []
    # Notifiers named in the config but refused for another reason: not "unknown" here.
    named = {e.get("name") for e in raw_notifiers if isinstance(e, dict)} if isinstance(
        raw_notifiers, list) else set()
    out: list[AlertRule] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        found: list[str] = []
        rule = _parse_alert(entry, i, seen, found, sources=sources, declared=declared,
                            billing=billing, notifiers=notifiers, named=named)
        problems.extend(where + p for p in found)
        if rule is not None:
            out.append(rule)
    return out


def _parse_alert(
    entry: Any, i: int, seen: set[str], problems: list[str], *, sources: list[SourceConfig],
    declared: Mapping[str, VendorKind | None], billing: list[BillingRule], notifiers: set[str],
    named: set[Any],
) -> AlertRule | None:
    """The alert in `entry`, or None once every problem with it is added to `problems`."""
    before = len(problems)
    found = _named_entry(entry, "alerts", i, seen, problems)
    if found is None:
        return None
    label, name = found
    for key in sorted(set(entry) - ALERT_KEYS):
        problems.append(f"{label}.{key}: unknown key")
    condition = _alert_condition(entry, label, problems)
    threshold, clear = _alert_threshold(entry, label, condition, problems)
    source = entry.get("source")
    if source is not None and (not isinstance(source, str) or source not in declared):
        problems.append(f"{label}.source: {source!r} is not a configured source")
        source = None
    metric = entry.get("metric")
    if _alert_metric_ok(metric, label, condition, problems) and condition is not None and (
            source is None or declared.get(source) is not None):
        _check_alert_series(label, condition, source, metric, sources, billing, problems)
    for_seconds = _positive(entry, "for_seconds", label, 0.0, problems, zero_ok=True)
    repeat_seconds = _positive(entry, "repeat_seconds", label, 0.0, problems, zero_ok=True)
    notify = _alert_notify(entry.get("notify", []), label, notifiers | named, problems)
    if len(problems) > before or condition is None:
        return None
    assert isinstance(name, str)
    return AlertRule(
        name=name, condition=condition, metric=metric, source=source, threshold=threshold,
        clear=clear, for_seconds=for_seconds, repeat_seconds=repeat_seconds,
        notify=tuple(dict.fromkeys(notify)),
    )


def _alert_condition(entry: Mapping[str, Any], label: str, problems: list[str]
                     ) -> Condition | None:
    """The one condition key the alert sets (SPEC 8), or None once the problem is added."""
    conditions = [c for c in Condition if str(c) in entry]
    if not conditions:
        problems.append(f"{label}: no condition; set one of: {', '.join(map(str, Condition))}")
    elif len(conditions) > 1:
        problems.append(f"{label}.{conditions[1]}: only one condition per alert "
                        f"({', '.join(map(str, conditions))} are set)")
    else:
        return conditions[0]
    return None


def _alert_threshold(entry: Mapping[str, Any], label: str, condition: Condition | None,
                     problems: list[str]) -> tuple[Decimal | None, Decimal | None]:
    """Return (the condition's threshold, clear_pct), each None when not set or refused."""
    threshold: Decimal | None = None
    if condition in (Condition.STALE, Condition.PROJECTED_OVER_INCLUDED):
        if entry[str(condition)] is not True:
            problems.append(f"{label}.{condition}: must be true")
    elif condition is not None:
        threshold = decimal_value(entry[str(condition)])
        if threshold is None or threshold < 0 or (
                condition is Condition.ABOVE_PCT and threshold == 0):
            bound = "above 0" if condition is Condition.ABOVE_PCT else "of 0 or more"
            problems.append(f"{label}.{condition}: must be a number {bound}")
            threshold = None
    clear: Decimal | None = None
    if "clear_pct" in entry:
        clear = decimal_value(entry["clear_pct"])
        if condition is not Condition.ABOVE_PCT:
            problems.append(f"{label}.clear_pct: only goes with above_pct")
        elif clear is None or clear < 0:
            problems.append(f"{label}.clear_pct: must be a number of 0 or more")
        elif threshold is not None and clear > threshold:
            problems.append(f"{label}.clear_pct: must not be above above_pct ({threshold})")
    return threshold, clear


def _alert_metric_ok(metric: Any, label: str, condition: Condition | None,
                     problems: list[str]) -> bool:
    """Whether `metric` is a name to check against the sources (a stale alert has none)."""
    if condition is Condition.STALE:
        if metric is not None:
            problems.append(f"{label}.metric: a stale alert is per source; remove metric")
    elif metric is None:
        problems.append(f"{label}.metric: required, the name of a metric")
    elif not isinstance(metric, str):
        problems.append(f"{label}.metric: must be a string, not {_what(metric)}")
    else:
        return True
    return False


def _alert_notify(notify: Any, label: str, known: set[Any], problems: list[str]) -> list[str]:
    """The notifier names of `notify` (a name or a list of names), each one configured."""
    if isinstance(notify, str):
        notify = [notify]
    if not isinstance(notify, list) or not all(isinstance(n, str) for n in notify):
        problems.append(f"{label}.notify: must be a list of notifier names")
        return []
    for n in notify:
        if n not in known:
            problems.append(f"{label}.notify: unknown notifier {n!r}")
    return notify


def _check_alert_series(label: str, condition: Condition, source: str | None, metric: str,
                        sources: list[SourceConfig], billing: list[BillingRule],
                        problems: list[str]) -> None:
    """The series an alert on `metric` watches must exist and suit its condition (SPEC 8)."""
    targets = [s for s in sources if (source is None or s.name == source)]
    watched = [s for s in targets if s.vendor.metric_type_of(metric) is not None]
    if not watched:
        if source is not None and targets:
            problems.append(f"{label}.metric: {metric!r} is not a metric of source {source!r} "
                            f"(expected one of: {targets[0].vendor.metric_names()})")
        elif source is None:
            problems.append(f"{label}.metric: no configured source has a metric {metric!r}")
        return
    if condition is Condition.ABOVE_PCT:
        bare = [s.name for s in watched
                if not s.vendor.has_limit(metric)]
        if bare:
            problems.append(f"{label}.above_pct: {', '.join(bare)} {metric} has no plan limit, "
                            "so no percentage (use above)")
    elif condition in (Condition.PROJECTED_OVER_INCLUDED, Condition.PROJECTED_AMOUNT_ABOVE):
        ruled = {(r.source, r.metric) for r in billing}
        bare = [s.name for s in watched if (s.name, metric) not in ruled]
        if bare:
            problems.append(f"{label}.{condition}: no [[billing]] rule for "
                            f"{', '.join(f'{b}/{metric}' for b in bare)} to project")
