"""The daemon's nightly reports: when each night comes, which files it owes, building them."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from etl.config import Config
from reports.names import ReportFormat, billing_name, daily_name, report_files
from reports.periods import local_midnight

NIGHTLY_FORMATS = (ReportFormat.CSV, ReportFormat.HTML)


def billing_due(config: Config, today: date) -> date | None:
    """The period label whose billing report the night of `today` owes, or None.

    A rule's period labelled with last month ends on its `cycle_day` of this month (SPEC
    11): that night the report of that label is written (again, with a later cycle day,
    so that the file holds every finished period).
    """
    if not any(rule.cycle_day == today.day for rule in config.billing):
        return None
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


def nightly_files(config: Config, today: date) -> list[Path]:
    """The files the nightly job of `today` writes (see nightly_reports)."""
    out_dir = Path(config.reports_dir)
    yesterday = today - timedelta(days=1)
    files = report_files(out_dir, daily_name(yesterday), NIGHTLY_FORMATS)
    label = billing_due(config, today)
    if label is not None:
        files += report_files(out_dir, billing_name(label), NIGHTLY_FORMATS)
    return files


def nightly_reports(engine: Engine, config: Config, today: date) -> list[Path]:
    """Yesterday's daily report, and the billing report of the periods that ended yesterday.

    With the default `cycle_day` 1 that is last month's on the 1st of a month.
    """
    # Imported here: `etl` stays free of pandas unless a report is actually built.
    from reports.jobs import build_billing, build_daily

    out_dir = Path(config.reports_dir)
    yesterday = today - timedelta(days=1)
    written = build_daily(engine, config, yesterday, yesterday, formats=NIGHTLY_FORMATS,
                          out_dir=out_dir)
    label = billing_due(config, today)
    if label is not None:
        written += build_billing(engine, config, label, formats=NIGHTLY_FORMATS,
                                 out_dir=out_dir)
    return written


def night_begins(today: date, tz: ZoneInfo, after_midnight: clock_time) -> datetime:
    """When the nightly job of `today` is due (UTC): `after_midnight` after today's start.

    The day starts at local midnight, or where a daylight-saving jump skips midnight at the
    first instant that exists (fold=0, as the reports cut days, SPEC 5); the delay is real
    elapsed time from there, so a skipped or repeated midnight still has exactly one night.
    """
    start = local_midnight(today, tz)
    return start + timedelta(hours=after_midnight.hour, minutes=after_midnight.minute,
                             seconds=after_midnight.second)


def nights_due(first: date, now: datetime, tz: ZoneInfo,
               after_midnight: clock_time) -> list[date]:
    """Every night from `first` on (a `today` of nightly_files) whose time has come by `now`."""
    last = now.astimezone(tz).date()
    if now < night_begins(last, tz, after_midnight):
        last -= timedelta(days=1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
