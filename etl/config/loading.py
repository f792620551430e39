"""Reading the config: find the file, read its TOML, apply overrides, check every table."""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from etl.config.alerts import parse_alerts
from etl.config.billing import BillingRule, parse_billing_rules
from etl.config.credits import Credit, parse_credits
from etl.config.fields import TopLevel
from etl.config.notifiers import parse_notifiers
from etl.config.retention import parse_retention
from etl.config.settings import TOP_KEYS, Config, parse_metrics_listen, parse_settings
from etl.config.sources import parse_sources
from etl.errors import ConfigError

DEFAULT_CONFIG_PATH = "usage-etl.toml"
# A config file is a few KB; a larger one is refused unread (`--config /dev/zero`).
MAX_CONFIG_BYTES = 1024 * 1024
# Environment variables that override top-level keys (the CLI's --database-url beats them).
ENV_OVERRIDES = {
    "USAGE_ETL_DATABASE_URL": "database_url",
    "USAGE_ETL_TIMEZONE": "timezone",
    "USAGE_ETL_REPORTS_DIR": "reports_dir",
    "USAGE_ETL_SPOOL_DIR": "spool_dir",
}


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
            # utf-8-sig: a byte-order mark, as some editors save, is dropped (SPEC 2 reads
            # secret files, invoices and archives the same way).
            raw = tomllib.loads(data.decode("utf-8-sig"))
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
    top = TopLevel(f"{path}: " if path else "", origins or {})
    for key in sorted(set(raw) - TOP_KEYS):
        top.problem(key, "unknown key")
    settings = parse_settings(raw, top)
    sources, declared = parse_sources(top.tables(raw, "sources"), top)
    raw_billing = top.tables(raw, "billing")
    billing = parse_billing_rules(raw_billing, declared, top)
    # With `billing` not an array of tables (refused above), no credit is checked against it.
    unsure = (set(declared) if not isinstance(raw.get("billing", []), list)
              else _refused_rule_sources(raw_billing, billing))
    credits = parse_credits(top.tables(raw, "credits"), declared, top, billing=billing,
                            unsure=unsure)
    metrics_listen = parse_metrics_listen(raw, top)
    notifiers = parse_notifiers(raw.get("notifiers", []), top.problems, top.where)
    alerts = parse_alerts(raw.get("alerts", []), top.problems, top.where, sources=sources,
                          declared=declared, billing=billing,
                          notifiers={n.name for n in notifiers}, raw_notifiers=raw.get("notifiers"),
                          credits=_declared_credits(raw, credits),
                          refused_rules=_named_rule_series(raw_billing))
    retention = parse_retention(raw.get("retention"), top.where, top.problems)
    if top.problems:
        raise ConfigError(top.problems)
    return Config(**settings, sources=tuple(sources), billing=tuple(billing),
                  credits=tuple(credits), alerts=tuple(alerts), notifiers=tuple(notifiers),
                  metrics_listen=metrics_listen, retention=retention, path=path,
                  database_url_from=(origins or {}).get("database_url")
                  or f"{top.where}database_url")


def _refused_rule_sources(raw_billing: Sequence[Any], billing: Sequence[BillingRule]
                          ) -> set[str]:
    """The sources named by a `[[billing]]` entry that was refused for its own keys.

    Their credits are not checked against the rules (which periods the refused rule would
    price is not known): a credit is not also refused for a rule's mistake.
    """
    named = Counter(e["source"] for e in raw_billing
                    if isinstance(e, Mapping) and isinstance(e.get("source"), str))
    kept = Counter(r.source for r in billing)
    return {s for s, n in named.items() if n > kept[s]}


def _named_rule_series(raw_billing: Sequence[Any]) -> set[tuple[str, str]]:
    """The (source, metric) every `[[billing]]` entry names, refused or not.

    An alert projecting a series whose rule was refused for another key is not also told the
    series has no rule (the rule's own line says what is wrong), as a credit is not.
    """
    return {(e["source"], e["metric"]) for e in raw_billing if isinstance(e, Mapping)
            and isinstance(e.get("source"), str) and isinstance(e.get("metric"), str)}


def _declared_credits(raw: Mapping[str, Any], credits: Sequence[Credit]) -> list[str]:
    """The credit names alerts may name: those parsed, and those refused for another key.

    A credit refused for its currency is still declared: an alert naming it is not also
    "not one" of the credits (the credit's own line says what is wrong).
    """
    entries = raw.get("credits")
    named = [e.get("name") for e in entries if isinstance(e, Mapping)] \
        if isinstance(entries, list) else []
    return [c.name for c in credits] + [n for n in named if isinstance(n, str)]


def _bad_byte(exc: UnicodeDecodeError) -> str:
    line = exc.object.count(b"\n", 0, exc.start) + 1
    return f"byte 0x{exc.object[exc.start]:02x} on line {line}"
