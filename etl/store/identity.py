"""Whether a SQLite database file was deleted or replaced under a running process.

A daemon keeps ids it read from the database (series ids) for as long as it runs. When its
SQLite file is deleted (and perhaps recreated by another command), those ids point at rows
that are no longer there, or at other rows. `generation(engine)` goes up once per such
replacement, so every cache made from the database can tell it is stale.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

from sqlalchemy import Engine


class _FileWatch:
    """An open descriptor on the database file, to tell when it was deleted or replaced.

    Once the file it holds has no name left, any file at the path is another database (its
    inode cannot be reused while we hold it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = 0
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._arm()

    def _arm(self) -> None:
        self.close()
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None  # not there yet: a file that appears later is the first one

    def check(self) -> int:
        with self._lock:
            if self._fd is None:
                self._arm()
                return self.generation
            # Deleted, or another file renamed over it: the file we hold has no name left
            # (one fstat: this runs for every observation a writer stores).
            if os.fstat(self._fd).st_nlink == 0:
                self.generation += 1
                self._arm()
            return self.generation

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_watches: weakref.WeakKeyDictionary[Engine, _FileWatch | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def generation(engine: Engine) -> int:
    """How many times `engine`'s SQLite file was found replaced or deleted.

    0 for PostgreSQL, in-memory and URI databases; the first call starts watching.
    """
    with _lock:
        if engine not in _watches:
            _watches[engine] = _watch_for(engine)
            watch = _watches[engine]
            if watch is not None:
                weakref.finalize(engine, watch.close)
        watch = _watches[engine]
    return 0 if watch is None else watch.check()


def _watch_for(engine: Engine) -> _FileWatch | None:
    url = engine.url
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return _FileWatch(Path(db).expanduser().resolve())
