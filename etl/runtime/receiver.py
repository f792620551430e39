"""A webhook receiver on loopback that keeps what it is sent: the demo's alert endpoint."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class WebhookReceiver:
    """Listens on 127.0.0.1 (a free port unless given) and records each JSON body POSTed.

    Use as a context manager (or `start()` / `stop()`, which close and reopen the same
    port); `url` is where to point a webhook notifier, `received` the bodies answered with a
    2xx, in arrival order. `status` is the answer: 204 unless set (503 plays a receiver that
    is down). `delay` seconds pass between reading a request and answering it (a slow
    receiver); `posts` counts every POST read, answered or not, and `paths` holds the
    request path of each, in arrival order (any path is answered alike, so senders given
    different URLs can be told apart).
    """

    def __init__(self, port: int = 0, path: str = "/hook") -> None:
        self.received: list[dict[str, Any]] = []
        self.path = path
        self.port = port
        self.status = 204
        self.delay = 0.0
        self.posts = 0
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length))
                    status = owner.status
                except ValueError:
                    status = 400
                with owner._lock:
                    owner.posts += 1
                    owner.paths.append(self.path)
                if owner.delay:
                    time.sleep(owner.delay)
                if 200 <= status < 300:
                    with owner._lock:
                        owner.received.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    @property
    def url(self) -> str:
        """The receiver's URL, secret path included (never log it)."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> WebhookReceiver:
        """Listen (again, on the same port once one was chosen)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="webhook-receiver").start()
        return self

    def stop(self) -> None:
        """Close the port: senders get "connection refused" until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
