"""The webhook notifier: POST the SPEC 8 JSON to a secret URL; any 2xx is delivered."""

from __future__ import annotations

from typing import Any

import requests

from etl.config import WebhookNotifier, webhook_url
from etl.errors import DeliveryError


def send_webhook(notifier: WebhookNotifier, body: dict[str, Any]) -> None:
    """POST `body` as JSON; a 2xx answer is delivered, anything else a DeliveryError.

    Redirects are not followed (a POST turned into a GET delivers nothing). The error
    message says what happened (timeout, connection, status) but never the URL, which
    often carries the receiver's token in its path.
    """
    url = webhook_url(notifier)
    try:
        resp = requests.post(
            url, json=body, timeout=notifier.timeout_seconds, allow_redirects=False,
            headers={"User-Agent": "usage-etl"},
        )
    except requests.Timeout:
        raise DeliveryError(
            f"webhook {notifier.name}: no answer within {notifier.timeout_seconds:g} s"
        ) from None
    except requests.ConnectionError:
        raise DeliveryError(f"webhook {notifier.name}: cannot connect") from None
    except requests.RequestException as exc:
        raise DeliveryError(f"webhook {notifier.name}: {type(exc).__name__}") from None
    with resp:
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(f"webhook {notifier.name}: HTTP {resp.status_code}")
