"""Load and validate the TOML config (SPEC section 2); every problem is reported at once."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etl.errors import ConfigError, SecretError
from etl.kinds import KINDS, SECRET_KEYS

DEFAULT_CONFIG_PATH = "usage-etl.toml"
DEFAULT_DATABASE_URL = "sqlite:///usage.db"
DEFAULT_REPORTS_DIR = "reports-out"
DEFAULT_SPOOL_DIR = ".usage-etl-spool"
MIN_INTERVAL_SECONDS = 5.0
NAME_RE = re.compile(r"^[a-z0-9_-]+$")
REGION_RE = re.compile(r"^[a-z0-9-]+$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")

TOP_KEYS = {"database_url", "timezone", "reports_dir", "spool_dir", "sources", "billing"}
SOURCE_COMMON_KEYS = {
    "name", "kind", "region", "base_url", "interval_seconds", "staleness_seconds",
    "timeout_seconds",
}
BILLING_KEYS = {"source", "metric", "aggregation", "included", "unit_price", "currency"}
# Environment variables that override top-level keys (the CLI's --database-url beats them).
ENV_OVERRIDES = {
    "USAGE_ETL_DATABASE_URL": "database_url",
    "USAGE_ETL_TIMEZONE": "timezone",
    "USAGE_ETL_REPORTS_DIR": "reports_dir",
    "USAGE_ETL_SPOOL_DIR": "spool_dir",
}


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

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(KINDS[self.kind])

    @property
    def staleness(self) -> float:
        """Seconds one sample is taken to cover (SPEC 5: 2 x interval unless set)."""
        if self.staleness_seconds is not None:
            return self.staleness_seconds
        return 2 * self.interval_seconds

    @property
    def url(self) -> str:
        if self.kind == "wiresocket":
            base = self.base_url or f"https://{self.region}.ws.wiresocket.com"
            return base.rstrip("/") + "/usage"
        base = self.base_url or "https://api.nected.ai"
        return base.rstrip("/") + "/dev/usage"

    @property
    def secret_origin(self) -> str:
        """Where the credential comes from, for messages (never the value)."""
        env_key, file_key = SECRET_KEYS[self.kind]
        if self.secret_env:
            return f"sources.{self.name}.{env_key} (${self.secret_env})"
        return f"sources.{self.name}.{file_key} ({self.secret_file})"

    def read_secret(self) -> str:
        """The credential, read now from its environment variable or file."""
        if self.secret_env:
            value = os.environ.get(self.secret_env, "").strip()
            if not value:
                raise SecretError(f"{self.secret_origin}: environment variable is unset or empty")
            return value
        assert self.secret_file is not None
        try:
            value = Path(self.secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{self.secret_origin}: cannot read file: {exc.strerror}") from None
        if not value:
            raise SecretError(f"{self.secret_origin}: file is empty")
        return value


@dataclass(frozen=True)
class BillingRule:
    """One `[[billing]]` entry."""

    source: str
    metric: str
    aggregation: str
    included: Decimal
    unit_price: Decimal
    currency: str


@dataclass(frozen=True)
class Config:
    """The whole validated config."""

    database_url: str = DEFAULT_DATABASE_URL
    timezone: str = "UTC"
    reports_dir: str = DEFAULT_REPORTS_DIR
    spool_dir: str = DEFAULT_SPOOL_DIR
    sources: tuple[SourceConfig, ...] = ()
    billing: tuple[BillingRule, ...] = ()
    path: str | None = field(default=None, compare=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def source(self, name: str) -> SourceConfig:
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
    """
    cfg_path, explicit = find_config_path(path)
    raw: dict[str, Any] = {}
    if cfg_path.exists() or explicit:
        try:
            with cfg_path.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {cfg_path}: not found") from None
        except OSError as exc:
            raise ConfigError(f"config file {cfg_path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {cfg_path}: not valid TOML: {exc}") from None
    for env, key in ENV_OVERRIDES.items():
        if os.environ.get(env):
            raw[key] = os.environ[env]
    if database_url:
        raw["database_url"] = database_url
    return parse_config(raw, str(cfg_path) if (cfg_path.exists() or explicit) else None)


