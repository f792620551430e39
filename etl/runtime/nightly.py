"""The daemon's nightly reports: which files each night owes, and building them."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import Engine

from etl.config import Config
from reports.names import ReportFormat, billing_name, daily_name, report_files

NIGHTLY_FORMATS = (ReportFormat.CSV, ReportFormat.HTML)


def nightly_files(config: Config, today: date) -> list[Path]:
    """The files the nightly job of `today` writes (see nightly_reports)."""
    out_dir = Path(config.reports_dir)
    yesterday = today - timedelta(days=1)
    files = report_files(out_dir, daily_name(yesterday), NIGHTLY_FORMATS)
    if today.day == 1 and config.billing:
        files += report_files(out_dir, billing_name(yesterday), NIGHTLY_FORMATS)
    return files


def nightly_reports(engine: Engine, config: Config, today: date) -> list[Path]:
    """Yesterday's daily report, and on the 1st of a month last month's billing report."""
    # Imported here: `etl` stays free of pandas unless a report is actually built.
    from reports.pipelines import billing, daily, write_billing, write_daily

    out_dir = Path(config.reports_dir)
    yesterday = today - timedelta(days=1)
    written = write_daily(daily(engine, config, yesterday, yesterday), NIGHTLY_FORMATS, out_dir)
    if today.day == 1 and config.billing:
        written += write_billing(billing(engine, config, yesterday), NIGHTLY_FORMATS, out_dir)
    return written
