"""`usage-etl compact`: move old raw responses into monthly archive files (SPEC 13)."""

from __future__ import annotations

import sys

import click

from etl.cli.context import AppContext


@click.command("compact")
@click.pass_obj
def compact_cmd(app: AppContext) -> None:
    """Move raw responses older than `[retention] raw_days` into monthly archive files.

    Then retire samples older than `samples_days` whose raw responses are archived. Each
    source's responses go to ARCHIVE_DIR/SOURCE/YYYY-MM.jsonl.gz (UTC month), a file
    checked complete before the rows leave the database; samples stay. Stopped at any
    point, nothing is lost and running it again completes the work.

    \b
    Example:
      usage-etl compact
    """
    from etl.runtime.retention import retention_pass, to_compact
    from etl.timefmt import utcnow

    config = app.config
    engine = app.engine
    if not config.retention.active:
        click.echo("nothing to do: [retention] raw_days is not set", err=True)
        return
    now = utcnow()
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("compacting", total=to_compact(engine, config, now))
            result = retention_pass(engine, config, now,
                                    progress=lambda n: bar.update(task, completed=n))
    else:
        result = retention_pass(engine, config, now)
    click.echo(result.summary())


COMMANDS = [compact_cmd]
