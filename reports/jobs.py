"""Build report files in one call: pipeline, then its files (the CLI, nightly job and demo)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import Engine

from etl.config import Config
from reports.names import ReportFormat
from reports.periods import parse_month
from reports.pipelines import (
    FocusFormat,
    billing,
    daily,
    focus,
    reconcile,
    reconcile_input,
    write_billing,
    write_daily,
    write_focus,
    write_reconcile,
)

FORMATS = tuple(ReportFormat)


def build_daily(engine: Engine, config: Config, start: date, end: date, *,
                tz: str | None = None, formats: Sequence[str] = FORMATS,
                out_dir: Path) -> list[Path]:
    """daily-YYYY-MM-DD.{csv,html} for each local day start..end (both included)."""
    return write_daily(daily(engine, config, start, end, tz), formats, out_dir)


def build_billing(engine: Engine, config: Config, month: str | date, *, tz: str | None = None,
                  formats: Sequence[str] = FORMATS, out_dir: Path,
                  now: datetime | None = None) -> list[Path]:
    """billing-YYYY-MM.{csv,html}: one row per billing rule.

    `month` is "YYYY-MM" or any date in the month.
    """
    first = parse_month(month) if isinstance(month, str) else month.replace(day=1)
    return write_billing(billing(engine, config, first, tz, now=now), formats, out_dir)


def build_focus(engine: Engine, config: Config, month: str | date, *, tz: str | None = None,
                fmt: FocusFormat = FocusFormat.CSV, out_dir: Path,
                now: datetime | None = None) -> list[Path]:
    """focus-YYYY-MM.csv (or .parquet): the billing month as FOCUS rows (SPEC 12).

    `month` is "YYYY-MM" or any date in the month.
    """
    first = parse_month(month) if isinstance(month, str) else month.replace(day=1)
    return [write_focus(focus(engine, config, first, tz, now=now), fmt, out_dir)]


def build_reconcile(engine: Engine, config: Config, month: str, invoice: Path, *,
                    tolerance_pct: float = 1.0, tz: str | None = None,
                    formats: Sequence[str] = FORMATS, out_dir: Path,
                    now: datetime | None = None) -> list[Path]:
    """reconcile-YYYY-MM.{csv,html}: metered against the invoice CSV."""
    given = reconcile_input(parse_month(month), Path(invoice), tolerance_pct)
    return write_reconcile(reconcile(engine, config, given, tz, now=now), formats, out_dir)
