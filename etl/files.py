"""Atomic file writes: readers see the old file or the whole new one, never half of one."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_writer(path: Path, *, durable: bool = False, newline: str | None = None,
                  binary: bool = False, tmp_name: str | None = None) -> Iterator[IO]:  # type: ignore[type-arg]
    """Write `path` through a temporary file beside it, renamed over `path` on success.

    On any error the temporary file is removed and the error propagates (OSError from a
    full or read-only disk included); `path` is left as it was. `durable` also fsyncs the
    file and its folder, so the rename survives a crash.
    """
    tmp = path.with_name(tmp_name or (path.name + ".tmp"))
    try:
        fh: IO  # type: ignore[type-arg]
        opened = (open(tmp, "wb") if binary  # noqa: SIM115 - closed by the with below
                  else open(tmp, "w", encoding="utf-8", newline=newline))  # noqa: SIM115
        with opened as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only file system refuses even this; nothing was written
            pass
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):
            exc.filename = str(path)  # the file the user asked for, not our temporary one
        raise
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str, *, newline: str | None = None) -> Path:
    """Replace `path` with `text` (UTF-8) atomically; return `path`."""
    with atomic_writer(path, newline=newline) as fh:
        fh.write(text)
    return path


def fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable: the directory entry itself must reach the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# What a write failed on, named as a person would (strerror alone says "Errno 28").
_DISK_PROBLEMS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system or the process's file size limit",
    errno.EACCES: "permission denied",
}


def os_error_text(exc: OSError) -> str:
    """One line for a failed file operation: the file, then a full or read-only disk named."""
    reason = _DISK_PROBLEMS.get(exc.errno or 0) or exc.strerror or str(exc)
    name = exc.filename
    return f"{name}: {reason}" if name else reason
