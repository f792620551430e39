"""The `webhook` notifier kind: POSTs the SPEC 8 JSON to a secret URL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from etl.config.notifiers.base import NotifierType, SecretRef, Transports, secret_ref
from etl.errors import SecretError


@dataclass(frozen=True)
class WebhookNotifier:
    """A `kind = "webhook"` notifier: POSTs the JSON payload to a secret URL."""

    name: str
    url: SecretRef
    timeout_seconds: float = 10.0
    kind: str = "webhook"

    def secrets(self) -> list[str]:
        """The URL, and its path and query alone when 8 characters or more.

        An HTTP library may log the path and query apart from the host.
        """
        url = webhook_url(self)
        parts = urlsplit(url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        return [url, tail] if len(tail) >= 8 else [url]

    def deliver(self, body: Mapping[str, Any], transports: Transports) -> None:
        """POST `body`; the error never names the URL (it often carries a token)."""
        transports.post_json(f"webhook {self.name}", webhook_url(self), body,
                             self.timeout_seconds)


def webhook_url(notifier: WebhookNotifier) -> str:
    """The notifier's URL, read now from its variable or file.

    Raises SecretError naming the config key (never the value) when it is unset or is not an
    http:// or https:// URL made of printable ASCII.
    """
    url = notifier.url.read()
    why = _url_problem(url)
    if why:
        raise SecretError(f"{notifier.url.origin}: is not an http:// or https:// URL ({why})")
    return url


def _url_problem(url: str) -> str | None:
    """What is wrong with `url` as a webhook URL, in words that never quote it; None if fine."""
    if not url.isascii() or not url.isprintable() or " " in url:
        return "it has a space or a character that is not printable ASCII"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "it cannot be parsed"
    if parts.scheme not in ("http", "https"):
        return "the scheme is not http or https"
    if not parts.hostname:
        return "it has no host"
    try:
        _ = parts.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        return "the port is not a number from 1 to 65535"
    return None


def parse(entry: Mapping[str, Any], label: str, name: str, timeout: float,
          problems: list[str]) -> WebhookNotifier | None:
    """The webhook notifier of one `[[notifiers]]` table, or None (problems appended)."""
    url = secret_ref(entry, label, "url_env", "url_file", problems, required=True)
    return None if url is None else WebhookNotifier(name=name, url=url, timeout_seconds=timeout)


WEBHOOK = NotifierType(name="webhook", keys=frozenset({"url_env", "url_file"}), parse=parse)
