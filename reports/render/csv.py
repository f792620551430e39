"""Write report tables as CSV (SPEC 6): plain numbers, empty for n/a, formula-safe text."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from etl.files import write_text_atomic
from etl.textutil import FORMULA_START, formula_safe
from reports.render.cells import CellStyle, cell_text

CSV_CELLS = CellStyle(
    boolean=lambda b: "true" if b else "false",
    integer=str,
    floating=lambda f: np.format_float_positional(f, trim="-"),
    decimal=lambda d: format(d, "f"),
    text=formula_safe,
)


def format_cell(value: Any) -> str:
    """One cell: numbers plain (no exponent, no separators, no '.0' on integers)."""
    return cell_text(value, CSV_CELLS)


def _float_cell(f: float) -> str:
    # repr is the shortest round-trip text, the same digits format_float_positional picks;
    # only exponents (very large or small magnitudes) need numpy's positional form.
    if f != f or f == _INF or f == -_INF:
        return ""
    text = repr(f)
    if "e" in text:
        return np.format_float_positional(f, trim="-")
    return text[:-2] if text.endswith(".0") else text


_INF = float("inf")


def _cell(value: Any) -> str:
    # The common exact types first; everything else (NA, numpy scalars) as format_cell.
    kind = type(value)
    if kind is str:
        return "'" + value if value.startswith(FORMULA_START) else value
    if kind is float:
        return _float_cell(value)
    if kind is int:
        return str(value)
    if kind is date:
        return value.isoformat()
    return format_cell(value)


def _float_cells(values: np.ndarray) -> list[str]:
    """[_float_cell(v) for v in values] (float64), the common cells without a call each.

    Each distinct value is formatted once: a report's columns repeat theirs (limits,
    counts, whole minutes; a warm month's daily CSVs spent a quarter of their time in repr).
    """
    out = np.full(len(values), "", dtype=object)  # NaN and infinities: empty cells
    with np.errstate(invalid="ignore"):
        mag = np.abs(values)
        # Where repr writes no exponent (below 1e16, from 1e-4; 0 too) and -0.0 aside.
        plain = (mag < 1e16) & ((mag >= 1e-4) | ((values == 0) & ~np.signbit(values)))
    at = np.flatnonzero(plain)
    if len(at):
        # Equal floats here are the same double (-0.0 is not among them): the same cell.
        distinct, where = np.unique(values[at], return_inverse=True)
        whole = distinct == np.rint(distinct)
        cells = np.empty(len(distinct), dtype=object)
        cells[whole] = list(map(str, distinct[whole].astype(np.int64).tolist()))  # no ".0"
        cells[~whole] = list(map(repr, distinct[~whole].tolist()))  # never ends in ".0"
        out[at] = cells[where]
    for i in np.flatnonzero(np.isfinite(values) & ~plain).tolist():
        out[i] = _float_cell(float(values[i]))  # exponents and -0.0: the cell's own rules
    texts: list[str] = out.tolist()
    return texts


def _int_cells(values: np.ndarray) -> list[str]:
    """[str(v) for v in values] (a numpy integer array), each distinct value formatted once."""
    if len(values) < 2:
        return [str(v) for v in values.tolist()]
    distinct, where = np.unique(values, return_inverse=True)
    texts: list[str] = np.array(list(map(str, distinct.tolist())), dtype=object)[where].tolist()
    return texts


def column_cells(col: pd.Series) -> list[str]:
    """A whole column's cells, exactly as format_cell formats each of its values."""
    values = col.array
    if isinstance(values, pd.arrays.NumpyExtensionArray):
        raw = values.to_numpy()
        kind = raw.dtype.kind
        if kind == "f":
            return _float_cells(raw.astype(np.float64))
        if kind in "iu":
            return _int_cells(raw)
        if kind == "b":
            return ["true" if v else "false" for v in raw.tolist()]
    elif isinstance(values, pd.arrays.FloatingArray):
        # <NA> and NaN are both empty cells.
        return _float_cells(values.to_numpy(dtype="float64", na_value=math.nan))
    elif isinstance(values, pd.arrays.IntegerArray):
        out = np.array(_int_cells(values.to_numpy(dtype="int64", na_value=0)), dtype=object)
        out[values.isna()] = ""
        cells: list[str] = out.tolist()
        return cells
    elif isinstance(values, pd.arrays.ArrowStringArray):
        # Text (names repeated in every day's rows): each distinct one formatted once,
        # without a Python string per row; a column with a missing value as below.
        codes, distinct = values.factorize()
        if not len(codes) or codes.min() >= 0:
            texts: list[str] = np.array([_cell(v) for v in distinct.tolist()] or [""],
                                        dtype=object)[codes].tolist()
            return texts
    # Anything else a value at a time, over the same values itertuples would give; a column
    # of names or dates (repeated in every day's rows) formats each distinct one once.
    vals = col.tolist()
    if set(map(type, vals)) <= {str, date}:
        memo = {v: _cell(v) for v in set(vals)}
        return [memo[v] for v in vals]
    return [_cell(v) for v in vals]


