"""Reading one archive file into batches of parsed lines, and what each bad line says (SPEC 4)."""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from etl.config import SourceConfig
from etl.errors import ParseError
from etl.store.archive_line import parse_line
from etl.vendors.types import Observation

# The longest line read (decompressed): a vendor body is at most etl.http.MAX_BODY_BYTES
# (1 MiB); twice that leaves room for any escaping. A longer line is not read further.
MAX_LINE_BYTES = 2 * 1024 * 1024
# Problems shown per file; the rest are counted in one summary line. A file whose first
# this many lines are all bad is not an archive: the rest of it is not read.
MAX_PROBLEMS_SHOWN = 20
UTF8_BOM = b"\xef\xbb\xbf"

Problem = Callable[[str], None]


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


@dataclass
class Pending:
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


@dataclass
class Read:
    """A batch of parsed lines to write (None: progress only), what reading it said, where.

    `position` is the file's, after the batch (what the progress bar shows).
    """

    pending: Pending | None
    held: Held
    position: int


class Held:
    """What reading some lines said, shown by the writer before it writes their batch.

    So a file's problems come in the order they always did: each batch's bad lines, then
    its conflicts, batch after batch.
    """

    def __init__(self) -> None:
        self.said: list[tuple[bool, str]] = []

    def add(self, message: str) -> None:
        """A problem counted against the file's MAX_PROBLEMS_SHOWN (Problems.add)."""
        self.said.append((True, message))

    def on_problem(self, message: str) -> None:
        """A message shown whatever the count (Problems.on_problem)."""
        self.said.append((False, message))

    def replay(self, problems: Problems) -> None:
        """Show what was held, in order."""
        for counted, message in self.said:
            (problems.add if counted else problems.on_problem)(message)


def read_batches(
    sources: dict[str, SourceConfig],
    stream: IO[bytes] | gzip.GzipFile,
    name: str,
    total: ImportResult,
    batch_size: int,
    progress_lines: int,
    position: Callable[[], int] | None,
) -> Generator[Read, None, None]:
    """A file's lines parsed in batches of `batch_size` (the last shorter, maybe empty).

    Between them, an item with no batch every `progress_lines` lines, for the progress bar.
    """
    consumed = 0
    lineno = 0

    def progress() -> int:
        return position() if position is not None else consumed

    pending, held = Pending(), Held()
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
                    else _whole_line(raw, lineno, name, total, held.add))
            if line is None:
                break
            if line.isspace():  # a blank line (isspace makes no copy, unlike strip)
                continue
            total.lines += 1
            try:
                obs = parse_line(line, sources)
            except ParseError as exc:
                bad += 1
                if _bad_line(exc, name, lineno, total, held, good=good, bad=bad):
                    break
                continue
            queued(obs)
            queued_lines(lineno)
            _refused(obs, name, lineno, total, held)
            good += 1
            if len(queued_batch) >= batch_size:
                yield Read(pending, held, progress())
                pending, held = Pending(), Held()
                queued_batch, queued = pending.batch, pending.batch.append
                queued_lines = pending.lines.append
            elif lineno % progress_lines == 0:
                yield Read(None, held, progress())
                held = Held()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # A damaged or truncated gzip file: keep what was read, say where it broke off.
        total.bad_lines += 1
        held.add(f"{name}:{lineno + 1}: damaged gzip data ({exc}); the rest of the file "
                 "was not read")
    yield Read(pending, held, progress())


def _bad_line(exc: ParseError, name: str, lineno: int, total: ImportResult,
              problems: Problems | Held, *, good: int, bad: int) -> bool:
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
             problems: Problems | Held) -> None:
    """Report and count a queued line's refused items (SPEC 7), if it has any."""
    if not obs.refused:
        return
    total.refused_lines += 1
    problems.add(f"{name}:{lineno}: body: {obs.refused_reason()}")


class Problems:
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
