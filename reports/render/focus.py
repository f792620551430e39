"""Write FOCUS tables (SPEC 12): CSV with plain decimals and `...Z` instants, or Parquet."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from etl.extras import pyarrow_parquet
from etl.files import atomic_writer, write_text_atomic
from etl.textutil import formula_safe
from etl.timefmt import utc_z
from reports.compute.focus import FOCUS_DECIMALS, FOCUS_INSTANTS

# Parquet decimals: 38 digits fit every amount (under 10^28 with 12 places, see
# reports.compute.billing.BILLING_PRECISION) only with a column's own scale, so each
# decimal column takes the fewest places that hold all its values exactly.
_DECIMAL128_DIGITS = 38


def decimal_text(value: Decimal | None) -> str:
    """A FOCUS decimal cell: plain, with a decimal point (`100000.0`).

    Never `1e5`, nor `100000`, which CSV readers (the FOCUS validator's among them) take
    for an integer column.
    """
    if value is None:
        return ""
    text = format(value, "f")
    return text if "." in text else text + ".0"


def _text(value: Any) -> str | None:
    """A text cell's value; None for n/a (pandas may hold it as NaN in an object column)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


def write_focus_csv(table: pd.DataFrame, path: Path) -> Path:
    """`table` as FOCUS CSV (UTF-8, header): decimals plain, instants `2026-11-15T00:00:00Z`.

    Text cells are spreadsheet-safe (etl.textutil.formula_safe); numbers are written as they
    are, so a credit's negative BilledCost stays a number.
    """
    columns: list[list[str]] = []
    for col in table.columns:
        values = table[col].tolist()
        if col in FOCUS_DECIMALS:
            columns.append([decimal_text(v) for v in values])
        elif col in FOCUS_INSTANTS:
            columns.append([utc_z(v) for v in values])
        else:
            columns.append([formula_safe(t) if (t := _text(v)) is not None else ""
                            for v in values])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(table.columns))
    writer.writerows(zip(*columns, strict=True))
    return write_text_atomic(path, buf.getvalue(), newline="")


def _places(values: list[Any]) -> int:
    exps = [-int(v.as_tuple().exponent) for v in values if isinstance(v, Decimal)]
    return max([0, *exps])


def write_focus_parquet(table: pd.DataFrame, path: Path) -> Path:
    """`table` as a Parquet file: decimals as decimal128 (exact), instants UTC microseconds.

    Raises MissingExtraError (naming the `parquet` extra) when pyarrow is not installed.
    """
    pq = pyarrow_parquet("--format parquet")
    import pyarrow as pa

    arrays = []
    fields = []
    for col in table.columns:
        values = table[col].tolist()
        if col in FOCUS_DECIMALS:
            scale = _places(values)
            whole = max((v.adjusted() + 1 for v in values if isinstance(v, Decimal) and v),
                        default=1)
            kind = (pa.decimal128(_DECIMAL128_DIGITS, scale)
                    if max(whole, 1) + scale <= _DECIMAL128_DIGITS
                    else pa.decimal256(76, scale))
            values = [None if v is None else v.quantize(Decimal(1).scaleb(-scale))
                      for v in values]
        elif col in FOCUS_INSTANTS:
            kind = pa.timestamp("us", tz="UTC")
        else:
            kind = pa.string()
            values = [_text(v) for v in values]
        fields.append(pa.field(col, kind))
        arrays.append(pa.array(values, type=kind))
    data = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    with atomic_writer(path, binary=True) as fh:
        pq.write_table(data, fh)
    return path
