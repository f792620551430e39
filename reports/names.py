"""Report file names (SPEC 3): the one rule the builders and the daemon's catch-up share."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from pathlib import Path


class ReportFormat(StrEnum):
    """A report file format."""

    CSV = "csv"
    HTML = "html"


def daily_name(day: date) -> str:
    """``daily-YYYY-MM-DD`` (without the extension)."""
    return f"daily-{day.isoformat()}"


def billing_name(month: date) -> str:
    """``billing-YYYY-MM`` for the month containing `month`."""
    return f"billing-{month:%Y-%m}"


def reconcile_name(month: date) -> str:
    """``reconcile-YYYY-MM`` for the month containing `month`."""
    return f"reconcile-{month:%Y-%m}"


def report_files(out_dir: Path, stem: str, formats: list[ReportFormat] | tuple[ReportFormat, ...]
                 ) -> list[Path]:
    """The files of report `stem` in `out_dir`, one per format, in the order given."""
    return [out_dir / f"{stem}.{fmt}" for fmt in formats]
