"""Raw archives (SPEC 4): import JSONL through the collectors' parse path; export JSONL or CSV."""

from __future__ import annotations

import csv
import gc
import gzip
import io
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, BinaryIO, assert_never

from sqlalchemy import Engine, select

try:  # a C JSON parser: the standard one cost as much as writing the rows
    import orjson
except ImportError:  # pragma: no cover - a dependency, but the standard parser still works
    orjson = None  # type: ignore[assignment]

from etl.config import Config, SourceConfig
from etl.errors import DatabaseError, InputError, ParseError
from etl.store.bulk import bulk_store
from etl.store.engine import describe_database_error, is_database_error
from etl.store.history import store_history
from etl.store.models import Sample, Series, Snapshot
from etl.store.writer import Conflict, StoreResult
from etl.textutil import formula_safe
from etl.timefmt import utc_z
from etl.vendors.parsing import MAX_JSON_DEPTH, check_storable, parse_timestamp
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
# Rows fetched per round trip when exporting.
EXPORT_FETCH = 2000
GZIP_MAGIC = b"\x1f\x8b"
CSV_COLUMNS = ("observed_at", "source", "metric", "value", "limit", "status",
               "bucket_start", "bucket_end", "revisions")  # the last three: SPEC 10

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

    @property
    def ok(self) -> bool:
        """True when every line was stored whole or a duplicate (nothing bad or refused)."""
        return self.bad_lines == 0 and self.conflicts == 0 and self.refused_lines == 0

    def summary(self) -> str:
        """One line for people: lines read, new snapshots and samples, duplicates, bad, conflicts."""
        refused = (f", {self.refused_lines} lines with refused items" if self.refused_lines
                   else "")
        return (f"{self.lines} lines: {self.snapshots} new snapshots, {self.samples} new samples, "
                f"{self.duplicates} duplicate samples, {self.bad_lines} bad lines, "
                f"{self.conflicts} conflicts{refused}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_line(line: bytes | str, sources: dict[str, SourceConfig]) -> Observation:
    """One archive line as an Observation, through the vendor adapter's parse (ParseError if bad).

    The snapshot keeps the body's own text from the line (as the vendor sent it) when it can
    be cut out of the line unambiguously; otherwise the body is serialised again.
    """
    raw = line.encode("utf-8") if isinstance(line, str) else line
    doc: Any = None
    payload: str | None = None
    split = _split_body(raw)
    if split is not None:
        doc, payload = split
    elif orjson is not None:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None  # the standard parser below names the problem (or accepts it)
    if doc is None:
        doc = _loads_strict(raw)
    check_storable(raw, doc)
    if not isinstance(doc, dict):
        raise ParseError("not a JSON object")
    name = doc.get("source")
    if not isinstance(name, str) or not name:
        raise ParseError("source: missing")
    src = sources.get(name)
    if src is None:
        raise ParseError(f"source: {name!r} is not a configured source")
    if "body" not in doc:
        raise ParseError("body: missing")
    vendor = src.vendor
    observed_at = None
    if doc.get("observed_at") is not None:
        observed_at = parse_timestamp(doc["observed_at"], "observed_at")
    elif not vendor.time_in_body:
        raise ParseError(f"observed_at: required for a {src.kind} source"
                         + ("" if src.bound is None else " without a timestamp"))
    window = _window(doc.get("window"), vendor.history is not None, src.kind)
    body = doc["body"]
    try:
        obs = vendor.parse(name, body, observed_at=observed_at, payload=payload,
                           origin="import")
    except ParseError as exc:
        raise ParseError(f"body: {exc}") from None
    return obs if window is None else obs._replace(window=window)


def _window(raw: Any, history: bool, kind: str) -> tuple[datetime, datetime] | None:
    """A line's request range (SPEC 10): required of history sources, refused elsewhere."""
    if raw is None:
        if history:
            raise ParseError("window: required for a history source")
        return None
    if not history:
        raise ParseError(f"window: only lines of history sources carry one (not {kind})")
    if not isinstance(raw, dict) or set(raw) != {"start", "end"}:
        raise ParseError('window: must be {"start": TIME, "end": TIME}')
    start = parse_timestamp(raw["start"], "window.start")
    end = parse_timestamp(raw["end"], "window.end")
    if end <= start:
        raise ParseError("window: end is not after start")
    return start, end


def _loads_strict(line: bytes) -> Any:
    try:
        return json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError:
        raise ParseError("not UTF-8 text") from None
    except RecursionError:
        raise ParseError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ParseError(f"not JSON: {exc}") from None


_BODY_KEY = re.compile(rb'"body"\s*:\s*')


def _split_body(raw: bytes) -> tuple[dict[str, Any], str] | None:
    """The line parsed, and its body's own text, if the body is the line's last member.

    The line is parsed in two pieces: up to its last `"body":` with `null}` put in place of
    the rest, and the body's text (from there to the line's closing brace). Each piece is
    parsed once, so the body keeps the vendor's text at no extra cost. A "body" key nested
    deeper leaves the first piece unclosed, and a body that is not the last member leaves
    the second one with more than a value: either fails to parse, and the caller parses
    the whole line instead (the body is then serialised again).
    """
    if orjson is None:
        return None
    match = _BODY_KEY.match(raw, max(raw.rfind(b'"body"'), 0))
    if match is None:
        return None
    end = raw.rstrip()
    close = len(end) - 1
    if close < match.end() or end[close] != 0x7D:  # the line must end with its "}"
        return None
    try:
        head = orjson.loads(raw[:match.end()] + b"null}")
        text = raw[match.end():close].rstrip()
        body = orjson.loads(text)
        if not isinstance(head, dict):
            return None
        head["body"] = body
        return head, text.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return None


def _write_batch(engine: Engine, observations: list[Observation]) -> StoreResult:
    """Store one batch with the bulk writer (etl.store.bulk: same rules as store_observations).

    Pages of history sources go through etl.store.history (a bucket's latest fetch wins).
    """
    pages = [obs for obs in observations if obs.window is not None]
    if not pages:
        return bulk_store(engine, observations)
    result = bulk_store(engine, [obs for obs in observations if obs.window is None])
    with engine.begin() as conn:
        result.add(store_history(conn, pages))
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
    decompressed lines.
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
        with _collection_per_batch():
            _import_paths(engine, sources, paths, total, batch_size, on_problem, on_progress,
                          stdin)
    except Exception as exc:  # noqa: BLE001 - a database step failed, e.g. its disk is full
        if not is_database_error(exc):
            raise
        raise DatabaseError(
            f"{describe_database_error(exc, engine.url.render_as_string())}; import stopped: "
            f"{total.lines} lines read, {total.samples} new samples stored by earlier batches "
            "(importing again skips them)") from None
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
        except (EOFError, zlib.error, gzip.BadGzipFile):
            head = b""  # reported by _import_stream, where the data breaks off
        _check_encoding(head, name)
        _import_stream(engine, sources, unzipped, name, total, batch_size, on_problem,
                       on_progress, position=raw.tell if raw.seekable() else None)


@dataclass
class _Pending:
    """The observations read but not written yet, and what names the line of a conflict.

    To name the line a conflict came from: the line of each batch entry, the first batch
    entry of each key, and every entry of the (rare) keys seen more than once in the batch.
    """

    batch: list[Observation] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    first: dict[tuple[str, datetime], int] = field(default_factory=dict)
    repeats: dict[tuple[str, datetime], list[int]] = field(default_factory=dict)

    def add(self, obs: Observation, lineno: int) -> None:
        """Queue `obs`, read from line `lineno`."""
        key = (obs.source, obs.observed_at)
        index = len(self.batch)
        self.batch.append(obs)
        self.lines.append(lineno)
        seen = self.first.setdefault(key, index)
        if seen != index:
            self.repeats.setdefault(key, [seen]).append(index)

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

    def progress() -> int:
        return position() if position is not None else consumed

    def flush() -> None:
        if _write_pending(engine, pending, name, total, problems.add) and on_progress is not None:
            on_progress(progress())

    readline = stream.readline
    good = bad = 0  # lines of this file
    try:
        while raw := readline(MAX_LINE_BYTES + 1):
            lineno += 1
            consumed += len(raw)
            line = _whole_line(raw, lineno, name, total, problems.add)
            if line is None:
                break
            if not line.strip():
                continue
            total.lines += 1
            try:
                obs = parse_line(line, sources)
            except ParseError as exc:
                total.bad_lines += 1
                bad += 1
                problems.add(f"{name}:{lineno}: {exc}")
                if not good and bad >= MAX_PROBLEMS_SHOWN:
                    on_problem(f"{name}: its first {bad} lines are all bad: not a JSONL "
                               "archive, the rest of it was not read")
                    break
                continue
            _queue(pending, obs, name, lineno, total, problems)
            good += 1
            if len(pending.batch) >= batch_size:
                flush()
            elif on_progress is not None and lineno % PROGRESS_LINES == 0:
                on_progress(progress())
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # A damaged or truncated gzip file: keep what was read, say where it broke off.
        total.bad_lines += 1
        problems.add(f"{name}:{lineno + 1}: damaged gzip data ({exc}); the rest of the file "
                     "was not read")
    flush()
    problems.finish(name)


def _queue(pending: _Pending, obs: Observation, name: str, lineno: int, total: ImportResult,
           problems: _Problems) -> None:
    """Queue a parsed line; its refused items, if any, are reported (SPEC 7) and counted."""
    pending.add(obs, lineno)
    if obs.refused:
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
        raw = raw[len(UTF8_BOM):]
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
    named: set[tuple[int, str]] = set()
    for c in stored.conflicts:
        total.conflicts += 1
        line = _conflict_line(c, pending, named)
        problem(
            f"{name}:{line}: conflict: {c.source}/{c.metric} at {utc_z(c.observed_at)} "
            f"is stored as {_num(c.stored)}; this line's {_num(c.offered)} was not stored"
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


# --- export -----------------------------------------------------------------------------------


def export_range(config: Config, start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, the day after end 00:00) in the config timezone, as UTC instants."""
    if end < start:
        raise InputError(f"--end {end} is before --start {start}")
    tz = config.tz
    lo = datetime.combine(start, time(0), tzinfo=tz).astimezone(UTC)
    hi = datetime.combine(end + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return lo, hi


def iter_archive_lines(engine: Engine, lo: datetime, hi: datetime) -> Iterator[str]:
    """Archive lines for every snapshot with lo <= observed_at < hi, in time order, streamed."""
    stmt = (
        select(Snapshot.source, Snapshot.observed_at, Snapshot.payload, Snapshot.window_start,
               Snapshot.window_end)
        .where(Snapshot.observed_at >= lo, Snapshot.observed_at < hi)
        .order_by(Snapshot.observed_at, Snapshot.source)
    )
    with engine.connect() as conn:
        for source, at, payload, w_start, w_end in conn.execution_options(
                yield_per=EXPORT_FETCH).execute(stmt):
            line: dict[str, Any] = {"source": source, "observed_at": utc_z(at)}
            if w_start is not None and w_end is not None:  # a history source's page (SPEC 10)
                line["window"] = {"start": utc_z(w_start), "end": utc_z(w_end)}
            line["body"] = json.loads(payload)
            yield json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def iter_csv_rows(engine: Engine, lo: datetime, hi: datetime) -> Iterator[tuple[str, ...]]:
    """One row per sample (CSV_COLUMNS), in time order, streamed; formula cells escaped."""
    stmt = (
        select(Sample.observed_at, Series.source, Series.metric, Sample.value,
               Sample.plan_limit, Sample.status, Sample.bucket_end, Sample.fetched_at,
               Sample.revisions)
        .join(Series, Series.id == Sample.series_id)
        .where(Sample.observed_at >= lo, Sample.observed_at < hi)
        .order_by(Sample.observed_at, Series.source, Series.metric)
    )
    with engine.connect() as conn:
        for at, source, metric, value, limit, status, end, fetched, revisions in (
                conn.execution_options(yield_per=EXPORT_FETCH).execute(stmt)):
            # A bucket's row (SPEC 10) is observed when it was fetched, over its bucket.
            bucket = (utc_z(at), utc_z(end), str(revisions or 0)) if end is not None else ("",) * 3
            yield (utc_z(fetched or at), formula_safe(source), formula_safe(metric),
                   _num(value), "" if limit is None else _num(limit),
                   formula_safe(status or ""), *bucket)


class ExportFormat(StrEnum):
    """What `export` writes (SPEC 3): raw archive lines, or one CSV row per sample."""

    JSONL = "jsonl"
    CSV = "csv"


def export_archive(
    engine: Engine, config: Config, start: date, end: date, out: IO[str],
    fmt: ExportFormat = ExportFormat.JSONL,
) -> int:
    """Write history between two dates (config timezone, both included); return rows written."""
    lo, hi = export_range(config, start, end)
    count = 0
    match fmt:
        case ExportFormat.JSONL:
            for line in iter_archive_lines(engine, lo, hi):
                out.write(line + "\n")
                count += 1
        case ExportFormat.CSV:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for row in iter_csv_rows(engine, lo, hi):
                writer.writerow(row)
                count += 1
        case _:
            assert_never(fmt)
    return count




def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))



