"""Compaction (SPEC 13): raw responses older than `raw_days` move into monthly archive files.

Then, on PostgreSQL, the samples of the whole UTC days before the cutoff are packed
(etl.store.packs).

A batch of one source's snapshots in one UTC month is merged into `SOURCE/YYYY-MM.jsonl.gz`
(written beside it as `.tmp`, fsynced, read back and compared, renamed over the old file,
the folder fsynced) and only then deleted from the database, by id. A crash at any point
leaves either the old file and the rows, or the new file and the rows (the next run finds
them in the file and deletes them): nothing is lost and a re-run completes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, select

from etl.errors import UsageEtlError
from etl.files import fsync_dir, os_error_text
from etl.store.export import archive_line
from etl.store.models import Snapshot
from etl.store.packs import pack
from etl.timefmt import month_start, next_month

# Snapshots per batch: what one pass holds in memory (ids, times, payload texts).
BATCH_ROWS = 20_000
# Ids per DELETE statement (SQLite's bound-parameter limit is 32766 on current builds).
DELETE_CHUNK = 500
# Bytes read per step when a written file is read back.
READ_BLOCK = 1 << 20
DEFAULT_ARCHIVE_DIR = "./usage-etl-archive"

# Called with the number of snapshots moved so far (a progress bar on a terminal).
Progress = Callable[[int], None]
# Called with the name of each step as it completes; a test kills the process at one.
Checkpoint = Callable[[str], None]


class CompactError(UsageEtlError):
    """An archive file could not be written, read back or replaced; nothing was deleted."""


@dataclass
class CompactResult:
    """What a compaction did: snapshots moved out of the database, files written."""

    moved: int = 0
    files: list[Path] = field(default_factory=list)
    packed: int = 0  # samples packed (PostgreSQL, etl.store.packs)

    def summary(self) -> str:
        """One line for people."""
        packed = (f"; {self.packed} samples packed into one row per series and day"
                  if self.packed else "")  # PostgreSQL only (etl.store.packs)
        return (f"{self.moved} raw responses moved to {len(self.files)} archive "
                f"file{'s' if len(self.files) != 1 else ''}{packed}")


def archive_path(archive_dir: Path, source: str, month: datetime) -> Path:
    """`archive_dir/SOURCE/YYYY-MM.jsonl.gz` for the UTC month starting at `month`."""
    return archive_dir / source / f"{month:%Y-%m}.jsonl.gz"


def archive_files(archive_dir: Path, lo: datetime | None, hi: datetime | None) -> list[Path]:
    """The archive files that exist for any source and any UTC month overlapping [lo, hi).

    None for `lo` or `hi`: no bound on that side (an export to 9999-12-31 has no end a
    datetime holds).
    """
    if not archive_dir.is_dir():
        return []
    first = "" if lo is None else f"{lo.year:04d}-{lo.month:02d}"
    last = None if hi is None else hi - timedelta(microseconds=1)
    end = "~" if last is None else f"{last.year:04d}-{last.month:02d}"
    return sorted(p for p in archive_dir.glob("*/*.jsonl.gz")
                  if first <= p.name.removesuffix(".jsonl.gz") <= end)


def compact(
    engine: Engine,
    archive_dir: Path,
    cutoff: datetime,
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
) -> CompactResult:
    """Move every snapshot observed before `cutoff` into the archive files; keep the samples.

    Memory stays within one batch (`batch_rows` snapshots) whatever the history's length.

    Raises:
        CompactError: a file could not be written, read back or replaced (one line: the
            file and the reason, such as a full or read-only disk); the rows of that batch
            are still in the database.
    """
    result = CompactResult()
    step = checkpoint or (lambda _name: None)
    with engine.connect() as conn:
        sources = sorted(conn.scalars(select(Snapshot.source).distinct()))
    for source in sources:
        _compact_source(engine, archive_dir, source, cutoff, batch_rows, result, progress, step)
    # The whole days before the cutoff have their raw responses archived now: on PostgreSQL
    # their samples pack into one row per series and day (etl.store.packs).
    result.packed = pack(engine, cutoff)
    return result


def _compact_source(engine: Engine, archive_dir: Path, source: str, cutoff: datetime,
                    batch_rows: int, result: CompactResult, progress: Progress | None,
                    step: Checkpoint) -> None:
    """Move one source's snapshots before `cutoff`, oldest month first, batch by batch."""
    while True:
        found = _next_batch(engine, source, cutoff, batch_rows)
        if found is None:
            return
        month, rows = found
        path = archive_path(archive_dir, source, month)
        _write_merged(path, source, rows, step)
        ids = [r[0] for r in rows]
        with engine.begin() as conn:
            for i in range(0, len(ids), DELETE_CHUNK):
                conn.execute(delete(Snapshot).where(Snapshot.id.in_(ids[i:i + DELETE_CHUNK])))
        step("deleted")
        result.moved += len(rows)
        if path not in result.files:
            result.files.append(path)
        if progress is not None:
            progress(result.moved)


