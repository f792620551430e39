"""Read the vendor's invoice CSV (SPEC 6): its lines, checked, each naming its FILE:LINE."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from etl.errors import InputError
from reports.periods import MONTH_RE

INVOICE_COLUMNS = ("source", "month", "metric", "quantity", "amount")
# An invoice is a few rows; a larger file is refused unread (`--invoice /dev/zero`).
MAX_INVOICE_CHARS = 16 * 1024 * 1024


@dataclass(frozen=True)
class InvoiceLine:
    """One row of the invoice CSV; `line` is its line number in `path`."""

    source: str
    month: str
    metric: str
    quantity: Decimal
    amount: Decimal
    line: int
    path: str = ""


def check_invoice_month(lines: Sequence[InvoiceLine], month: str) -> None:
    """Refuse an invoice that has rows, but none for `month`: most likely the wrong file.

    Without this every billing rule would come out missing_invoice with exit status 0.
    Rows of other months next to the month's own rows are still ignored.
    """
    if not lines or any(ln.month == month for ln in lines):
        return
    others = ", ".join(sorted({ln.month for ln in lines}))
    where = lines[0].path or "invoice"
    raise InputError(f"{where}: no rows for {month} (it has {others})")


def read_invoice(path: Path, month: str | None = None) -> list[InvoiceLine]:
    """Parse and check the invoice CSV; the first problem is an InputError naming file:line.

    With `month` (YYYY-MM), an invoice whose rows are all for other months is refused too.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            text = fh.read(MAX_INVOICE_CHARS + 1)  # never all of /dev/zero
        if len(text) > MAX_INVOICE_CHARS:
            raise InputError(f"{path}: larger than {MAX_INVOICE_CHARS // 1024 // 1024} MiB, "
                             "not an invoice CSV")
        lines = _parse(path, text.splitlines())
    except FileNotFoundError:
        raise InputError(f"{path}: invoice file not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if month is not None:
        check_invoice_month(lines, month)
    return lines


def _parse(path: Path, text: list[str]) -> list[InvoiceLine]:
    reader = csv.reader(text)
    header = _read_header(path, reader)
    col = {name: header.index(name) for name in INVOICE_COLUMNS}
    lines: list[InvoiceLine] = []
    seen: dict[tuple[str, str, str], int] = {}
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            lines.append(_read_row(path, reader.line_num, row, len(header), col, seen))
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: not CSV: {exc}") from None
    return lines


def _read_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    """The header's lower-cased column names (line 1); InputError if a column is missing."""
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{path}:1: empty file, expected a header with columns "
                         + ", ".join(INVOICE_COLUMNS)) from None
    except csv.Error as exc:
        raise InputError(f"{path}:1: not CSV: {exc}") from None
    missing = [c for c in INVOICE_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}:1: missing column(s): {', '.join(missing)}")
    return header


def _read_row(path: Path, lineno: int, row: list[str], width: int, col: dict[str, int],
              seen: dict[tuple[str, str, str], int]) -> InvoiceLine:
    """One data row, checked; `seen` (key -> line) refuses a second row for a key."""
    if len(row) < width:
        raise InputError(f"{path}:{lineno}: {len(row)} cells, the header has {width}")
    cells = {name: row[i].strip() for name, i in col.items()}
    if not MONTH_RE.match(cells["month"]) or not 1 <= int(cells["month"][5:]) <= 12:
        raise InputError(f"{path}:{lineno}: column month: {cells['month']!r} "
                         "is not a month (expected YYYY-MM)")
    for name in ("source", "metric"):
        if not cells[name]:
            raise InputError(f"{path}:{lineno}: column {name}: empty")
    quantity, amount = (_number(path, lineno, name, cells[name])
                        for name in ("quantity", "amount"))
    key = (cells["source"], cells["month"], cells["metric"])
    if key in seen:
        raise InputError(f"{path}:{lineno}: a row for {key[0]}/{key[2]} in {key[1]} "
                         f"is already on line {seen[key]}")
    seen[key] = lineno
    return InvoiceLine(cells["source"], cells["month"], cells["metric"], quantity, amount,
                       lineno, str(path))


def _number(path: Path, lineno: int, name: str, text: str) -> Decimal:
    """A finite decimal from column `name`'s cell; InputError naming the line otherwise."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise InputError(f"{path}:{lineno}: column {name}: {text!r} is not a number")
    return value
