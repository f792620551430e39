"""Send one notification through one configured notifier, over HTTP or SMTP (SPEC 8).

What a notifier sends and where is its kind's (etl.config.notifiers); this package is the
I/O: `http` (POST JSON) and `smtp` (one message to a server).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from typing import Any

from etl.alerts.notifiers.http import post_json
from etl.alerts.notifiers.smtp import send_mail
from etl.config import MailServer, Notifier
from etl.errors import SecretError


class _Transports:
    """The transports every notifier kind sends through (etl.config.Transports)."""

    def post_json(self, label: str, url: str, body: Mapping[str, Any],
                  timeout_s: float) -> None:
        post_json(label, url, body, timeout_s)

    def send_mail(self, label: str, server: MailServer, message: EmailMessage,
                  timeout_s: float) -> None:
        send_mail(label, server, message, timeout_s)


TRANSPORTS = _Transports()


def send(notifier: Notifier, body: dict[str, Any]) -> None:
    """Deliver `body` (the SPEC 8 payload) through `notifier`, reading its secret now.

    Raises DeliveryError (message free of secrets) when it is not delivered, SecretError when
    its URL or password cannot be read.
    """
    notifier.deliver(body, TRANSPORTS)


def notifier_secrets(notifiers: Iterable[Notifier]) -> list[str]:
    """The secret values of `notifiers` to mask in logs (each kind's `secrets`).

    Secrets that cannot be read are left out (commands refuse them before sending).
    """
    found: list[str] = []
    for notifier in notifiers:
        try:
            found += notifier.secrets()
        except SecretError:
            continue
    return found
