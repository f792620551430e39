"""Read the vendor's invoice CSV (SPEC 6): its lines, checked, each naming its FILE:LINE."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
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
    """Parse and check the invoice CSV; the first problem is an InputError naming FILE:LINE.

    Read as spreadsheets save it (SPEC 6): UTF-8 with or without a byte-order mark, any
    line endings, comma- or semicolon-separated (told from the header line; in a semicolon
    file a decimal comma is the decimal point). A row with more or fewer cells than the
    header, a number with grouping separators or a currency sign, or anything else that is
    not a plain decimal is refused naming the line (where the row starts) and the column.
    With `month` (YYYY-MM), an invoice whose rows are all for other months is refused too.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            text = fh.read(MAX_INVOICE_CHARS + 1)  # never all of /dev/zero
        if len(text) > MAX_INVOICE_CHARS:
            raise InputError(f"{path}: larger than {MAX_INVOICE_CHARS // 1024 // 1024} MiB, "
                             "not an invoice CSV")
    except FileNotFoundError:
        raise InputError(f"{path}: invoice file not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    lines = _parse(path, text)
    if month is not None:
        check_invoice_month(lines, month)
    return lines


def _header(path: Path, text: str) -> tuple[str, list[str]]:
    """The separator (',' or ';') and the lower-cased header cells, told from line 1."""
    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    if not first.strip():
        raise InputError(f"{path}:1: empty first line, expected a header with the columns "
                         + ", ".join(INVOICE_COLUMNS))
    found: dict[str, list[str]] = {}
    for sep in (",", ";"):
        try:
            cells = next(csv.reader([first], delimiter=sep))
        except csv.Error as exc:
            raise InputError(f"{path}:1: the header line is not CSV: {exc}") from None
        found[sep] = [c.strip().lower() for c in cells]
        if all(c in found[sep] for c in INVOICE_COLUMNS):
            return sep, found[sep]
    sep = ";" if len(found[";"]) > len(found[","]) else ","
    cells = found[sep]
    if len(cells) == 1:
        raise InputError(f"{path}:1: the header line is one cell {_show(first)}: expected the "
                         "columns " + ", ".join(INVOICE_COLUMNS)
                         + " separated by commas or semicolons")
    missing = [c for c in INVOICE_COLUMNS if c not in cells]
    raise InputError(f"{path}:1: missing column(s): {', '.join(missing)} (the header has: "
                     + ", ".join(c or "(empty)" for c in cells) + ")")


def _parse(path: Path, text: str) -> list[InvoiceLine]:
    if not text.strip():
        raise InputError(f"{path}:1: empty file, expected a header with columns "
                         + ", ".join(INVOICE_COLUMNS))
    sep, header = _header(path, text)
    col = {name: header.index(name) for name in INVOICE_COLUMNS}
    # newline="": rows split at \n, \r\n and \r alike, as the file was opened.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    lines: list[InvoiceLine] = []
    seen: dict[tuple[str, str, str], int] = {}
    lineno = 1  # where the next row starts (a quoted cell may span lines)
    try:
        next(reader)
        lineno = reader.line_num + 1
        for row in reader:
            start, lineno = lineno, reader.line_num + 1
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                hint = (" (a number written with ',' as a grouping separator? write plain "
                        "numbers)" if sep == "," and len(row) > len(header) else "")
                raise InputError(f"{path}:{start}: {len(row)} cells, the header has "
                                 f"{len(header)}{hint}")
            cells = {name: row[i].strip() for name, i in col.items()}
            if not MONTH_RE.match(cells["month"]) or not 1 <= int(cells["month"][5:]) <= 12:
                raise InputError(f"{path}:{start}: column month: {cells['month']!r} "
                                 "is not a month (expected YYYY-MM)")
            for name in ("source", "metric"):
                if not cells[name]:
                    raise InputError(f"{path}:{start}: column {name}: empty")
            numbers = {}
            for name in ("quantity", "amount"):
                value = plain_decimal(cells[name], decimal_comma=sep == ";")
                if isinstance(value, str):
                    raise InputError(f"{path}:{start}: column {name}: {cells[name]!r} {value}")
                numbers[name] = value
            key = (cells["source"], cells["month"], cells["metric"])
            if key in seen:
                raise InputError(f"{path}:{start}: a row for {key[0]}/{key[2]} in {key[1]} "
                                 f"is already on line {seen[key]}")
            seen[key] = start
            lines.append(InvoiceLine(cells["source"], cells["month"], cells["metric"],
                                     numbers["quantity"], numbers["amount"], start,
                                     str(path)))
    except csv.Error as exc:
        raise InputError(f"{path}:{lineno}: not CSV: {exc}") from None
    return lines


# A plain decimal: optional sign, digits, at most one decimal point; no exponent.
_PLAIN_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
# What a dot looks like when it groups thousands (1.234 or 12.345.678).
_DOT_GROUPS_RE = re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+")
_GROUPING = {" ": "a space", "\u00a0": "a space", "\u202f": "a space", "\u2009": "a space",
             "'": "an apostrophe", "\u2019": "an apostrophe", "_": "an underscore"}


def plain_decimal(text: str, *, decimal_comma: bool = False) -> Decimal | str:
    """The number in an invoice cell, or why it is refused (text to follow the quoted cell).

    Plain decimals only (SPEC 6): with `decimal_comma` (semicolon files) one ',' is the
    decimal point. Grouping separators, currency signs and exponents are refused, and so is
    a semicolon file's '1.234' (a grouping dot in the locales that write decimal commas).
    """
    if not text:
        return "is empty, expected a number"
    signs = [ch for ch in text if unicodedata.category(ch) == "Sc"]
    if signs:
        return f"has a currency sign ({signs[0]}): write the plain number"
    for ch, what in _GROUPING.items():
        if ch in text.strip(ch):
            return f"has {what} as a grouping separator: write the plain number"
    body = text
    if decimal_comma and "," in text:
        if "." in text or text.count(",") > 1:
            return "has a grouping separator: write the plain number with a decimal comma"
        body = text.replace(",", ".")
    elif "," in text:
        return ("has a ',' (a grouping separator or decimal comma): write the plain number "
                "with a decimal point")
    elif decimal_comma and _DOT_GROUPS_RE.fullmatch(text):
        return ("has a '.' that reads as a grouping separator in a semicolon-separated file: "
                "write the plain number with a decimal comma")
    if not _PLAIN_RE.fullmatch(body):
        return "is not a number"
    return Decimal(body)


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:56] + "...'"
