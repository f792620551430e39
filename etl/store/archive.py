"""Import raw archives (SPEC 4): JSONL files, gzip or plain, in batches through the parse path."""

from __future__ import annotations

import gc
import gzip
import io
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from sqlalchemy import Engine

from etl.config import Config, SourceConfig
from etl.errors import DatabaseError, InputError
from etl.store.archive_read import ImportResult, Pending, Problem, Problems, read_batches
from etl.store.bulk import bulk_store
from etl.store.engine import describe_database_error, is_database_error
from etl.store.history import store_history
from etl.store.retire import retired_message, retired_sources, skip_retired
from etl.store.rows import Conflict, StoreResult
from etl.textutil import number_text
from etl.timefmt import utc_z
from etl.vendors.types import Observation

# Lines per transaction: large enough to amortise a commit, small enough to keep memory flat.
BATCH_LINES = 50_000
# The progress bar moves at least this often (in lines), whatever the batch size.
PROGRESS_LINES = 5000
# Bytes of a file's start checked for its encoding (NUL bytes: UTF-16, UTF-32 or binary).
ENCODING_PROBE_BYTES = 4096
GZIP_MAGIC = b"\x1f\x8b"

Progress = Callable[[int], None]


def _write_batch(engine: Engine, observations: list[Observation]) -> StoreResult:
    """Store one batch with the bulk writer (etl.store.bulk: same rules as store_observations).

    Pages of history sources go through etl.store.history (a bucket's latest fetch wins).
    What falls in retired history is left out and counted (SPEC 13).
    """
    retired = StoreResult()
    with engine.connect() as conn:
        observations = skip_retired(conn, observations, retired, warn=False)
    pages = [obs for obs in observations if obs.window is not None]
    if not pages:
        result = bulk_store(engine, observations)
    else:
        result = bulk_store(engine, [obs for obs in observations if obs.window is None])
        with engine.begin() as conn:
            result.add(store_history(conn, pages))
    result.add(retired)
    return result


def _default_problem(message: str) -> None:
    print(message, file=sys.stderr)


def import_archives(
    engine: Engine,
    config: Config,
    paths: Sequence[str],
    *,
    batch_size: int = BATCH_LINES,
    on_problem: Problem = _default_problem,
    on_progress: Progress | None = None,
    stdin: BinaryIO | None = None,
) -> ImportResult:
    """Import JSONL archives (`-` is standard input); bad lines are reported and skipped.

    Each bad line and each conflict goes to `on_problem` as `FILE:LINE: reason`;
    `on_progress` gets the number of bytes read so far, every few thousand lines (of the
    file as stored: compressed bytes for a gzip file). Gzip files (and gzip on standard
    input) are recognised by their first bytes and read decompressed; LINE then counts
    decompressed lines. Samples in retired history are not stored (SPEC 13): one line per
    source goes to `on_problem` at the end, and they are counted in `retired`.
    """
    for path in paths:
        if path != "-" and not Path(path).is_file():
            what = "is not a file" if Path(path).exists() else "no such file"
            raise InputError(f"{path}: {what}")
    for path in paths:  # each file is read in one encoding or refused whole, before any is read
        if path != "-":
            _check_encoding(_head(path), path)
    sources = {s.name: s for s in config.sources}
    total = ImportResult()
    try:
        with _collection_per_batch(), _kept_open(engine):
            _import_paths(engine, sources, paths, total, batch_size, on_problem, on_progress,
                          stdin)
    except Exception as exc:  # noqa: BLE001 - a database step failed, e.g. its disk is full
        if not is_database_error(exc):
            raise
        raise DatabaseError(
            f"{describe_database_error(exc, engine.url.render_as_string())}; import stopped: "
            f"{total.lines} lines read, {total.samples} new samples stored by earlier batches "
            "(importing again skips them)") from None
    if total.retired:
        with engine.connect() as conn:
            bounds = retired_sources(conn)
        for line in retired_message(total.retired, bounds):
            on_problem(line)
    return total


@contextmanager
def _collection_per_batch() -> Iterator[None]:
    """Pause the garbage collector's automatic passes; `_write_pending` collects per batch.

    An import keeps a batch of observations, and then their rows, alive while it builds
    them: the collector's automatic passes walked that growing batch again and again, 15 %
    of an import's time (benchmarks, figure 1). Memory stays bounded: each written batch
    ends with one collection of the young objects, which frees any cycle made meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def _kept_open(engine: Engine) -> Iterator[None]:
    """SQLite: one idle connection held open meanwhile, so the file stays open between batches.

    Each batch's connections are new (SQLite's engine pools none), and the last one to
    close a WAL database checkpoints all of it and deletes the WAL: with this one open, the
    batches' commits checkpoint as they go and the WAL is deleted once, at the end.
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    with engine.connect():
        yield


def _import_paths(
    engine: Engine,
    sources: dict[str, SourceConfig],
    paths: Sequence[str],
    total: ImportResult,
    batch_size: int,
    on_problem: Problem,
    on_progress: Progress | None,
    stdin: BinaryIO | None,
) -> None:
    for path in paths:
        if path == "-":
            stream = stdin if stdin is not None else sys.stdin.buffer
            _import_file(engine, sources, stream, "-", total, batch_size, on_problem,
                         on_progress)
            continue
        try:
            with open(path, "rb") as fh:
                _import_file(engine, sources, fh, path, total, batch_size, on_problem,
                             on_progress)
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None


