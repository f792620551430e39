"""The `[[notifiers]]` table (SPEC 8): webhook and email notifiers, their secrets and checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from etl.config.fields import ENV_NAME_RE, named_entry, positive
from etl.errors import SecretError
from etl.secrets import read_secret


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

NOTIFIER_KEYS: dict[str, set[str]] = {
    NotifierKind.WEBHOOK: {"name", "kind", "url_env", "url_file", "timeout_seconds"},
    NotifierKind.EMAIL: {
        "name", "kind", "smtp_host", "smtp_port", "starttls", "username", "password_env",
        "password_file", "from", "to", "timeout_seconds",
    },
}
EMAIL_RE = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+$")


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


def check_secret(notifier: Notifier) -> None:
    """Read the notifier's secret now (webhook URL, SMTP password); SecretError if unreadable."""
    if isinstance(notifier, WebhookNotifier):
        webhook_url(notifier)
    elif notifier.password is not None:
        notifier.password.read()


def secret_ref(entry: dict[str, Any], label: str, env_key: str, file_key: str,
               problems: list[str], *, required: bool) -> SecretRef | None:
    """Where the secret of `env_key`/`file_key` lives (one of the two), or None."""
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


def parse_notifiers(raw: Any, problems: list[str], where: str) -> list[Notifier]:
    """The valid `[[notifiers]]`; problems are prefixed with `where` (the file)."""
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


def _parse_notifier(entry: Any, i: int, seen: set[str], problems: list[str]) -> Notifier | None:
    before = len(problems)
    named = named_entry(entry, "notifiers", i, seen, problems)
    if named is None:
        return None
    label, name = named
    kind = entry.get("kind")
    if kind not in NOTIFIER_KEYS:
        problems.append(f"{label}.kind: must be 'webhook' or 'email'")
        return None
    for key in sorted(set(entry) - NOTIFIER_KEYS[kind]):
        problems.append(f"{label}.{key}: unknown key for a {kind} notifier")
    timeout = positive(entry, "timeout_seconds", label, 10.0, problems)
    notifier: Notifier | None = None
    if kind == NotifierKind.WEBHOOK:
        url = secret_ref(entry, label, "url_env", "url_file", problems, required=True)
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
    password = secret_ref(entry, label, "password_env", "password_file", problems,
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
