"""Every wait bounded on the notifier side: a receiver that trickles its answer (a webhook's
HTTP answer, an SMTP server's greeting) is cut at the notifier's deadline with a try
recorded, and a slow notifier never holds back another one's notifications."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from etl.config import parse_config
from etl.runtime.alerting import check
from etl.runtime.receiver import WebhookReceiver
from etl.store.models import AlertDelivery
from tests.daemon import PATIENCE
from tests.factories import store, wiresocket

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
HTTP_ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
SMTP_GREETING = b"220 slow.example ESMTP at your service, eventually\r\n"
# The slow notifier's deadline: well inside either trickled answer (13 s and 17 s).
SLOW_DEADLINE_S = 5


class Trickler:
    """A loopback server that answers one byte every 0.25 s (after reading the request, for
    HTTP; at once, for SMTP) until its answer is out or the peer hangs up.

    `witness()` is asked when a connection ends; `ended` keeps what it said, per connection.
    """

    def __init__(self, answer: bytes, *, read_request: bool,
                 witness: Callable[[], Any] = lambda: None) -> None:
        self.answer, self.read_request, self.witness = answer, read_request, witness
        self.ended: list[Any] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.read_request:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(4096)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(body) < length:
                        body += conn.recv(4096)
                for i in range(len(self.answer)):
                    conn.sendall(self.answer[i:i + 1])
                    time.sleep(0.25)
            except OSError:
                pass  # the client hung up: its deadline cut the answer
            self.ended.append(self.witness())

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture
def fast() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rec:
        yield rec


def config(monkeypatch: pytest.MonkeyPatch, slow: dict[str, Any], fast: WebhookReceiver) -> Any:
    monkeypatch.setenv("TEST_FAST_HOOK", fast.url)
    return parse_config({
        "sources": [{"name": "ws-prod", "kind": "wiresocket", "region": "eu",
                     "token_env": "UNSET_DEADLINE_TOKEN"}],
        # 5 s: the window in which the fast notifier's POST must arrive to show that it is not
        # held back; 1 s was too short for its thread on a busy machine (PostgreSQL, load 10).
        "notifiers": [{"name": "slow", "timeout_seconds": SLOW_DEADLINE_S, **slow},
                      {"name": "fast", "kind": "webhook", "url_env": "TEST_FAST_HOOK"}],
        "alerts": [{"name": "ws-high", "source": "ws-prod", "metric": "connections",
                    "above_pct": 90, "notify": ["slow", "fast"]}],
    })


def wait_ended(trickler: Trickler) -> None:
    deadline = time.monotonic() + PATIENCE
    while not trickler.ended and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["webhook", "email"])
def test_a_trickling_receiver_is_cut_at_its_deadline_and_never_holds_back_another_notifier(
    engine: Engine, fast: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, kind: str,
) -> None:
    # Each connection's end says whether the fast notifier had its POST by then.
    if kind == "webhook":
        trickler = Trickler(HTTP_ANSWER, read_request=True, witness=lambda: fast.posts)
        monkeypatch.setenv("TEST_SLOW_HOOK", f"http://127.0.0.1:{trickler.port}/hook")
        slow = {"kind": "webhook", "url_env": "TEST_SLOW_HOOK"}
        error = f"webhook slow: no answer within {SLOW_DEADLINE_S} s"
    else:
        trickler = Trickler(SMTP_GREETING, read_request=False, witness=lambda: fast.posts)
        slow = {"kind": "email", "smtp_host": "127.0.0.1", "smtp_port": trickler.port,
                "tls": "none", "from": "usage-etl@example.com", "to": ["ops@example.com"]}
        error = "email slow: no answer in time"
    try:
        store(engine, [wiresocket(T0, 93)])
        result = check(engine, config(monkeypatch, slow, fast), T0)
        wait_ended(trickler)
    finally:
        trickler.close()
    assert result.delivery.delivered == 1
    assert result.delivery.failed == [f"ws-high firing to slow: {error}"]
    assert [b["alert"] for b in fast.received] == ["ws-high"]
    # The answer (about 70 bytes, one per 0.25 s) was cut, and the fast notifier's POST had
    # arrived while the slow one was still trickling.
    assert trickler.ended == [1]
    with engine.connect() as conn:
        rows = conn.execute(select(AlertDelivery.notifier, AlertDelivery.attempts,
                                   AlertDelivery.last_error, AlertDelivery.delivered_at)
                            .order_by(AlertDelivery.notifier)).all()
    assert [tuple(r) for r in rows] == [("fast", 1, None, T0), ("slow", 1, error, None)]
