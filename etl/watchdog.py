"""One deadline per HTTP request, whatever the peer does (vendors and notifier receivers).

A socket's read timeout bounds each wait for bytes, not the answer: a peer sending one
byte every 0.2 s keeps a read going for as long as it likes, headers included. A `Watchdog`
is armed for each try; the connection classes a session uses (`WatchedAdapter`) show it
their socket as they open it and before they read an answer, and when the try's time is up
it shuts that socket down, which ends whatever read is waiting.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

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
        self._armed = False

    def __enter__(self) -> Watchdog:
        _current.dog = self
        self._armed = True
        _ALARMS.arm(time.monotonic() + max(0.0, self.budget), self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._armed = False  # the alarm thread drops it when its time comes
        _current.dog = None

    def watch(self, sock: socket.socket) -> None:
        """The socket the try now uses; shut at once if the time is already up."""
        with self._lock:
            self._sock = sock
            late = self.cut.is_set()
        if late:
            _shut(sock)

    def _fire(self) -> None:
        if not self._armed:
            return
        with self._lock:
            self.cut.set()
            sock = self._sock
        if sock is not None:
            _shut(sock)


class _Alarms:
    """One thread firing every armed Watchdog at its time.

    A timer thread per try cost more CPU than parsing a history page, and a backfill makes
    thousands of tries.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Watchdog]] = []
        self._count = itertools.count()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def arm(self, at: float, dog: Watchdog) -> None:
        with self._wake:
            heapq.heappush(self._due, (at, next(self._count), dog))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="usage-etl-watchdog",
                                                daemon=True)
                self._thread.start()
            elif self._due[0][2] is dog:
                self._wake.notify()  # due before what the thread waits for

    def _run(self) -> None:
        while True:
            with self._wake:
                # Tries that ended are dropped from the front as they come.
                while self._due and not self._due[0][2]._armed:
                    heapq.heappop(self._due)
                if not self._due:
                    self._wake.wait(60.0)
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                dog = heapq.heappop(self._due)[2]
            dog._fire()  # noqa: SLF001 - the alarm's own Watchdog

    def reset(self) -> None:
        """After a fork: the child has no alarm thread, and the lock may be held."""
        self.__init__()  # type: ignore[misc]


_ALARMS = _Alarms()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ALARMS.reset)


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


def watch_socket(sock: socket.socket | None) -> None:
    """Show the running try's Watchdog (if any, in this thread) the socket it now uses."""
    dog: Watchdog | None = getattr(_current, "dog", None)
    if dog is not None and sock is not None:
        dog.watch(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        watch_socket(sock)  # before TLS and the request: a slow handshake is bounded too
        return sock

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        watch_socket(self.sock)  # a kept-alive connection is not opened again
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        watch_socket(sock)
        return sock

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        watch_socket(self.sock)
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


