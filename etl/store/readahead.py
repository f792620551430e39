"""Reading ahead: an iterator's next item made in a thread while the caller works on this one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def ahead(items: Iterator[T]) -> Generator[T, None, None]:
    """Yield `items`' items in order, each next one made in a thread meanwhile.

    For a producer that is Python work (parsing archive lines) and a caller that mostly
    waits on another process (a PostgreSQL server writing a batch): the two overlap, on a
    second core if there is one. At most two items are alive at once, the one the caller
    holds and the one being made. An exception raised making an item is raised here in
    its place. When the caller stops early (an error, Ctrl-C, `break`), the thread stops
    after the item it is making and is waited for, so nothing reads on behind the caller.

    Not for a caller that lets go of the interpreter often: Python's sqlite3 does for every
    row it writes, and each time it would wait for the producer's turn (5 ms) to end.
    """
    handoff: queue.Queue[tuple[object, BaseException | None]] = queue.Queue()
    taken = threading.Semaphore(0)  # one release per item taken (or to say: stop)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                handoff.put((item, None))
                taken.acquire()  # the next item is made only once this one was taken
                if stop.is_set():
                    return
            handoff.put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread instead
            handoff.put((_END, exc))

    thread = threading.Thread(target=produce, name="usage-etl-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = handoff.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            taken.release()
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        taken.release()  # the producer may wait for a taking that will not come
        thread.join()