def pending_count(engine: Engine, cutoff: datetime) -> int:
    """How many snapshots a compaction with this cutoff would move."""
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Snapshot)
                               .where(Snapshot.observed_at < cutoff)) or 0)


def cutoff_for(now: datetime, raw_days: int) -> datetime:
    """The instant before which raw responses leave the database: `raw_days` before now."""
    return now.astimezone(UTC) - timedelta(days=raw_days)


# id, observed_at, payload, window start, window end (history sources, SPEC 10)
Row = tuple[int, datetime, str, datetime | None, datetime | None]


def _next_batch(engine: Engine, source: str, cutoff: datetime, limit: int
                ) -> tuple[datetime, list[Row]] | None:
    """The source's oldest month with snapshots before `cutoff`: up to `limit` of them."""
    with engine.connect() as conn:
        # (source, observed_at) is the snapshots' unique key: an index range read.
        at = conn.scalar(select(func.min(Snapshot.observed_at))
                         .where(Snapshot.source == source, Snapshot.observed_at < cutoff))
        if at is None:
            return None
        month = month_start(at)
        end = min(next_month(month), cutoff)
        rows = [(int(i), t, p, ws, we) for i, t, p, ws, we in conn.execute(
            select(Snapshot.id, Snapshot.observed_at, Snapshot.payload, Snapshot.window_start,
                   Snapshot.window_end)
            .where(Snapshot.source == source, Snapshot.observed_at >= month,
                   Snapshot.observed_at < end)
            .order_by(Snapshot.observed_at).limit(limit))]
    return month, rows


def _write_merged(path: Path, source: str, rows: list[Row], step: Checkpoint) -> None:
    """Replace `path` by its lines merged with `rows` (time order, each instant once), checked."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        lines = 0
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                for line in _merged(path, source, rows):
                    data = line.encode("utf-8") + b"\n"
                    gz.write(data)
                    digest.update(data)
                    lines += 1
            raw.flush()
            os.fsync(raw.fileno())
        step("written")
        if _read_back(tmp) != (lines, digest.hexdigest()):
            raise CompactError(f"{tmp}: the archive file did not read back as written; "
                               "nothing was removed from the database")
        step("checked")
        os.replace(tmp, path)
        fsync_dir(path.parent)
        step("renamed")
    except OSError as exc:
        _discard(tmp)
        if exc.filename in (None, str(tmp)):
            exc.filename = str(path)  # the file the user knows, not our temporary one
        raise CompactError(f"cannot write archive file {os_error_text(exc)}; nothing was "
                           "removed from the database") from exc
    except CompactError:
        _discard(tmp)
        raise


def _merged(path: Path, source: str, rows: list[Row]) -> Iterator[str]:
    """The existing file's lines and the rows' lines in time order; an instant in both once."""
    existing = _existing_lines(path)
    pending = iter(rows)
    row = next(pending, None)
    for at, line in existing:
        while row is not None and row[1] < at:
            yield archive_line(source, *row[1:])
            row = next(pending, None)
        if row is not None and row[1] == at:  # archived by a run that stopped before deleting
            row = next(pending, None)
        yield line
    while row is not None:
        yield archive_line(source, *row[1:])
        row = next(pending, None)


def _existing_lines(path: Path) -> Iterator[tuple[datetime, str]]:
    """(observed_at, line) of an archive file written by compaction, in its (time) order."""
    if not path.exists():
        return
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
            for lineno, text in enumerate(fh, 1):
                line = text.rstrip("\n")
                if not line:
                    continue
                yield _observed_at(line, path, lineno), line
    except (EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise CompactError(f"{path}: not a readable archive file ({exc}); nothing was removed "
                           "from the database") from exc


def _observed_at(line: str, path: Path, lineno: int) -> datetime:
    try:
        doc: Any = json.loads(line)
        text = doc["observed_at"]
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CompactError(f"{path}:{lineno}: not an archive line with observed_at; nothing "
                           "was removed from the database") from exc


def _read_back(path: Path) -> tuple[int, str]:
    """Lines and SHA-256 of the file's decompressed content, read from the disk again."""
    digest = hashlib.sha256()
    lines = 0
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(READ_BLOCK):
                digest.update(block)
                lines += block.count(b"\n")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CompactError(f"{path}: the archive file did not read back ({exc}); nothing was "
                           "removed from the database") from exc
    return lines, digest.hexdigest()


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # a read-only folder refuses this too; the next run overwrites it
        pass
