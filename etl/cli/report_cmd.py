"""`usage-etl report ... | reconcile`: the reports, built by the `reports` package."""

from __future__ import annotations

from pathlib import Path

import click

from etl.cli.context import AppContext
from etl.errors import InputError

FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["csv", "html", "both"]), default="both",
    show_default=True, help="Which files to write.",
)
OUT_OPTION = click.option(
    "--out", "out", metavar="DIR",
    help="Folder for the report files (default: the config's reports_dir, ./reports-out).",
)
TZ_OPTION = click.option(
    "--tz", "tz", metavar="NAME", help="IANA time zone of days and months (default: config).",
)


def _out(app: AppContext, out: str | None) -> Path:
    return Path(out) if out else Path(app.config.reports_dir)


def _check_tz(tz: str | None) -> None:
    # Checked before the database is opened, so a typo costs nothing.
    if tz is not None:
        from reports.periods import resolve_tz

        resolve_tz(tz)


def _echo_paths(paths: list[Path]) -> None:
    for path in paths:
        click.echo(str(path))


@click.group("report")
def report() -> None:
    """Build daily consumption and monthly billing reports (CSV and/or HTML).

    \b
    Example:
      usage-etl report daily --date 2026-11-21 --format both
      usage-etl report billing --month 2026-11 --out reports-out
    """


@report.command("daily")
@click.option("--date", "day", metavar="YYYY-MM-DD", help="One local day.")
@click.option("--start", metavar="YYYY-MM-DD", help="First local day (with --end).")
@click.option("--end", metavar="YYYY-MM-DD", help="Last local day, included (with --start).")
@FORMAT_OPTION
@OUT_OPTION
@TZ_OPTION
@click.pass_obj
def report_daily(app: AppContext, day: str | None, start: str | None, end: str | None,
                 fmt: str, out: str | None, tz: str | None) -> None:
    """Daily consumption: one daily-YYYY-MM-DD file per local day, every configured series.

    Prints the paths written.

    \b
    Example:
      usage-etl report daily --date 2026-11-21
      usage-etl report daily --start 2026-11-01 --end 2026-11-30 --format csv --tz Europe/Berlin
    """
    from reports.jobs import build_daily
    from reports.periods import parse_date

    if day is not None and (start is not None or end is not None):
        raise InputError("--date: give either --date or --start and --end, not both")
    if day is not None:
        first = last = parse_date(day, "--date")
    elif start is not None and end is not None:
        first, last = parse_date(start, "--start"), parse_date(end, "--end")
        if last < first:
            raise InputError(f"--end: {last} is before --start {first}")
    else:
        raise InputError("--date: give --date DAY, or --start DAY and --end DAY")
    _check_tz(tz)
    paths = build_daily(app.engine, app.config, first, last, tz=tz, formats=(fmt,),
                        out_dir=_out(app, out))
    _echo_paths(paths)


@report.command("billing")
@click.option("--month", required=True, metavar="YYYY-MM", help="The month to bill.")
@FORMAT_OPTION
@OUT_OPTION
@TZ_OPTION
@click.pass_obj
def report_billing(app: AppContext, month: str, fmt: str, out: str | None,
                   tz: str | None) -> None:
    """Monthly billing: quantity, overage and amount per [[billing]] rule (billing-YYYY-MM).

    For a month in progress it adds the month-to-date and a projection to month end.
    Prints the paths written.

    \b
    Example:
      usage-etl report billing --month 2026-11 --format both
    """
    from reports.jobs import build_billing
    from reports.periods import parse_month

    first = parse_month(month)
    _check_tz(tz)
    paths = build_billing(app.engine, app.config, first, tz=tz, formats=(fmt,),
                          out_dir=_out(app, out))
    _echo_paths(paths)


@report.command("focus")
@click.option("--month", required=True, metavar="YYYY-MM", help="The billing month.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True, help="CSV, or Parquet (needs the extra usage-etl[parquet]).")
@OUT_OPTION
@TZ_OPTION
@click.pass_obj
def report_focus(app: AppContext, month: str, fmt: str, out: str | None,
                 tz: str | None) -> None:
    """The billing month as a FOCUS 1.2 cost and usage file (focus-YYYY-MM.csv/.parquet).

    One Usage row per [[billing]] rule, its flat fee as a Purchase row, a minimum's
    shortfall and credits applied as rows of their own: BilledCost adds up to the billing
    report's amount due. Prints the path written.

    \b
    Example:
      usage-etl report focus --month 2026-11 --format parquet --out finops/
    """
    from etl.extras import pyarrow_parquet
    from reports.jobs import build_focus
    from reports.periods import parse_month
    from reports.pipelines.focus import FocusFormat, focus_format

    first = parse_month(month)
    _check_tz(tz)
    wanted = focus_format(fmt)
    if wanted is FocusFormat.PARQUET:
        pyarrow_parquet("--format parquet")  # before the database is opened
    _echo_paths(build_focus(app.engine, app.config, first, tz=tz, fmt=wanted,
                            out_dir=_out(app, out)))


@click.command("reconcile")
@click.option("--month", required=True, metavar="YYYY-MM", help="The invoiced month.")
@click.option("--invoice", required=True, metavar="FILE",
              help="Invoice CSV with columns source, month, metric, quantity, amount; or a "
                   "FOCUS file (CSV, gzip CSV or Parquet), told by its content.")
@click.option("--tolerance-pct", type=float, default=1.0, show_default=True,
              help="Largest difference, in percent of the invoiced value, that still matches.")
@FORMAT_OPTION
@OUT_OPTION
@TZ_OPTION
@click.pass_obj
def reconcile(app: AppContext, month: str, invoice: str, tolerance_pct: float, fmt: str,
              out: str | None, tz: str | None) -> None:
    """Compare metered usage with a vendor invoice (reconcile-YYYY-MM).

    Each row is match, mismatch, missing_invoice or missing_metered, with a reason
    pointing at a likely cause. Prints the paths written.

    \b
    Example:
      usage-etl reconcile --month 2026-11 --invoice invoice-2026-11.csv --tolerance-pct 0.5
    """
    from reports.periods import parse_month
    from reports.pipelines import reconcile as reconcile_report
    from reports.pipelines import reconcile_input, write_reconcile

    first = parse_month(month)
    _check_tz(tz)
    # A bad invoice (or one for another month) is refused before the database is opened.
    given = reconcile_input(first, Path(invoice), tolerance_pct)
    paths = write_reconcile(reconcile_report(app.engine, app.config, given, tz),
                            (fmt,), _out(app, out))
    _echo_paths(paths)


COMMANDS: list[click.Command] = [report, reconcile]
