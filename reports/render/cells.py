"""What kind of value a report cell holds (n/a, yes/no, integer, float, decimal, date, text)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CellStyle:
    """How one output format writes each kind of value; n/a is always an empty cell."""

    boolean: Callable[[bool], str]
    integer: Callable[[int], str]
    floating: Callable[[float], str]  # finite floats only
    decimal: Callable[[Decimal], str]  # finite Decimals only
    text: Callable[[str], str]


def cell_text(value: Any, style: CellStyle) -> str:
    """`value` as `style` writes its kind: None, <NA>, NaT, NaN and infinities are ""."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, bool | np.bool_):
        return style.boolean(bool(value))
    if isinstance(value, int | np.integer):
        return style.integer(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        return style.floating(f) if math.isfinite(f) else ""
    if isinstance(value, Decimal):
        return style.decimal(value) if value.is_finite() else ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return style.text(str(value))
