"""Send one notification through one configured notifier: webhook or email (SPEC 8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from etl.alerts.notifiers.email import send_email
from etl.alerts.notifiers.webhook import send_webhook
from etl.config import EmailNotifier, Notifier, WebhookNotifier, webhook_url
from etl.errors import SecretError


def send(notifier: Notifier, body: dict[str, Any]) -> None:
    """Deliver `body` (the SPEC 8 payload) through `notifier`, reading its secret now.

    Raises DeliveryError (message free of secrets) when it is not delivered, SecretError when
    its URL or password cannot be read.
    """
    if isinstance(notifier, EmailNotifier):
        send_email(notifier, body)
    else:
        send_webhook(notifier, body)


def notifier_secrets(notifiers: Iterable[Notifier]) -> list[str]:
    """The secret values of `notifiers` to mask in logs.

    Each webhook URL, also its path and query alone (an HTTP library may log them apart from
    the host), and SMTP passwords. Secrets that cannot be read are left out (commands refuse
    them before sending).
    """
    found: list[str] = []
    for notifier in notifiers:
        try:
            if isinstance(notifier, WebhookNotifier):
                url = webhook_url(notifier)
                parts = urlsplit(url)
                found.append(url)
                tail = parts.path + (f"?{parts.query}" if parts.query else "")
                if len(tail) >= 8:
                    found.append(tail)
            elif notifier.password is not None:
                found.append(notifier.password.read())
        except SecretError:
            continue
    return found
