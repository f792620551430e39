"""The top-level keys (SPEC 2, 9): `Config`, the database-URL and listen-address rules."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etl.config.alerts import AlertRule
from etl.config.billing import BillingRule
from etl.config.credits import Credit
from etl.config.fields import TopLevel
from etl.config.notifiers import Notifier, check_secret
from etl.config.retention import Retention
from etl.config.sources import SourceConfig
from etl.errors import ConfigError, SecretError

DEFAULT_DATABASE_URL = "sqlite:///usage.db"
DEFAULT_REPORTS_DIR = "reports-out"
DEFAULT_SPOOL_DIR = ".usage-etl-spool"
TOP_KEYS = {
    "database_url", "timezone", "reports_dir", "spool_dir", "sources", "billing", "credits",
    "alerts", "notifiers", "metrics_listen", "retention",
}
# Database URL schemes and drivers usage-etl is built and tested for ("" = the default driver).
DATABASE_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}
_DB_URL_RE = re.compile(r"^(?P<backend>[A-Za-z0-9]+)(?:\+(?P<driver>[A-Za-z0-9_]+))?://(?P<rest>.*)$", re.S)


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
    retention: Retention = Retention()
    path: str | None = field(default=None, compare=False)
    # Where database_url came from, for messages: "--database-url", "$USAGE_ETL_DATABASE_URL"
    # or "FILE: database_url".
    database_url_from: str = field(default="database_url", compare=False)

    @property
    def tz(self) -> ZoneInfo:
        """The report timezone (`timezone`, SPEC 2) as a ZoneInfo."""
        return ZoneInfo(self.timezone)

    def source(self, name: str) -> SourceConfig:
        """The source named `name`.

        Raises:
            ConfigError: no source has that name.
        """
        return _named(self.sources, name, "source")

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
        chosen = sources if sources is not None else self.sources
        _read_all([src.read_secret for src in chosen]
                  + [more for src in chosen if (more := src.vendor.more_secrets) is not None])

    def alert(self, name: str) -> AlertRule:
        """The alert named `name`.

        Raises:
            ConfigError: no alert has that name.
        """
        return _named(self.alerts, name, "alert")

    def check_notifier_secrets(self, names: Collection[str] | None = None) -> None:
        """Refuse a webhook URL or SMTP password that cannot be read, one line per notifier.

        `names` limits the check to those notifiers (default: all). Raises SecretError
        (exit 2); the message names the key, never the value.
        """
        _read_all([functools.partial(check_secret, n) for n in self.notifiers
                   if names is None or n.name in names])


_Named = TypeVar("_Named", SourceConfig, AlertRule)


def _named(entries: Iterable[_Named], name: str, what: str) -> _Named:
    """The entry called `name`; ConfigError naming `what` (source, alert) when there is none."""
    for entry in entries:
        if entry.name == name:
            return entry
    raise ConfigError(f"no {what} named {name!r} in the config")


def _read_all(reads: Iterable[Callable[[], object]]) -> None:
    """Run every secret read; one SecretError listing each that failed (one line each)."""
    problems: list[str] = []
    for read in reads:
        try:
            read()
        except SecretError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SecretError(problems)


def parse_settings(raw: Mapping[str, Any], top: TopLevel) -> dict[str, str]:
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
        # A leading ~ is the home folder, as in a shell: kept literally it made a folder
        # named "~" in the working directory.
        "reports_dir": os.path.expanduser(top.text(raw, "reports_dir", DEFAULT_REPORTS_DIR)),
        "spool_dir": os.path.expanduser(top.text(raw, "spool_dir", DEFAULT_SPOOL_DIR)),
    }


def parse_metrics_listen(raw: Mapping[str, Any], top: TopLevel) -> str | None:
    """`metrics_listen` when set and a good HOST:PORT, else None (a problem when refused)."""
    metrics_listen = raw.get("metrics_listen")
    if metrics_listen is not None:
        listen_problem = listen_address_problem(metrics_listen)
        if listen_problem:
            top.problem("metrics_listen", listen_problem)
            return None
    return metrics_listen


def normalize_url(url: str) -> str:
    """The URL SQLAlchemy is given, with psycopg 3 and the user name and password escaped.

    Plain ``postgresql://`` URLs get psycopg 3 (SQLAlchemy would pick psycopg2). A password holding `@ : / # ?` or a `%` that starts no escape is escaped here, so it
    is neither read as part of the host (and printed in a "cannot resolve host" error) nor
    makes the URL unparsable; one already escaped (`p%40ss`) is kept (SPEC 3 amended).
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    match = _USERINFO_RE.match(url)
    if match is None or match["scheme"].startswith("sqlite"):
        return url
    user, colon, password = match["userinfo"].partition(":")
    return (f"{match['scheme']}{_escaped(user)}{colon}{_escaped(password) if colon else ''}"
            f"@{match['host']}{match['tail'] or ''}")


# The userinfo ends at the last "@" before the host: a pasted password may hold "@", ":",
# "/", "#" or "?" (the host, port, database name and query hold no "@").
_USERINFO_RE = re.compile(
    r"^(?P<scheme>[A-Za-z0-9+]+://)(?P<userinfo>.*)@(?P<host>[^@/?#]*)(?P<tail>[/?][^@]*)?$",
    re.S)
_ESCAPED_RE = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*")


def _escaped(part: str) -> str:
    """`part` of a userinfo percent-escaped, unless it already is (valid UTF-8 escapes)."""
    if _ESCAPED_RE.fullmatch(part):
        try:
            unquote(part, errors="strict")
            return part
        except UnicodeDecodeError:
            pass
    return quote(part, safe="")


def database_url_passwords(url: str) -> list[str]:
    """The password of a database URL as written and as meant (unescaped), to mask; [] if none."""
    match = _USERINFO_RE.match(url)
    if match is None or ":" not in match["userinfo"]:
        return []
    raw = match["userinfo"].split(":", 1)[1]
    return [p for p in dict.fromkeys((raw, unquote(raw))) if p]


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
