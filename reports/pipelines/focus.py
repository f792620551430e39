"""The FOCUS report (SPEC 12): the billing month as FOCUS rows (`focus`), then a file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from etl.config import Config
from etl.errors import InputError
from etl.timefmt import from_micros
from reports.compute.focus import ChargePeriod, Provider, focus_table
from reports.names import focus_name, output_dir
from reports.pipelines.billing import BillingResult, billing
from reports.render.focus import write_focus_csv, write_focus_parquet


class FocusFormat(StrEnum):
    """The file formats of a FOCUS report."""

    CSV = "csv"
    PARQUET = "parquet"


@dataclass(frozen=True)
class FocusResult:
    """A month's FOCUS rows (`table`, reports.compute.focus.FOCUS_COLUMNS) and its billing."""

    billing: BillingResult
    table: pd.DataFrame


def providers(config: Config) -> dict[str, Provider]:
    """Each source's Provider: `vendor_name` (default its kind), `account_id` (its name)."""
    found = {}
    for src in config.sources:
        found[src.name] = Provider(src.vendor_name or src.kind, src.account_id or src.name,
                                   src.name)
    return found


def focus(engine: Engine, config: Config, month: date, tz: str | None = None, *,
          now: datetime | None = None, rollups: bool = True) -> FocusResult:
    """The FOCUS rows of the billing report of `month` (reports.pipelines.billing.billing).

    `tz`, `now` and `rollups` as there.
    """
    billed = billing(engine, config, month, tz, now=now, rollups=rollups)
    periods = [ChargePeriod(rp.label.strftime("%Y-%m"), from_micros(rp.period.start_us),
                            from_micros(rp.period.end_us)) for rp in billed.priced]
    paid = ([d.by_credit for d in billed.draws] if billed.draws
            else [()] * len(billed.priced))
    table = focus_table(billed.table, [rp.rule for rp in billed.priced], periods,
                        providers(config), paid)
    return FocusResult(billed, table)


def focus_format(fmt: str) -> FocusFormat:
    """`fmt` as a FocusFormat; anything else is an InputError naming --format."""
    try:
        return FocusFormat(fmt)
    except ValueError:
        raise InputError(f"--format: {fmt!r} (expected csv or parquet)") from None


def write_focus(result: FocusResult, fmt: FocusFormat, out_dir: Path) -> Path:
    """focus-YYYY-MM.csv or .parquet in `out_dir`; the path written.

    Parquet raises MissingExtraError (naming the extra) when pyarrow is not installed.
    """
    base = output_dir(out_dir) / focus_name(result.billing.month)
    if fmt is FocusFormat.CSV:
        return write_focus_csv(result.table, base.with_suffix(".csv"))
    if fmt is FocusFormat.PARQUET:
        return write_focus_parquet(result.table, base.with_suffix(".parquet"))
    from typing import assert_never
    assert_never(fmt)