def csv_text(df: pd.DataFrame) -> str:
    """The table as CSV text with a header row; formatted a column at a time."""
    return csv_texts(df, [range(len(df))])[0]


def csv_texts(df: pd.DataFrame, parts: Sequence[Sequence[int]]) -> list[str]:
    """csv_text(df.iloc[part]) for each part (row positions), every column formatted once.

    A daily report's days are parts of one table: formatting its columns a day at a time
    cost more than the cells (pandas' per-column overhead, times days times columns).
    """
    header = [format_cell(c) for c in df.columns]
    columns = [column_cells(df.iloc[:, k]) for k in range(df.shape[1])]
    return csv_parts(header, columns, parts, len(df))


def csv_parts(header: Sequence[str], columns: Sequence[Sequence[str]],
              parts: Sequence[Sequence[int]], n_rows: int) -> list[str]:
    """The CSV text of each part (row positions) of these cells: the header row, then its rows.

    Exactly what csv.writer writes. Where no cell needs quoting (the common case: numbers,
    names, dates), each row is its cells joined by commas, made once for every part; else
    the writer writes each part.
    """
    head = _plain_lines([[cell] for cell in header])
    lines = _plain_lines(columns) if head is not None else None
    if head is not None and lines is not None:
        first = head[0] + "\n"
        return [first + "\n".join([lines[i] for i in part]) + "\n" if len(part) else first
                for part in parts]
    rows: list[tuple[str, ...]] = (list(zip(*columns, strict=True)) if columns
                                   else [() for _ in range(n_rows)])
    out = []
    for part in parts:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([rows[i] for i in part])
        out.append(buf.getvalue())
    return out


def _plain_lines(columns: Sequence[Sequence[str]]) -> list[str] | None:
    """Each row of these cells joined by commas, or None if csv.writer would write any otherwise.

    The writer quotes a cell holding a comma, a quote or a line break, and writes a row of
    one empty cell as "": with two columns or more and no quote, carriage return or NUL in
    any cell, a cell holds a comma or a newline exactly when the joined text holds more of
    them than the separators.
    """
    if len(columns) < 2:
        return None
    lines = list(map(",".join, zip(*columns, strict=True)))
    text = "\n".join(lines)
    if (not lines or '"' in text or "\r" in text or "\x00" in text
            or text.count(",") != len(lines) * (len(columns) - 1)
            or text.count("\n") != len(lines) - 1):
        return None
    return lines


def write_csv_text(text: str, path: Path) -> Path:
    """Write CSV text made by csv_text or csv_texts to `path` (replaced atomically)."""
    return write_text_atomic(path, text, newline="")


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write the table to `path` (replaced atomically, so readers never see half a file)."""
    return write_text_atomic(path, csv_text(df), newline="")
