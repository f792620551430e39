"""Import raw archives (SPEC 4): JSONL files, gzip or plain, in batches through the parse path."""

from __future__ import annotations

import gc
import gzip
import io
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO

from sqlalchemy import Engine

from etl.config import Config, SourceConfig
from etl.errors import DatabaseError, InputError, ParseError
from etl.store.archive_line import parse_line
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
# The longest line read (decompressed): a vendor body is at most etl.http.MAX_BODY_BYTES
# (1 MiB); twice that leaves room for any escaping. A longer line is not read further.
MAX_LINE_BYTES = 2 * 1024 * 1024
# Problems shown per file; the rest are counted in one summary line. A file whose first
# this many lines are all bad is not an archive: the rest of it is not read.
MAX_PROBLEMS_SHOWN = 20
# Bytes of a file's start checked for its encoding (NUL bytes: UTF-16, UTF-32 or binary).
ENCODING_PROBE_BYTES = 4096
UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"

Problem = Callable[[str], None]
Progress = Callable[[int], None]


@dataclass
class ImportResult:
    """What an import did; `bad_lines` and `conflicts` make it a partial failure (exit 1)."""

    lines: int = 0
    snapshots: int = 0
    samples: int = 0
    duplicates: int = 0
    bad_lines: int = 0
    conflicts: int = 0
    refused_lines: int = 0  # stored, but with items refused (SPEC 7)
    # Samples not stored because their source's history before them was retired (SPEC 13).
    retired: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """True when every line was stored whole or a duplicate (nothing bad or refused)."""
        return self.bad_lines == 0 and self.conflicts == 0 and self.refused_lines == 0

    def summary(self) -> str:
        """One line for people: lines read, new snapshots and samples, duplicates, bad, conflicts."""
        refused = (f", {self.refused_lines} lines with refused items" if self.refused_lines
                   else "")
        retired = sum(self.retired.values())
        retired_text = f", {retired} samples in retired history not stored" if retired else ""
        return (f"{self.lines} lines: {self.snapshots} new snapshots, {self.samples} new samples, "
                f"{self.duplicates} duplicate samples, {self.bad_lines} bad lines, "
                f"{self.conflicts} conflicts{refused}{retired_text}")


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


@dataclass
class _Pending:
    """The observations read but not written yet, and what names the line of a conflict.

    To name the line a conflict came from: the line of each batch entry and, worked out
    only when a batch has a conflict, the first batch entry of each key and every entry of
    the (rare) keys seen more than once in the batch.
    """

    batch: list[Observation] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    first: dict[tuple[str, datetime], int] = field(default_factory=dict)
    repeats: dict[tuple[str, datetime], list[int]] = field(default_factory=dict)

    def add(self, obs: Observation, lineno: int) -> None:
        """Queue `obs`, read from line `lineno`."""
        self.batch.append(obs)
        self.lines.append(lineno)

    def index_keys(self) -> None:
        """Fill `first` and `repeats` for the batch queued (once, before naming conflicts)."""
        if self.first or not self.batch:
            return
        first, repeats = self.first, self.repeats
        for index, obs in enumerate(self.batch):
            key = (obs.source, obs.observed_at)
            seen = first.setdefault(key, index)
            if seen != index:
                repeats.setdefault(key, [seen]).append(index)

    def clear(self) -> None:
        """Forget everything queued (after it was written)."""
        self.batch.clear()
        self.lines.clear()
        self.first.clear()
        self.repeats.clear()


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
    pending = _Pending()
    problems = _Problems(on_problem)
    consumed = 0
    lineno = 0

    report, progress_lines = _progress_every(on_progress)

    def progress() -> int:
        return position() if position is not None else consumed

    def flush() -> None:
        if _write_pending(engine, pending, name, total, problems.add):
            report(progress())

    readline = stream.readline
    # The queue's lists, reached without an attribute lookup or call per line.
    queued_batch, queued, queued_lines = pending.batch, pending.batch.append, pending.lines.append
    good = bad = 0  # lines of this file
    try:
        while raw := readline(MAX_LINE_BYTES + 1):
            lineno += 1
            size = len(raw)
            consumed += size
            # The checks of _whole_line, made here first: it has work only for a file's
            # first line or a line cut off at MAX_LINE_BYTES, and a call per line costs.
            line = (raw if lineno > 1 and size <= MAX_LINE_BYTES
                    else _whole_line(raw, lineno, name, total, problems.add))
            if line is None:
                break
            if line.isspace():  # a blank line (isspace makes no copy, unlike strip)
                continue
            total.lines += 1
            try:
                obs = parse_line(line, sources)
            except ParseError as exc:
                bad += 1
                if _bad_line(exc, name, lineno, total, problems, good=good, bad=bad):
                    break
                continue
            queued(obs)
            queued_lines(lineno)
            _refused(obs, name, lineno, total, problems)
            good += 1
            if len(queued_batch) >= batch_size:
                flush()
            elif lineno % progress_lines == 0:
                report(progress())
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # A damaged or truncated gzip file: keep what was read, say where it broke off.
        total.bad_lines += 1
        problems.add(f"{name}:{lineno + 1}: damaged gzip data ({exc}); the rest of the file "
                     "was not read")
    flush()
    problems.finish(name)