def _head(path: str) -> bytes:
    """The first ENCODING_PROBE_BYTES of a file as its lines will be read (decompressed)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(ENCODING_PROBE_BYTES)
            if head[:2] != GZIP_MAGIC:
                return head
            fh.seek(0)
            with gzip.GzipFile(fileobj=fh, mode="rb") as unzipped:
                return unzipped.read(ENCODING_PROBE_BYTES)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        return b""  # damaged gzip: reported where it breaks off, with the lines before it
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def _check_encoding(head: bytes, name: str) -> None:
    """InputError unless `head`, a file's start, can be UTF-8 text (a BOM is allowed).

    A UTF-16 or UTF-32 archive would otherwise have its first line refused and later lines
    half-read; a binary file would print one error per "line".
    """
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{name}: UTF-16 or UTF-32 text (byte-order mark); archives are UTF-8, "
                         "nothing was imported")
    if b"\x00" in head:
        raise InputError(f"{name}: not UTF-8 text (NUL bytes: UTF-16, UTF-32 or binary data); "
                         "nothing was imported")


def _import_file(
    engine: Engine,
    sources: dict[str, SourceConfig],
    raw: IO[bytes],
    name: str,
    total: ImportResult,
    batch_size: int,
    on_problem: Problem,
    on_progress: Progress | None,
) -> None:
    """Import one file or stream, decompressing it first if it starts like gzip."""
    if not hasattr(raw, "peek"):  # e.g. a BytesIO: buffered for the look-ahead
        raw = io.BufferedReader(raw)  # type: ignore[arg-type,type-var]
    if raw.peek(2)[:2] != GZIP_MAGIC:  # type: ignore[attr-defined]
        _check_encoding(raw.peek(ENCODING_PROBE_BYTES)[:ENCODING_PROBE_BYTES], name)  # type: ignore[attr-defined]
        _import_stream(engine, sources, raw, name, total, batch_size, on_problem, on_progress)
        return
    with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
        try:
            head = unzipped.peek(ENCODING_PROBE_BYTES)[:ENCODING_PROBE_BYTES]
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            # Damaged before any data (its header or first block): said here, since a
            # GzipFile that met the end of its data reads nothing more and the file would
            # pass for an empty one. Data that breaks off later is reported where it does.
            total.bad_lines += 1
            on_problem(f"{name}:1: damaged gzip data ({exc}); nothing of the file was read")
            return
        _check_encoding(head, name)
        _import_stream(engine, sources, unzipped, name, total, batch_size, on_problem,
                       on_progress, position=raw.tell if raw.seekable() else None)


def _import_stream(
    engine: Engine,
    sources: dict[str, SourceConfig],
    stream: IO[bytes] | gzip.GzipFile,
    name: str,
    total: ImportResult,
    batch_size: int,
    on_problem: Problem,
    on_progress: Progress | None,
    *,
    position: Callable[[], int] | None = None,
) -> None:
    problems = Problems(on_problem)
    report, progress_lines = _progress_every(on_progress)
    reads = read_batches(sources, stream, name, total, batch_size, progress_lines, position)
    with closing(reads):  # however this ends, the reading stops here
        for read in reads:
            read.held.replay(problems)
            if read.pending is None:
                report(read.position)
            elif _write_pending(engine, read.pending, name, total, problems.add):
                report(read.position)
    problems.finish(name)


def _progress_every(on_progress: Progress | None) -> tuple[Progress, int]:
    """What to call with the bytes read, and every how many lines (at most)."""
    if on_progress is None:
        return _no_progress, PROGRESS_LINES
    return on_progress, PROGRESS_LINES


def _no_progress(_: int) -> None:
    pass


def _write_pending(engine: Engine, pending: Pending, name: str, total: ImportResult,
                   problem: Problem) -> bool:
    """Write what is pending, add to `total`, name each conflict's line; False if none was."""
    if not pending.batch:
        return False
    stored = _write_batch(engine, pending.batch)
    total.snapshots += stored.snapshots
    total.samples += stored.samples
    total.duplicates += stored.duplicates
    total.retired.update(stored.retired)
    named: set[tuple[int, str]] = set()
    if stored.conflicts:
        pending.index_keys()
    for c in stored.conflicts:
        total.conflicts += 1
        line = _conflict_line(c, pending, named)
        problem(
            f"{name}:{line}: conflict: {c.source}/{c.metric} at {utc_z(c.observed_at)} "
            f"is stored as {number_text(c.stored)}; this line's {number_text(c.offered)} was not stored"
        )
    pending.clear()
    gc.collect(1)  # the young objects left, the batch freed: see _collection_per_batch
    return True


def _conflict_line(c: Conflict, pending: Pending, named: set[tuple[int, str]]) -> int:
    """The line whose value a conflict refused.

    That is the first line of the key offering that value for that metric and not named yet
    (the same line and value may conflict twice: with the database and within the batch).
    """
    key = (c.source, c.observed_at)
    first = pending.first
    candidates = pending.repeats.get(key) or ([first[key]] if key in first else [])
    fallback = 0
    for index in candidates:
        offered = next((s.value for s in pending.batch[index].samples if s.metric == c.metric),
                       None)
        if offered != c.offered:
            continue
        if (index, c.metric) not in named:
            named.add((index, c.metric))
            return pending.lines[index]
        fallback = fallback or pending.lines[index]
    return fallback
