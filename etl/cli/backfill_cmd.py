"""`usage-etl backfill`: read a past range of a history source (SPEC 10)."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time

import click

from etl.cli.context import AppContext, Day
from etl.errors import ConfigError, InputError


@click.command("backfill")
@click.option("--source", "name", required=True, metavar="NAME", help="The history source.")
@click.option("--start", required=True, type=Day(), metavar="DATE",
              help="First UTC day to read (YYYY-MM-DD).")
@click.option("--end", type=Day(), metavar="DATE",
              help="UTC day to stop before (YYYY-MM-DD; default: now).")
@click.pass_obj
def backfill(app: AppContext, name: str, start: datetime, end: datetime | None) -> None:
    """Read [--start, --end) of a history source, in request ranges, oldest first.

    Each range is stored in one transaction as it is read; the source's read-up-to point
    never moves back. It stops at the first range that fails, keeping what was stored, and
    can be run again. Exit status 0 when every range was read, 1 otherwise, 2 for a source
    that is not a history source or a bad range.

    \b
    Example:
      usage-etl backfill --source openai --start 2026-09-01 --end 2026-11-01
    """
    from etl.collect.poll import Collector, outcomes_in_summary
    from etl.runtime.history import poll_history
    from etl.store.writer import record_polls

    config = app.config
    (source,) = config.select_sources([name])
    if source.vendor.history is None:
        raise ConfigError(f"--source {name}: not a history source (it has no [sources.window])")
    lo = _day(start.date())
    hi = _day(end.date()) if end is not None else None
    if lo.year < 1970:
        raise InputError(f"--start {start.date()}: before 1970")
    if hi is not None and hi <= lo:
        raise InputError(f"--start {start.date()}: not before --end {hi.date()}")
    now = datetime.now(UTC)
    if hi is None and lo >= now:
        # --end defaults to now: a start in the future is an empty range, not a backfill.
        raise InputError(f"--start {start.date()}: not before now "
                         f"({now:%Y-%m-%d %H:%M}Z, the default --end); nothing to read")
    config.check_secrets([source])
    engine = app.engine
    # How the backfill ended is printed once, below, not also as a log line.
    with Collector([source]) as collector, outcomes_in_summary():
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeRemainingColumn(),
                          console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(f"backfilling {name}", total=None)
                result = poll_history(
                    engine, collector, source, start=lo, end=hi,
                    on_range=lambda a, b, done, total: bar.update(task, completed=done,
                                                                  total=total))
        else:
            result = poll_history(engine, collector, source, start=lo, end=hi)
    # A range the database refused is stored with the attempt if it is back; the ranges after
    # it were not read, so the backfill did not finish either way (run it again).
    refused = bool(result.pages)
    record_polls(engine, [result])
    if result.ok and not refused:
        click.echo(f"{name}: backfilled, {result.samples_stored} samples stored")
        return
    if refused:
        click.echo(f"{name}: stopped: the database refused a range; {result.samples_stored} "
                   "samples stored; run the backfill again for the rest", err=True)
        sys.exit(1)
    click.echo(f"{name}: {result.outcome}: {result.error} "
               f"({result.samples_stored} samples stored before it)", err=True)
    sys.exit(1)


def _day(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


COMMANDS = [backfill]