def _progress_every(on_progress: Progress | None) -> tuple[Progress, int]:
    """What to call with the bytes read, and every how many lines (at most)."""
    if on_progress is None:
        return _no_progress, PROGRESS_LINES
    return on_progress, PROGRESS_LINES


def _no_progress(_: int) -> None:
    pass


def _bad_line(exc: ParseError, name: str, lineno: int, total: ImportResult,
              problems: _Problems, *, good: int, bad: int) -> bool:
    """Report a line that did not parse; True when the file is not read further.

    That is when its first MAX_PROBLEMS_SHOWN lines are all bad (`good` and `bad` lines of
    the file so far, this one counted).
    """
    total.bad_lines += 1
    problems.add(f"{name}:{lineno}: {exc}")
    if good or bad < MAX_PROBLEMS_SHOWN:
        return False
    problems.on_problem(f"{name}: its first {bad} lines are all bad: not a JSONL "
                        "archive, the rest of it was not read")
    return True


def _refused(obs: Observation, name: str, lineno: int, total: ImportResult,
             problems: _Problems) -> None:
    """Report and count a queued line's refused items (SPEC 7), if it has any."""
    if not obs.refused:
        return
    total.refused_lines += 1
    problems.add(f"{name}:{lineno}: body: {obs.refused_reason()}")


class _Problems:
    """Shows the first MAX_PROBLEMS_SHOWN problems of a file and counts the rest."""

    def __init__(self, on_problem: Problem) -> None:
        self.on_problem = on_problem
        self.shown = 0
        self.hidden = 0

    def add(self, message: str) -> None:
        """Show `message`, or count it once MAX_PROBLEMS_SHOWN were shown."""
        if self.shown < MAX_PROBLEMS_SHOWN:
            self.shown += 1
            self.on_problem(message)
        else:
            self.hidden += 1

    def finish(self, name: str) -> None:
        """Say how many problems of file `name` were not shown, if any."""
        if self.hidden:
            self.on_problem(f"{name}: {self.hidden} more bad lines or conflicts not shown")


def _whole_line(raw: bytes, lineno: int, name: str, total: ImportResult,
                problem: Problem) -> bytes | None:
    """The line without a leading BOM; None (a bad line, reading stops) if it is too long."""
    if lineno == 1 and raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM):] or b"\n"  # a BOM alone: an empty line
    if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
        total.lines += 1
        total.bad_lines += 1
        problem(f"{name}:{lineno}: line longer than {MAX_LINE_BYTES} bytes; the rest "
                "of the file was not read")
        return None
    return raw


def _write_pending(engine: Engine, pending: _Pending, name: str, total: ImportResult,
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


def _conflict_line(c: Conflict, pending: _Pending, named: set[tuple[int, str]]) -> int:
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
