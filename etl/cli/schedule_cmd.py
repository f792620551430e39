"""`usage-etl schedule | status`: the daemon and its health."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from sqlalchemy import Engine

from etl.cli.context import AppContext
from etl.db import ensure_schema, make_engine, normalize_url
from etl.errors import ConfigError
from etl.logs import LOG_FORMATS, setup_daemon_logging

PG_CONNECT_TIMEOUT_S = 10


@click.command("schedule")
@click.option(
    "--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
    help="One line per event as key=value text, or as JSON objects.",
)
@click.option(
    "--stop-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
    metavar="SECONDS", help="How long to wait for in-flight polls after SIGINT/SIGTERM.",
)
@click.pass_obj
def schedule(app: AppContext, log_format: str, stop_timeout: float) -> None:
    """Run in the foreground: poll every source on its interval, build reports after midnight.

    Logs one line per poll (source, outcome, latency) to stderr. If the database cannot be
    written, polls are kept in the spool folder and written once it is back. SIGINT or
    SIGTERM lets in-flight polls finish, then exits 0.

    \b
    Example:
      usage-etl --config usage-etl.toml schedule
      usage-etl schedule --log-format json 2>> /var/log/usage-etl.jsonl
    """
    from etl.scheduler import Scheduler

    config = app.config
    if not config.sources:
        raise ConfigError("sources: no [[sources]] configured, nothing to schedule")
    config.check_secrets()
    secrets = [s.read_secret() for s in config.sources]
    setup_daemon_logging(log_format, secrets)
    engine = daemon_engine(config.database_url)
    scheduler = Scheduler(config, engine, stop_timeout=stop_timeout)
    code = scheduler.run()
    engine.dispose()
    sys.exit(code)


def daemon_engine(url: str) -> Engine:
    """The daemon's database: like every command's, but a PostgreSQL server that stops
    answering fails a connect in seconds (then the poll is spooled) instead of minutes."""
    kwargs: dict[str, Any] = {}
    if normalize_url(url).startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    engine = make_engine(url, **kwargs)
    ensure_schema(engine)
    return engine


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for monitoring.")
@click.pass_obj
def status(app: AppContext, as_json: bool) -> None:
    """Per source: last success, last error, failures, staleness, pause; exit 1 if any is stale.

    A source is stale when it has no successful poll within its staleness window
    (2 x interval_seconds unless staleness_seconds is set); a source never polled is stale.

    \b
    Example:
      usage-etl status
      usage-etl status --json | jq '.sources[] | select(.stale)'
    """
    from etl.spool import Spool
    from etl.status import any_stale, format_plain, source_statuses, status_rows

    config = app.config
    statuses = source_statuses(app.engine, config)
    pending = len(Spool(config.spool_dir))
    stale = any_stale(statuses)
    if as_json:
        click.echo(json.dumps(
            {"stale": stale, "spool_pending": pending,
             "sources": [s.to_json() for s in statuses]},
            indent=2,
        ))
    elif not statuses:
        click.echo("no sources configured")
    elif sys.stdout.isatty():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        header, rows = status_rows(statuses)
        table = Table(*header, title="usage-etl sources")
        styles = {"ok": "green", "stale": "red", "paused": "yellow"}
        for row in rows:
            table.add_row(*(escape(c) for c in row), style=styles.get(row[1]))
        Console().print(table)
        if pending:
            Console().print(f"{pending} poll(s) waiting in the spool ({config.spool_dir})")
    else:
        click.echo(format_plain(statuses))
        if pending:
            click.echo(f"{pending} poll(s) waiting in the spool ({config.spool_dir})")
    if stale:
        sys.exit(1)


COMMANDS: list[click.Command] = [schedule, status]
