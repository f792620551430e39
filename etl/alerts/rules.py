"""The validated `[[alerts]]` and `[[notifiers]]` entries (SPEC 8) and their vocabularies."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from urllib.parse import urlsplit

from etl.errors import SecretError
from etl.secrets import read_secret


class Condition(StrEnum):
    """The five conditions an alert can test, named as their config keys (SPEC 8)."""

    ABOVE_PCT = "above_pct"
    ABOVE = "above"
    STALE = "stale"
    PROJECTED_OVER_INCLUDED = "projected_over_included"
    PROJECTED_AMOUNT_ABOVE = "projected_amount_above"


class AlertState(StrEnum):
    """Where one alert stands for one series (SPEC 8)."""

    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"


class EventState(StrEnum):
    """What a notification announces: the payload's `state`."""

    FIRING = "firing"
    RESOLVED = "resolved"
    TEST = "test"


class NotifierKind(StrEnum):
    """How a notifier delivers (SPEC 8): an HTTP POST to a webhook, or an email."""
    WEBHOOK = "webhook"
    EMAIL = "email"


@dataclass(frozen=True)
class SecretRef:
    """Where a notifier's secret lives: an environment variable or a file, never the config.

    `key` is the config key that names it (`notifiers.ops.url_env`), for messages; the value
    itself is read only when it is used and never kept on this object.
    """

    key: str
    env: str | None = None
    file: str | None = None

    @property
    def origin(self) -> str:
        """Where the secret is read, for messages: `key ($VAR)` or `key (path)`."""
        return f"{self.key} (${self.env})" if self.env else f"{self.key} ({self.file})"

    def read(self) -> str:
        """The secret, read now (SPEC 2: a file as editors write it); SecretError if unset."""
        return read_secret(self.origin, self.env, self.file)


@dataclass(frozen=True)
class WebhookNotifier:
    """A `kind = "webhook"` notifier: POSTs the JSON payload to a secret URL."""

    name: str
    url: SecretRef
    timeout_seconds: float = 10.0
    kind: NotifierKind = NotifierKind.WEBHOOK


@dataclass(frozen=True)
class EmailNotifier:
    """A `kind = "email"` notifier: one message per event through an SMTP server."""

    name: str
    smtp_host: str
    smtp_port: int
    starttls: bool
    sender: str  # the config's `from`
    to: tuple[str, ...]
    username: str | None = None
    password: SecretRef | None = None
    timeout_seconds: float = 10.0
    kind: NotifierKind = NotifierKind.EMAIL


Notifier = WebhookNotifier | EmailNotifier


def webhook_url(notifier: WebhookNotifier) -> str:
    """The notifier's URL, read now from its variable or file.

    Raises SecretError naming the config key (never the value) when it is unset or is not an
    http:// or https:// URL made of printable ASCII.
    """
    url = notifier.url.read()
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError for a port that is not a number
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or not url.isascii() or not url.isprintable() or " " in url):
        raise SecretError(f"{notifier.url.origin}: is not an http:// or https:// URL")
    return url


@dataclass(frozen=True)
class AlertRule:
    """One `[[alerts]]` entry.

    `threshold` is the condition's number: a percentage for above_pct, a value (gauges) or
    a month-to-date increase (counters) for above, money for projected_amount_above, and
    None for the two boolean conditions. `clear` is where an above_pct alert resolves.
    """

    name: str
    condition: Condition
    metric: str | None
    source: str | None = None
    threshold: Decimal | None = None
    clear: Decimal | None = None
    for_seconds: float = 0.0
    repeat_seconds: float = 0.0
    notify: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeriesRef:
    """One series an alert watches: (source, metric); metric is None for `stale`."""

    source: str
    metric: str | None

    @property
    def metric_key(self) -> str:
        """The metric as stored in alert tables: '' for a per-source (stale) alert."""
        return self.metric or ""
