"""The HTTP transport of notifiers: POST JSON to a secret URL; any 2xx is delivered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from etl.errors import DeliveryError


def post_json(label: str, url: str, body: Mapping[str, Any], timeout_s: float) -> None:
    """POST `body` as JSON; a 2xx answer is delivered, anything else a DeliveryError.

    Redirects are not followed (a POST turned into a GET delivers nothing). The error
    message (starting with `label`) says what happened (timeout, connection, status) but
    never the URL, which often carries the receiver's token in its path.
    """
    try:
        resp = requests.post(
            url, json=body, timeout=timeout_s, allow_redirects=False,
            headers={"User-Agent": "usage-etl"},
        )
    except requests.Timeout:
        raise DeliveryError(f"{label}: no answer within {timeout_s:g} s") from None
    except requests.ConnectionError:
        raise DeliveryError(f"{label}: cannot connect") from None
    except requests.RequestException as exc:
        raise DeliveryError(f"{label}: {type(exc).__name__}") from None
    with resp:
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(f"{label}: HTTP {resp.status_code}")
