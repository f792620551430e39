"""One vendor answer read within one deadline (status, headers, body); the body capped, decoded.

A socket's read timeout bounds each wait for bytes, not the answer: a vendor sending one
byte every 0.2 s keeps a read going for as long as it likes, headers included. A `Watchdog`
is armed for each try; the connection classes the session uses (`WatchedAdapter`) show it
their socket as they open it and before they read an answer, and when the try's time is up
it shuts that socket down, which ends whatever read is waiting.

The body is read undecoded and decoded here (gzip, deflate), at most MAX_BODY_BYTES out
whatever the compression ratio: a decompression bomb costs no more memory than a large
body, and a body labelled gzip that is not is named as such.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import zlib
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from etl.collect.failure import HttpFailure
from etl.vendors.types import Outcome

MAX_BODY_BYTES = 1024 * 1024
READ_CHUNK = 64 * 1024
# What the session asks for (Accept-Encoding) and this module decodes.
ACCEPTED_ENCODINGS = "gzip, deflate"

_current = threading.local()


class Watchdog:
    """Ends one try at `budget` seconds: shuts down the socket the try is using then.

    Use as a context manager around the request and the body read, in the thread that
    makes them. `cut` is set once the time was up.
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.cut = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, budget), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        _current.dog = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _current.dog = None

    def watch(self, sock: socket.socket) -> None:
        """The socket the try now uses; shut at once if the time is already up."""
        with self._lock:
            self._sock = sock
            late = self.cut.is_set()
        if late:
            _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.cut.set()
            sock = self._sock
        if sock is not None:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Shut a connection down from another thread, through a duplicate of its descriptor.

    shutdown acts on the connection, so the reading thread's recv returns at once, and
    nothing of the socket object (nor of TLS state) is touched from here.
    """
    try:
        fd = os.dup(sock.fileno())
    except (OSError, ValueError):
        return  # closed already: the read has ended
    try:
        with socket.socket(fileno=fd) as dup:
            dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected any more: the read has ended anyway


def _watch(sock: socket.socket | None) -> None:
    dog: Watchdog | None = getattr(_current, "dog", None)
    if dog is not None and sock is not None:
        dog.watch(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)  # before TLS and the request: a slow handshake is bounded too
        return sock

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self.sock)  # a kept-alive connection is not opened again
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct or via a proxy) show the Watchdog their sockets."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The adapter's pool manager, making watched connections."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        """The pool manager of a proxy, making watched connections."""
        manager = super().proxy_manager_for(proxy, **kwargs)
        if hasattr(manager, "pool_classes_by_scheme"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def read_body(response: requests.Response, dog: Watchdog) -> bytes:
    """The decoded body, at most MAX_BODY_BYTES, read before `dog` cuts the try.

    Raises HttpFailure: invalid_response for a body too large (declared, on the wire or
    decoded), an encoding not asked for, or data that is not what its label says; timeout
    when the time ran out (saying how many bytes had come); connection_error when the
    connection ended before the declared length.
    """
    status = response.status_code
    declared = response.headers.get("Content-Length", "")
    length = int(declared) if declared.isdigit() else None
    if length is not None and length > MAX_BODY_BYTES:
        raise _too_large(f"response body of {length} bytes is larger than {MAX_BODY_BYTES}",
                         status)
    decoder = _Decoder(response.headers.get("Content-Encoding", ""), status)
    read = _raw_reader(response)
    wire = 0
    try:
        while data := read(READ_CHUNK):
            wire += len(data)
            if wire > MAX_BODY_BYTES:
                raise _too_large(f"response body larger than {MAX_BODY_BYTES} bytes", status)
            decoder.feed(data)
    except (OSError, http.client.HTTPException) as exc:
        if not dog.cut.is_set():
            raise HttpFailure(f"connection failed while reading the body after {wire} bytes: "
                              f"{type(exc).__name__}", Outcome.CONNECTION_ERROR,
                              retriable=True, http_status=status) from None
    of = f" of {length}" if length is not None else ""
    if dog.cut.is_set():  # also when the cut looked like the end of a body without a length
        raise HttpFailure(f"read timed out: {wire}{of} bytes of the body in {dog.budget:.1f} s",
                          Outcome.TIMEOUT, retriable=True, http_status=status)
    if length is not None and wire < length:
        raise HttpFailure(f"connection closed after {wire}{of} bytes of the body",
                          Outcome.CONNECTION_ERROR, retriable=True, http_status=status)
    return decoder.finish()


def _raw_reader(response: requests.Response) -> Any:
    """A read(n) of the body as sent (not decoded) returning what has come, up to n bytes.

    http.client's read1 returns as soon as some bytes are there, so a cut try still knows
    how many had come; urllib3's own read waits to fill n.
    """
    raw = response.raw
    inner = getattr(raw, "_fp", None)
    if inner is not None and hasattr(inner, "read1"):
        return inner.read1
    return lambda n: raw.read(n, decode_content=False)


def _too_large(message: str, status: int) -> HttpFailure:
    return HttpFailure(message, Outcome.INVALID_RESPONSE, retriable=False, http_status=status)


class _Decoder:
    """Undoes a body's Content-Encoding, never holding more than MAX_BODY_BYTES out."""

    def __init__(self, label: str, status: int) -> None:
        self.label = label.strip().lower()
        self.status = status
        self.out: list[bytes] = []
        self.size = 0
        self.zlib: Any = None
        self.members = 0  # whole compressed members decoded
        self.ended = False  # what follows the last whole member is not read
        if self.label in ("", "identity"):
            self.kind = ""
        elif self.label in ("gzip", "x-gzip", "deflate"):
            self.kind = "deflate" if self.label == "deflate" else "gzip"
        else:
            raise HttpFailure(f"response body: Content-Encoding {label!r} is not one usage-etl "
                              f"asked for ({ACCEPTED_ENCODINGS})", Outcome.INVALID_RESPONSE,
                              retriable=False, http_status=status)

    def feed(self, data: bytes) -> None:
        """Decode the next bytes of the body as sent."""
        if not self.kind:
            self._keep(data)
            return
        if self.ended:
            return
        try:
            while data:
                if self.zlib is None:
                    self.zlib = zlib.decompressobj(self._wbits(data))
                room = MAX_BODY_BYTES - self.size + 1  # one more: enough to know it is over
                # More than `room` is never made: past the cap, _keep refuses it.
                self._keep(self.zlib.decompress(data, room))
                data = b""
                if self.zlib.eof:  # a gzip body may be several members end to end
                    data, self.zlib = self.zlib.unused_data, None
                    self.members += 1
        except zlib.error as exc:
            if not self.members:
                raise self._mislabelled(str(exc)) from None
            # Bytes after a whole member that are not another one (padding): ignored, as
            # urllib3 does.
            self.zlib, self.ended = None, True

    def _wbits(self, head: bytes) -> int:
        if self.kind == "gzip":
            return 16 + zlib.MAX_WBITS
        # "deflate" is zlib-wrapped by the standard, raw by some servers: tell by the header.
        zlib_header = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS

    def _keep(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_BODY_BYTES:
            decoded = f" once decoded ({self.label})" if self.kind else ""
            raise _too_large(f"response body larger than {MAX_BODY_BYTES} bytes{decoded}",
                             self.status)
        if data:
            self.out.append(data)

    def _mislabelled(self, reason: str) -> HttpFailure:
        return HttpFailure(f"response body: labelled Content-Encoding: {self.label} but not "
                           f"{self.kind} data ({reason})", Outcome.INVALID_RESPONSE,
                           retriable=False, http_status=self.status)

    def finish(self) -> bytes:
        """The whole decoded body (HttpFailure if compressed data stopped half way)."""
        if self.zlib is not None and not self.zlib.eof:
            raise self._mislabelled("the compressed data ends early")
        return b"".join(self.out)
