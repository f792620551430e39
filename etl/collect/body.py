"""One vendor answer read within one deadline (status, headers, body); the body capped, decoded.

A socket's read timeout bounds each wait for bytes, not the answer: a vendor sending one
byte every 0.2 s keeps a read going for as long as it likes, headers included. A `Watchdog`
(etl.watchdog) is armed for each try and ends it at its deadline.

The body is read undecoded and decoded here (gzip, deflate), at most MAX_BODY_BYTES out
whatever the compression ratio: a decompression bomb costs no more memory than a large
body, and a body labelled gzip that is not is named as such.
"""

from __future__ import annotations

import http.client
import zlib
from typing import Any

import requests

from etl.collect.failure import HttpFailure
from etl.vendors.types import Outcome
from etl.watchdog import Watchdog, WatchedAdapter

__all__ = ["ACCEPTED_ENCODINGS", "MAX_BODY_BYTES", "Watchdog", "WatchedAdapter", "read_body"]

MAX_BODY_BYTES = 1024 * 1024
READ_CHUNK = 64 * 1024
# What the session asks for (Accept-Encoding) and this module decodes.
ACCEPTED_ENCODINGS = "gzip, deflate"


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
