"""The report tables as plain DataFrames in one call (documented in docs/reports.md).

Each is its pipeline's table (reports.pipelines); `reports.api` adds typed columns.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from etl.config import Config
from reports.periods import parse_month
from reports.pipelines import billing, daily, reconcile, reconcile_input


def daily_frame(engine: Engine, config: Config, start: date, end: date,
                tz: str | None = None, *, rollups: bool = True) -> pd.DataFrame:
    """The daily report rows for local days start..end (both included), in `tz` or the config's.

    `rollups=False` computes every day from raw samples and stores nothing.
    """
    return daily(engine, config, start, end, tz, rollups=rollups).table


def billing_frame(engine: Engine, config: Config, month: str | date, tz: str | None = None,
                  *, now: datetime | None = None, rollups: bool = True) -> pd.DataFrame:
    """One row per billing rule for the month (YYYY-MM), SPEC 6 columns then extras."""
    first = parse_month(month) if isinstance(month, str) else month
    return billing(engine, config, first, tz, now=now, rollups=rollups).table


def reconcile_frame(engine: Engine, config: Config, month: str, invoice: Path | str,
                    *, tolerance_pct: float = 1.0, tz: str | None = None,
                    now: datetime | None = None) -> pd.DataFrame:
    """Metered (billing_frame) against the invoice CSV's lines for `month`."""
    given = reconcile_input(parse_month(month), Path(invoice), tolerance_pct,
                            tolerance_name="tolerance_pct")
    return reconcile(engine, config, given, tz, now=now).table
