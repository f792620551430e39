"""The HTTP transport of notifiers: POST JSON to a secret URL; any 2xx is delivered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from urllib3.util.retry import Retry

from etl.errors import DeliveryError
from etl.watchdog import Watchdog, WatchedAdapter


def post_json(label: str, url: str, body: Mapping[str, Any], timeout_s: float) -> None:
    """POST `body` as JSON; a 2xx answer is delivered, anything else a DeliveryError.

    The whole request, connect to last byte of the answer, ends within `timeout_s` whatever
    the receiver does (a receiver trickling its answer is cut there: etl.watchdog), so a
    delivery's lease outlasts it (etl.alerts.outbox). Redirects are not followed (a POST
    turned into a GET delivers nothing). The error message (starting with `label`) says what
    happened (timeout, connection, status) but never the URL, which often carries the
    receiver's token in its path.
    """
    with requests.Session() as session:
        adapter = WatchedAdapter(max_retries=Retry(0, read=False))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with Watchdog(timeout_s) as dog:
            try:
                resp = session.post(
                    url, json=body, timeout=timeout_s, allow_redirects=False,
                    headers={"User-Agent": "usage-etl"},
                )
                with resp:
                    status = resp.status_code
            except requests.RequestException as exc:
                if dog.cut.is_set() or isinstance(exc, requests.Timeout):
                    raise DeliveryError(f"{label}: no answer within {timeout_s:g} s") from None
                if isinstance(exc, requests.ConnectionError):
                    raise DeliveryError(f"{label}: cannot connect") from None
                raise DeliveryError(f"{label}: {type(exc).__name__}") from None
            if dog.cut.is_set():
                # Cut mid-answer after a whole status line: http.client takes the cut for
                # the end of the headers and gives the status, but the answer did not end
                # within the deadline (etl.collect.body refuses such a cut body alike).
                raise DeliveryError(f"{label}: no answer within {timeout_s:g} s")
    if not 200 <= status < 300:
        raise DeliveryError(f"{label}: HTTP {status}")
