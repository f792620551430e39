"""Database steps with a client-side time limit: a silent server cannot hold a poll."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from etl.errors import DatabaseTimeoutError

_T = TypeVar("_T")

# Steps that may wait on the database at once. A hung server keeps each given-up step's
# thread until its connection breaks; past this many, steps are refused at once.
MAX_WAITING_STEPS = 8


class DatabaseSteps:
    """Runs each database step in a daemon thread and waits at most `limit_s` for it.

    A server that keeps the connection open but answers nothing (no statement_timeout or TCP
    timeout helps there) costs a step `limit_s`, then DatabaseTimeoutError. Daemon threads:
    a step still stuck never delays the process's exit.
    """

    def __init__(self, limit_s: float, max_waiting: int = MAX_WAITING_STEPS) -> None:
        self.limit_s = limit_s
        self._free = threading.BoundedSemaphore(max_waiting)
        self.max_waiting = max_waiting

    def run(self, what: str, fn: Callable[..., _T], *args: Any) -> _T:
        """fn(*args) if it finishes within the limit; its exception if it raised one.

        Raises DatabaseTimeoutError naming `what` when it did not answer in time, or at once
        when `max_waiting` earlier steps are all still waiting on the database.
        """
        if not self._free.acquire(blocking=False):
            raise DatabaseTimeoutError(
                f"{what}: {self.max_waiting} earlier database steps are still waiting for an "
                "answer")
        box: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc
            finally:
                self._free.release()
                done.set()

        threading.Thread(target=call, name=f"usage-etl-db {what}", daemon=True).start()
        if not done.wait(self.limit_s):
            raise DatabaseTimeoutError(
                f"{what}: the database did not answer within {self.limit_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]
