"""Metered against invoiced (SPEC 6): read the vendor's invoice CSV and compare per series."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd

from etl.errors import InputError
from reports.periods import MONTH_RE

INVOICE_COLUMNS = ("source", "month", "metric", "quantity", "amount")
RECONCILE_COLUMNS = [
    "source", "month", "metric", "metered_quantity", "invoiced_quantity", "quantity_diff",
    "metered_amount", "invoiced_amount", "amount_diff", "status",
    # extras
    "reason", "currency", "coverage_pct", "resets",
]


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


def check_tolerance(tolerance_pct: float, name: str = "--tolerance-pct") -> Decimal:
    """The tolerance as a Decimal; anything but a finite number of 0 or more is an InputError.

    Every entry point (CLI, jobs, API) calls this, so `inf` or `nan` is one clear line
    rather than a decimal.InvalidOperation from deep in the comparison.
    """
    try:
        tol = Decimal(str(tolerance_pct))
    except (InvalidOperation, ValueError, TypeError):
        raise InputError(f"{name}: {tolerance_pct!r} is not a number") from None
    if not tol.is_finite() or tol < 0:
        raise InputError(f"{name}: {tolerance_pct} must be a finite number, 0 or more")
    return tol


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
            lines = _parse(path, fh.read().splitlines())
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
    col = {name: header.index(name) for name in INVOICE_COLUMNS}
    lines: list[InvoiceLine] = []
    seen: dict[tuple[str, str, str], int] = {}
    try:
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < len(header):
                raise InputError(f"{path}:{lineno}: {len(row)} cells, the header has {len(header)}")
            cells = {name: row[i].strip() for name, i in col.items()}
            if not MONTH_RE.match(cells["month"]) or not 1 <= int(cells["month"][5:]) <= 12:
                raise InputError(f"{path}:{lineno}: column month: {cells['month']!r} "
                                 "is not a month (expected YYYY-MM)")
            for name in ("source", "metric"):
                if not cells[name]:
                    raise InputError(f"{path}:{lineno}: column {name}: empty")
            numbers = {}
            for name in ("quantity", "amount"):
                try:
                    value = Decimal(cells[name])
                except InvalidOperation:
                    value = Decimal("NaN")
                if not value.is_finite():
                    raise InputError(f"{path}:{lineno}: column {name}: {cells[name]!r} "
                                     "is not a number")
                numbers[name] = value
            key = (cells["source"], cells["month"], cells["metric"])
            if key in seen:
                raise InputError(f"{path}:{lineno}: a row for {key[0]}/{key[2]} in {key[1]} "
                                 f"is already on line {seen[key]}")
            seen[key] = lineno
            lines.append(InvoiceLine(cells["source"], cells["month"], cells["metric"],
                                     numbers["quantity"], numbers["amount"], lineno,
                                     str(path)))
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: not CSV: {exc}") from None
    return lines


def _within(metered: Decimal, invoiced: Decimal, tolerance_pct: Decimal) -> bool:
    return abs(metered - invoiced) <= abs(invoiced) * tolerance_pct / 100


def _reasons(cov: float, resets: int, samples: int) -> list[str]:
    found = []
    if samples == 0:
        found.append("no samples stored for the month")
    elif cov < 100:
        found.append(f"coverage {cov:g} % < 100 %: part of the month was not observed, "
                     "so metered figures are a lower bound")
    if resets:
        found.append(f"{resets} counter reset(s) in the month: check whether the vendor's "
                     "billing cycle restarted the counter")
    return found


def reconcile_table(billed: pd.DataFrame, invoice: Sequence[InvoiceLine], month: str,
                    *, tolerance_pct: float = 1.0) -> pd.DataFrame:
    """Compare billing_table() rows with the invoice lines of `month` (pure).

    An invoice with rows for other months only, or a tolerance that is not a finite number
    of 0 or more, is an InputError.
    """
    tol = check_tolerance(tolerance_pct, "tolerance_pct")
    check_invoice_month(invoice, month)
    by_key = {(ln.source, ln.metric): ln for ln in invoice if ln.month == month}
    records = []
    for rule in billed.to_dict("records"):
        key = (rule["source"], rule["metric"])
        line = by_key.pop(key, None)
        samples = int(rule["samples"])
        cov, resets = float(rule["coverage_pct"]), int(rule["resets"])
        rec: dict[str, object] = {
            "source": key[0], "month": month, "metric": key[1],
            "metered_quantity": rule["quantity"], "invoiced_quantity": None,
            "quantity_diff": None, "metered_amount": rule["amount"], "invoiced_amount": None,
            "amount_diff": None, "currency": rule["currency"], "coverage_pct": cov,
            "resets": resets,
        }
        reasons = _reasons(cov, resets, samples)
        if line is None:
            rec["status"] = "missing_invoice"
            reasons.insert(0, "no invoice line for this billing rule")
        elif samples == 0:
            rec.update(metered_quantity=None, metered_amount=None,
                       invoiced_quantity=line.quantity, invoiced_amount=line.amount,
                       status="missing_metered")
        else:
            q, a = rule["quantity"], rule["amount"]
            rec.update(invoiced_quantity=line.quantity, invoiced_amount=line.amount,
                       quantity_diff=q - line.quantity, amount_diff=a - line.amount)
            ok = _within(q, line.quantity, tol) and _within(a, line.amount, tol)
            rec["status"] = "match" if ok else "mismatch"
            if ok:
                reasons = []
            elif not reasons:
                reasons.append("fully observed and no resets: check the plan's included "
                               "units and unit price against the invoice")
        rec["reason"] = "; ".join(reasons) or None
        records.append(rec)
    for line in by_key.values():
        records.append({
            "source": line.source, "month": month, "metric": line.metric,
            "metered_quantity": None, "invoiced_quantity": line.quantity,
            "quantity_diff": None, "metered_amount": None, "invoiced_amount": line.amount,
            "amount_diff": None, "status": "missing_metered",
            "reason": "no [[billing]] rule for this source and metric",
            "currency": None, "coverage_pct": None, "resets": None,
        })
    return pd.DataFrame.from_records(records, columns=RECONCILE_COLUMNS)
