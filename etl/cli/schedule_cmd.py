"""`usage-etl schedule | status`: the daemon and its health."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from etl.cli.context import AppContext
from etl.errors import ConfigError, InputError
from etl.redact import redact, redact_url
from etl.runtime.logs import LOG_FORMATS, event, setup_daemon_logging

log = logging.getLogger("etl.schedule")

@click.command("schedule")
@click.option(
    "--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
    help="One line per event as key=value text, or as JSON objects.",
)
@click.option(
    "--stop-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
    metavar="SECONDS",
    help="How long to wait for in-flight polls after SIGINT/SIGTERM before exiting anyway.",
)
@click.option(
    "--metrics-listen", metavar="HOST:PORT", default=None,
    help="Serve Prometheus /metrics and /healthz there (default: the config's metrics_listen).",
)
@click.pass_obj
def schedule(app: AppContext, log_format: str, stop_timeout: float,
             metrics_listen: str | None) -> None:
    """Run in the foreground: poll every source on its interval, build reports after midnight.

    Logs one line per poll (source, outcome, latency) to stderr. If the database cannot be
    written (also when it is unreachable at start-up), polls are kept in the spool folder
    and written once it is back. Alerts are evaluated after each stored poll and their
    notifications sent (and retried). SIGINT or SIGTERM lets in-flight polls finish for at
    most --stop-timeout seconds, then exits 0.

    \b
    Example:
      usage-etl --config usage-etl.toml schedule
      usage-etl schedule --log-format json 2>> /var/log/usage-etl.jsonl
      usage-etl schedule --metrics-listen 127.0.0.1:9108
    """
    from etl.alerts.notifiers import notifier_secrets
    from etl.config import listen_address_problem
    from etl.runtime.daemon_db import daemon_engine, open_daemon_database
    from etl.runtime.scheduler import Scheduler

    config = app.config
    if not config.sources:
        raise ConfigError("sources: no [[sources]] configured, nothing to schedule")
    if metrics_listen is not None:
        problem = listen_address_problem(metrics_listen)
        if problem:
            raise InputError(f"--metrics-listen: {problem}")
    config.check_secrets()
    config.check_notifier_secrets()
    secrets = [s.read_secret() for s in config.sources] + notifier_secrets(config.notifiers)
    setup_daemon_logging(log_format, secrets)
    engine, unreachable = open_daemon_database(config.database_url)
    if unreachable is not None:
        event(log, logging.WARNING, "database-unreachable",
              database=redact_url(str(engine.url)), error=redact(unreachable),
              message="starting in spool-only mode; the schema is checked once it is back")
    # Reports read whole months: they keep the keepalives but not the polls' statement limit.
    report_engine = daemon_engine(config.database_url, statement_timeout_ms=None)
    scheduler = Scheduler(config, engine, report_engine=report_engine,
                          stop_timeout=stop_timeout, schema_ready=unreachable is None,
                          metrics_listen=metrics_listen)
    code = scheduler.run()
    if scheduler.threads_left:
        # Polls still blocked on a vendor would hold the exit until they return (worker
        # threads are joined at interpreter exit). Nothing of theirs was acknowledged, the
        # spool is fsynced file by file, so only the log needs flushing.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    report_engine.dispose()
    engine.dispose()
    sys.exit(code)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for monitoring.")
@click.pass_obj
def status(app: AppContext, as_json: bool) -> None:
    """Per source: last success, last error, failures, staleness, pause; exit 1 if any is stale.

    A source is stale when it has no successful poll within its staleness window
    (2 x interval_seconds unless staleness_seconds is set); a source never polled is stale.
    History sources also show how far they have read (read up to) and how far that is
    behind now; a lag of up to `align` (a day for daily buckets) is normal: the bucket in
    progress is read again by the next poll. Alerts firing now are listed under the table (they
    do not change the exit status).

    \b
    Example:
      usage-etl status
      usage-etl status --json | jq '.sources[] | select(.stale)'
    """
    from etl.runtime.status import (
        any_stale,
        firing_alerts,
        format_plain,
        source_statuses,
        spool_notes,
        status_rows,
    )
    from etl.store.spool import Spool

    config = app.config
    statuses = source_statuses(app.engine, config)
    spool = Spool(config.spool_dir)
    pending, unreadable = len(spool), len(spool.unreadable())
    stale = any_stale(statuses)
    firing = firing_alerts(app.engine, config)
    notes = spool_notes(config.spool_dir, pending, unreadable) + [f.note() for f in firing]
    if as_json:
        click.echo(json.dumps(
            {"stale": stale, "spool_pending": pending, "spool_unreadable": unreadable,
             "sources": [s.to_json() for s in statuses],
             "alerts_firing": [f.to_json() for f in firing]},
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
        styles = {"ok": "green", "paused": "yellow"}
        for row in rows:
            table.add_row(*(escape(c) for c in row),
                          style="red" if "stale" in row[1] else styles.get(row[1]))
        console = Console()
        console.print(table)
        for note in notes:
            console.print(escape(note))
    else:
        click.echo(format_plain(statuses))
        for note in notes:
            click.echo(note)
    if stale:
        sys.exit(1)


COMMANDS: list[click.Command] = [schedule, status]
