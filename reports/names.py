"""Report files (SPEC 3): names, formats and folder, one rule the builders and the daemon share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from enum import StrEnum
from pathlib import Path

from etl.errors import InputError


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


def focus_name(month: date) -> str:
    """``focus-YYYY-MM`` for the month containing `month` (SPEC 12)."""
    return f"focus-{month:%Y-%m}"


def report_files(out_dir: Path, stem: str, formats: list[ReportFormat] | tuple[ReportFormat, ...]
                 ) -> list[Path]:
    """The files of report `stem` in `out_dir`, one per format, in the order given."""
    return [out_dir / f"{stem}.{fmt}" for fmt in formats]


def report_formats(formats: Sequence[str]) -> list[ReportFormat]:
    """The formats asked for ("both" = csv and html); none or an unknown one is an InputError."""
    wanted = ["csv", "html"] if "both" in formats else list(formats)
    bad = [f for f in wanted if f not in set(ReportFormat)]
    if bad or not wanted:
        raise InputError(f"--format: {', '.join(bad) or 'none'} (expected csv, html or both)")
    return [ReportFormat(f) for f in wanted]


def output_dir(out_dir: Path) -> Path:
    """`out_dir`, created with its parents if missing; an InputError if it cannot be."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out: cannot create {out_dir}: {exc.strerror}") from None
    return out_dir
