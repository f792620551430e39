"""Read a vendor's FOCUS file as an invoice (SPEC 12): CSV, gzip CSV or Parquet, streamed.

The kind is told by the content, whatever the file's name: gzip or Parquet magic bytes, or a
CSV header with `BilledCost` and `ChargePeriodStart`. Rows are read in batches (pyarrow when
installed; the csv module otherwise, for CSV) and summed as they come, so memory stays flat
whatever the file's size: only one sum per distinct (key columns, window) is kept.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from etl.errors import InputError
from etl.extras import has_pyarrow, pyarrow_parquet
from etl.timefmt import to_micros
from reports.read.invoice import plain_decimal

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
# The columns a FOCUS invoice must have (SPEC 12); a rule's focus_match may name more.
REQUIRED = ("BilledCost", "ChargePeriodStart", "ServiceName", "SkuId")
OPTIONAL = ("ConsumedQuantity", "BillingCurrency", "ChargeCategory")
# Rows summed per batch: bounded memory whatever the file's size.
BATCH_ROWS = 65_536
CSV_BLOCK_BYTES = 256 * 1024
# FOCUS NumericFormat allows scientific notation (`1.5e3`); plain_decimal does not.
_SCIENTIFIC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Distinct numeric cells remembered at most (then forgotten, batch by batch).
_NUMBER_CACHE = 200_000


class FocusKind(StrEnum):
    """How a FOCUS file is stored."""

    CSV = "csv"
    GZIP_CSV = "gzip csv"
    PARQUET = "parquet"


def focus_kind(path: Path) -> FocusKind | None:
    """The FOCUS kind of the file at `path`, or None when it is not a FOCUS file.

    Parquet and gzip by their magic bytes; a CSV by a header naming both BilledCost and
    ChargePeriodStart. Raises InputError when the file cannot be read.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(64 * 1024)
    except FileNotFoundError:
        raise InputError(f"{path}: invoice file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if head.startswith(PARQUET_MAGIC):
        return FocusKind.PARQUET
    if head.startswith(GZIP_MAGIC):
        return FocusKind.GZIP_CSV
    first = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    cells = {c.strip().strip('"') for c in first.split(",")}
    return FocusKind.CSV if {"BilledCost", "ChargePeriodStart"} <= cells else None


@dataclass
class Sums:
    """Σ ConsumedQuantity and Σ BilledCost of some rows; `line` is the first one's."""

    quantity: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    line: int = 0
    currencies: set[str] = field(default_factory=set)


@dataclass
class FocusCharges:
    """A FOCUS file summed by (the `columns` values, window index): what reconcile needs.

    `windows` are the UTC instants [start, end) (epoch microseconds) rows were summed into
    by their ChargePeriodStart (into each window that holds it); rows in none are left out
    (`outside` counts them).
    """

    path: Path
    columns: tuple[str, ...]
    windows: tuple[tuple[int, int], ...]
    sums: dict[tuple[tuple[str | None, ...], int], Sums] = field(default_factory=dict)
    rows: int = 0
    outside: int = 0


def read_focus_charges(path: Path, kind: FocusKind, match_columns: Sequence[str],
                       windows: Sequence[tuple[int, int]]) -> FocusCharges:
    """Stream the FOCUS file and sum its rows per key and window (SPEC 12).

    The key is the values of ServiceName, SkuId, ChargeCategory (None where the file has no
    such column) and every column in `match_columns`. A
    missing column, a BilledCost or ConsumedQuantity that is not a number, or a
    ChargePeriodStart that is not a date and time is an InputError `FILE:LINE: reason` (for
    Parquet, LINE is the row number, the first row being 1). MissingExtraError for Parquet
    without pyarrow.
    """
    columns = tuple(dict.fromkeys(("ServiceName", "SkuId", "ChargeCategory", *match_columns)))
    out = FocusCharges(path, columns, tuple(windows))
    starts: dict[Any, tuple[int, ...]] = {}
    numbers: dict[Any, Decimal] = {}
    for first_line, batch in _batches(path, kind, match_columns):
        _add_batch(out, first_line, batch, starts, numbers)
        if len(numbers) > _NUMBER_CACHE:
            numbers.clear()
    return out


def _add_batch(out: FocusCharges, first_line: int, batch: dict[str, list[Any]],
               starts: dict[Any, tuple[int, ...]], numbers: dict[Any, Decimal]) -> None:
    """Add a batch's rows to `out`.

    `starts` and `numbers` remember the cells already parsed: a FOCUS file repeats its
    instants and many of its amounts.
    """
    path = out.path
    size = len(batch["ChargePeriodStart"])
    keys = list(zip(*(batch.get(c) or [None] * size for c in out.columns), strict=True))
    costs, quantities = batch["BilledCost"], batch.get("ConsumedQuantity")
    currencies = batch.get("BillingCurrency")
    for i, start in enumerate(batch["ChargePeriodStart"]):
        line = first_line + i
        found = starts.get(start)
        if found is None:
            found = starts[start] = _windows(out.windows, _instant(path, line, start))
        out.rows += 1
        if not found:
            out.outside += 1
            continue
        cost = costs[i]
        amount = numbers.get(cost)
        if amount is None:
            amount = numbers[cost] = _number(path, line, "BilledCost", cost, required=True)
        quantity = Decimal(0)
        if quantities is not None and quantities[i] is not None:
            cell = quantities[i]
            quantity = numbers.get(cell)  # type: ignore[assignment]
            if quantity is None:
                quantity = numbers[cell] = _number(path, line, "ConsumedQuantity", cell)
        values = tuple(None if v is None else str(v) for v in keys[i])
        for window in found:
            sums = out.sums.get((values, window))
            if sums is None:
                sums = out.sums[(values, window)] = Sums(line=line)
            sums.amount += amount
            sums.quantity += quantity
            if currencies is not None and currencies[i]:
                sums.currencies.add(str(currencies[i]))


def _windows(windows: Sequence[tuple[int, int]], at_us: int) -> tuple[int, ...]:
    """The indexes of the windows [start, end) that hold `at_us`."""
    return tuple(n for n, (start, end) in enumerate(windows) if start <= at_us < end)


def _instant(path: Path, line: int, value: Any) -> int:
    """A ChargePeriodStart as epoch microseconds (UTC; a time without offset is UTC)."""
    if isinstance(value, datetime):
        at = value
    else:
        text = "" if value is None else str(value).strip()
        try:
            at = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise InputError(f"{path}:{line}: column ChargePeriodStart: {text!r} is not a "
                             "date and time (expected ISO 8601, 2026-11-01T00:00:00Z)") from None
    return to_micros(at if at.tzinfo is not None else at.replace(tzinfo=UTC))


def _number(path: Path, line: int, column: str, value: Any, *,
            required: bool = False) -> Decimal:
    """A FOCUS numeric cell as a Decimal; null is 0 unless `required`."""
    if value is None or value == "":
        if required:
            raise InputError(f"{path}:{line}: column {column}: empty, expected a number")
        return Decimal(0)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    else:
        text = str(value).strip()
        # The common case first: a plain or scientific number (FOCUS NumericFormat);
        # plain_decimal says what is wrong with anything else.
        parsed = Decimal(text) if _SCIENTIFIC_RE.fullmatch(text) else plain_decimal(text)
        if isinstance(parsed, str):
            raise InputError(f"{path}:{line}: column {column}: {text!r} {parsed}")
        number = parsed
    try:
        if not number.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise InputError(f"{path}:{line}: column {column}: {value!r} is not a finite "
                         "number") from None
    return number


def _check_header(path: Path, header: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in (*REQUIRED, *columns) if c not in header]
    if missing:
        raise InputError(f"{path}:1: missing FOCUS column(s): {', '.join(dict.fromkeys(missing))}")


def _batches(path: Path, kind: FocusKind, columns: Sequence[str]
             ) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    """(line number of the batch's first row, column → values) batches of the file."""
    if kind is FocusKind.PARQUET:
        yield from _parquet_batches(path, columns)
    elif has_pyarrow():
        yield from _arrow_csv_batches(path, kind, columns)
    else:
        yield from _csv_batches(path, kind, columns)


def _wanted(header: Sequence[str], columns: Sequence[str]) -> list[str]:
    """The columns to read: the required, the optional ones present, the match columns."""
    return [c for c in dict.fromkeys((*REQUIRED, *OPTIONAL, *columns)) if c in header]


def _parquet_batches(path: Path, columns: Sequence[str]
                     ) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    pq = pyarrow_parquet("a Parquet FOCUS invoice")
    try:
        reader = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None
    header = reader.schema_arrow.names
    _check_header(path, header, columns)
    line = 1
    for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=_wanted(header, columns)):
        data = batch.to_pydict()
        yield line, data
        line += batch.num_rows


