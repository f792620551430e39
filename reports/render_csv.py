"""Write report tables as CSV (SPEC 6): plain numbers, empty for n/a, formula-safe text."""

from __future__ import annotations

import csv
import io
import math
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Spreadsheets run a cell that starts with one of these as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def format_cell(value: Any) -> str:
    """One cell: numbers plain (no exponent, no separators, no '.0' on integers)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        if not math.isfinite(f):
            return ""
        return np.format_float_positional(f, trim="-")
    if isinstance(value, Decimal):
        return "" if not value.is_finite() else format(value, "f")
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_text(df: pd.DataFrame) -> str:
    """The table as CSV text with a header row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([format_cell(c) for c in df.columns])
    for row in df.itertuples(index=False, name=None):
        writer.writerow([format_cell(v) for v in row])
    return buf.getvalue()


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write the table to `path` (replaced atomically, so readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(csv_text(df), encoding="utf-8", newline="")
    tmp.replace(path)
    return path
