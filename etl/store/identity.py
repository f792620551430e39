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
    inode cannot be reused while we hold it). The descriptor is closed only then: see
    _by_path.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = 0
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._arm()

    def _arm(self) -> None:
        # Only a descriptor whose file has no name left is closed (see _by_path).
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
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


# One watch per database file, shared by every engine of the process, its descriptor kept
# open while the file has a name. Closing any descriptor of a file cancels every POSIX lock
# the process holds on it, SQLite's too (https://www.sqlite.org/howtocorrupt.html, 2.2):
# closed when an engine was collected, it let another process delete the -shm of a WAL
# database this process was writing and write beside it. One descriptor per live database
# file the process used is the price (a daemon: one or two).
_by_path: dict[Path, _FileWatch] = {}
_watches: weakref.WeakKeyDictionary[Engine, _FileWatch | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def generation(engine: Engine) -> int:
    """How many times `engine`'s SQLite file was found replaced or deleted.

    0 for PostgreSQL, in-memory and URI databases; the first call starts watching (the file
    at that path, for every engine of the process: the count is the path's).
    """
    with _lock:
        if engine in _watches:
            watch = _watches[engine]
        else:
            path = _path_of(engine)
            watch = None if path is None else _by_path.get(path)
            if path is not None and watch is None:
                watch = _by_path[path] = _FileWatch(path)
            _watches[engine] = watch
    return 0 if watch is None else watch.check()


def _path_of(engine: Engine) -> Path | None:
    url = engine.url
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser().resolve()