def _arrow_csv_batches(path: Path, kind: FocusKind, columns: Sequence[str]
                       ) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    import pyarrow as pa
    from pyarrow import csv as pacsv

    header = _csv_header(path, kind)
    _check_header(path, header, columns)
    wanted = _wanted(header, columns)
    source = pa.input_stream(str(path), compression="gzip" if kind is FocusKind.GZIP_CSV
                             else None)
    try:
        # Small blocks, one thread: the streaming reader's memory grows with its block size
        # and read-ahead (4 MiB blocks took 200 MB for a 300 MB file, 256 KiB 40 MB).
        reader = pacsv.open_csv(
            source, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES,
                                                   use_threads=False),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted, column_types={c: pa.string() for c in wanted},
                null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=False))
        line = 2
        pool = pa.default_memory_pool()
        for n, batch in enumerate(reader):
            yield line, batch.to_pydict()
            line += batch.num_rows
            if n % 64 == 63:
                pool.release_unused()
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: not a FOCUS CSV file: {str(exc).splitlines()[0]}") from None
    except OSError as exc:  # pyarrow's gzip stream: "Truncated compressed stream", "zlib ..."
        what = "damaged gzip data" if kind is FocusKind.GZIP_CSV else "cannot read"
        raise InputError(f"{path}: {what}: {str(exc).splitlines()[0]}") from None
    finally:
        source.close()