def parse_config(raw: dict[str, Any], path: str | None = None) -> Config:
    """Validate a config mapping (as read from TOML); raise ConfigError listing every problem."""
    problems: list[str] = []
    for key in sorted(set(raw) - TOP_KEYS):
        problems.append(f"{key}: unknown key")

    def text(key: str, default: str) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: must be a non-empty string")
            return default
        return value

    database_url = text("database_url", DEFAULT_DATABASE_URL)
    timezone = text("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"timezone: {timezone!r} is not an IANA time zone name")
        timezone = "UTC"
    reports_dir = text("reports_dir", DEFAULT_REPORTS_DIR)
    spool_dir = text("spool_dir", DEFAULT_SPOOL_DIR)

    sources: list[SourceConfig] = []
    raw_sources = raw.get("sources", [])
    if not isinstance(raw_sources, list):
        problems.append("sources: must be an array of tables ([[sources]])")
        raw_sources = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_sources):
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name in seen:
            problems.append(f"sources[{i}].name: duplicate source name {name!r}")
            continue
        if isinstance(name, str):
            seen.add(name)
        src = _parse_source(entry, i, problems)
        if src is not None:
            sources.append(src)

    billing: list[BillingRule] = []
    raw_billing = raw.get("billing", [])
    if not isinstance(raw_billing, list):
        problems.append("billing: must be an array of tables ([[billing]])")
        raw_billing = []
    by_name = {s.name: s for s in sources}
    seen_rules: set[tuple[str, str]] = set()
    for i, entry in enumerate(raw_billing):
        rule = _parse_billing(entry, i, by_name, problems)
        if rule is None:
            continue
        if (rule.source, rule.metric) in seen_rules:
            problems.append(
                f"billing[{i}]: a rule for {rule.source}/{rule.metric} is already defined"
            )
            continue
        seen_rules.add((rule.source, rule.metric))
        billing.append(rule)

    if problems:
        where = f"{path}: " if path else ""
        raise ConfigError([where + p for p in problems])
    return Config(
        database_url=database_url,
        timezone=timezone,
        reports_dir=reports_dir,
        spool_dir=spool_dir,
        sources=tuple(sources),
        billing=tuple(billing),
        path=path,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _parse_source(entry: Any, i: int, problems: list[str]) -> SourceConfig | None:
    if not isinstance(entry, dict):
        problems.append(f"sources[{i}]: must be a table")
        return None
    name = entry.get("name")
    label = f"sources[{i}]"
    ok = True
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"{label}.name: required, lowercase letters, digits, '_' or '-' only")
        ok = False
    else:
        label = f"sources.{name}"
    kind = entry.get("kind")
    if kind not in KINDS:
        problems.append(f"{label}.kind: unknown kind {kind!r} (expected one of: {', '.join(KINDS)})")
        return None
    env_key, file_key = SECRET_KEYS[kind]
    allowed = SOURCE_COMMON_KEYS | {env_key, file_key}
    for key in sorted(set(entry) - allowed):
        problems.append(f"{label}.{key}: unknown key for a {kind} source")
        ok = False

    interval = _number(entry.get("interval_seconds", 60))
    if interval is None or interval < MIN_INTERVAL_SECONDS:
        problems.append(
            f"{label}.interval_seconds: must be a number of at least {MIN_INTERVAL_SECONDS:g}"
        )
        ok = False
    staleness = entry.get("staleness_seconds")
    if staleness is not None:
        staleness = _number(staleness)
        if staleness is None or staleness <= 0:
            problems.append(f"{label}.staleness_seconds: must be a positive number")
            ok = False
    timeout = _number(entry.get("timeout_seconds", 10))
    if timeout is None or timeout <= 0:
        problems.append(f"{label}.timeout_seconds: must be a positive number")
        ok = False

    region = entry.get("region")
    base_url = entry.get("base_url")
    if base_url is not None:
        parsed = urlparse(base_url) if isinstance(base_url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            problems.append(f"{label}.base_url: must be an http:// or https:// URL")
            ok = False
        elif parsed.username or parsed.password or parsed.query:
            problems.append(f"{label}.base_url: must not hold credentials or a query string")
            ok = False
    if region is not None and (not isinstance(region, str) or not REGION_RE.match(region)):
        problems.append(f"{label}.region: must be lowercase letters, digits or '-'")
        ok = False
    if kind == "wiresocket" and region is None and base_url is None:
        problems.append(f"{label}.region: required for a wiresocket source (or set base_url)")
        ok = False

    secret_env = entry.get(env_key)
    secret_file = entry.get(file_key)
    if (secret_env is None) == (secret_file is None):
        problems.append(f"{label}.{env_key}: set exactly one of {env_key} or {file_key}")
        ok = False
    elif secret_env is not None and (not isinstance(secret_env, str) or not secret_env):
        problems.append(f"{label}.{env_key}: must name an environment variable")
        ok = False
    elif secret_file is not None and (not isinstance(secret_file, str) or not secret_file):
        problems.append(f"{label}.{file_key}: must be a file path")
        ok = False
    if not ok:
        return None
    assert interval is not None and timeout is not None
    return SourceConfig(
        name=name,  # type: ignore[arg-type]
        kind=kind,
        interval_seconds=interval,
        region=region,
        base_url=base_url,
        secret_env=secret_env,
        secret_file=secret_file,
        staleness_seconds=staleness,
        timeout_seconds=timeout,
    )


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            # str() first so a TOML float such as 0.1 becomes Decimal("0.1"), not its binary value.
            result = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return result if result.is_finite() else None
    return None


def _parse_billing(
    entry: Any, i: int, sources: dict[str, SourceConfig], problems: list[str]
) -> BillingRule | None:
    label = f"billing[{i}]"
    if not isinstance(entry, dict):
        problems.append(f"{label}: must be a table")
        return None
    before = len(problems)
    for key in sorted(set(entry) - BILLING_KEYS):
        problems.append(f"{label}.{key}: unknown key")
    source = entry.get("source")
    metric = entry.get("metric")
    src = sources.get(str(source)) if isinstance(source, str) else None
    if src is None:
        problems.append(f"{label}.source: {source!r} is not a configured source")
    elif metric not in KINDS[src.kind]:
        problems.append(
            f"{label}.metric: {metric!r} is not a metric of {src.kind} source {source!r} "
            f"(expected one of: {', '.join(KINDS[src.kind])})"
        )
    aggregation = entry.get("aggregation")
    if aggregation not in ("increase", "peak"):
        problems.append(f"{label}.aggregation: must be 'increase' or 'peak'")
    elif (
        aggregation == "increase"
        and src is not None
        and KINDS[src.kind].get(str(metric)) == "gauge"
    ):
        problems.append(f"{label}.aggregation: 'increase' needs a counter; {metric!r} is a gauge")
    included = _decimal(entry.get("included", 0))
    if included is None or included < 0:
        problems.append(f"{label}.included: must be a number of 0 or more")
    unit_price = _decimal(entry.get("unit_price"))
    if unit_price is None or unit_price < 0:
        problems.append(f"{label}.unit_price: required, a decimal string or number of 0 or more")
    currency = entry.get("currency", "USD")
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        problems.append(f"{label}.currency: must be a three-letter code such as 'USD'")
    if len(problems) > before:
        return None
    assert included is not None and unit_price is not None
    return BillingRule(
        source=source,  # type: ignore[arg-type]
        metric=metric,  # type: ignore[arg-type]
        aggregation=aggregation,  # type: ignore[arg-type]
        included=included,
        unit_price=unit_price,
        currency=currency,
    )
