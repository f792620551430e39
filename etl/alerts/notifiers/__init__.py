"""Send one notification through one configured notifier: webhook or email (SPEC 8)."""

from __future__ import annotations

from typing import Any

from etl.alerts.notifiers.email import send_email
from etl.alerts.notifiers.webhook import send_webhook
from etl.alerts.rules import EmailNotifier, Notifier


def send(notifier: Notifier, body: dict[str, Any]) -> None:
    """Deliver `body` (the SPEC 8 payload) through `notifier`, reading its secret now.

    Raises DeliveryError (message free of secrets) when it is not delivered, SecretError when
    its URL or password cannot be read.
    """
    if isinstance(notifier, EmailNotifier):
        send_email(notifier, body)
    else:
        send_webhook(notifier, body)