def _open_text(path: Path, kind: FocusKind) -> IO[str]:
    if kind is FocusKind.GZIP_CSV:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _csv_header(path: Path, kind: FocusKind) -> list[str]:
    try:
        with _open_text(path, kind) as fh:
            return [c.strip() for c in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, EOFError, zlib.error, csv.Error) as exc:
        raise InputError(f"{path}: not a FOCUS CSV file: {exc}") from None


def _csv_batches(path: Path, kind: FocusKind, columns: Sequence[str]
                 ) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    """The same batches without pyarrow (csv module); line numbers count quoted newlines."""
    try:
        with _open_text(path, kind) as fh:
            reader = csv.reader(fh)
            header = [c.strip() for c in next(reader, [])]
            _check_header(path, header, columns)
            wanted = _wanted(header, columns)
            index = [header.index(c) for c in wanted]
            batch: dict[str, list[Any]] = {c: [] for c in wanted}
            first = line = 2
            for row in reader:
                if len(row) != len(header):
                    raise InputError(f"{path}:{line}: {len(row)} cells, the header has "
                                     f"{len(header)}")
                for c, k in zip(wanted, index, strict=True):
                    batch[c].append(row[k] if row[k] != "" else None)
                line = reader.line_num + 1
                if len(batch[wanted[0]]) >= BATCH_ROWS:
                    yield first, batch
                    batch, first = {c: [] for c in wanted}, line
            if batch[wanted[0]]:
                yield first, batch
    except (OSError, UnicodeDecodeError, EOFError, zlib.error, csv.Error) as exc:
        raise InputError(f"{path}: not a FOCUS CSV file: {exc}") from None
