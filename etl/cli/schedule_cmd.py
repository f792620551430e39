"""`usage-etl schedule | status`: the daemon and its health."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from etl.cli.context import AppContext
from etl.db import ensure_schema, make_engine
from etl.errors import ConfigError, DatabaseError
from etl.logs import LOG_FORMATS, event, setup_daemon_logging
from etl.redact import redact, redact_url

log = logging.getLogger("etl.schedule")

# A PostgreSQL server that goes silent (rather than refusing) must cost a poll seconds to a
# minute before it is spooled, never the ~15 minutes of the kernel's TCP retransmissions:
# keepalives catch a dead peer while we wait for an answer, tcp_user_timeout one that stops
# acknowledging what we send, statement_timeout a server that is up but stuck (locks).
PG_CONNECT_TIMEOUT_S = 10
PG_KEEPALIVES_IDLE_S = 30
PG_KEEPALIVES_INTERVAL_S = 10
PG_KEEPALIVES_COUNT = 3
PG_TCP_USER_TIMEOUT_MS = 60_000
PG_STATEMENT_TIMEOUT_MS = 60_000

# A server that answered, but with one of these, is only unavailable for a while.
_TRANSIENT_FATAL = (
    "starting up", "shutting down", "in recovery", "too many clients",
    "remaining connection slots", "not currently accepting connections",
    "terminating connection",
)


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
@click.pass_obj
def schedule(app: AppContext, log_format: str, stop_timeout: float) -> None:
    """Run in the foreground: poll every source on its interval, build reports after midnight.

    Logs one line per poll (source, outcome, latency) to stderr. If the database cannot be
    written (also when it is unreachable at start-up), polls are kept in the spool folder
    and written once it is back. SIGINT or SIGTERM lets in-flight polls finish for at most
    --stop-timeout seconds, then exits 0.

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
    engine, unreachable = open_daemon_database(config.database_url)
    if unreachable is not None:
        event(log, logging.WARNING, "database-unreachable",
              database=redact_url(str(engine.url)), error=redact(unreachable),
              message="starting in spool-only mode; the schema is checked once it is back")
    # Reports read whole months: they keep the keepalives but not the polls' statement limit.
    report_engine = daemon_engine(config.database_url, statement_timeout_ms=None)
    scheduler = Scheduler(config, engine, report_engine=report_engine,
                          stop_timeout=stop_timeout, schema_ready=unreachable is None)
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


def daemon_connect_args(
    url: str, statement_timeout_ms: int | None = PG_STATEMENT_TIMEOUT_MS
) -> dict[str, Any]:
    """libpq settings that bound how long a silent server can hold a poll; the URL's win."""
    try:
        query = make_url(url).query
    except ArgumentError:
        return {}  # make_engine explains what is wrong with the URL
    wanted: dict[str, Any] = {
        "connect_timeout": PG_CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": PG_KEEPALIVES_IDLE_S,
        "keepalives_interval": PG_KEEPALIVES_INTERVAL_S,
        "keepalives_count": PG_KEEPALIVES_COUNT,
        "tcp_user_timeout": PG_TCP_USER_TIMEOUT_MS,
    }
    args = {k: v for k, v in wanted.items() if k not in query}
    if statement_timeout_ms:
        # connect_args replace the URL's `options` (and `options` replaces $PGOPTIONS), so
        # start from whichever the user set and only add the limit if it has none.
        given = query.get("options", os.environ.get("PGOPTIONS", ""))
        options = " ".join(given) if isinstance(given, tuple) else str(given)
        if "statement_timeout" not in options:
            args["options"] = f"{options} -c statement_timeout={statement_timeout_ms}".strip()
    return args


def daemon_engine(
    url: str, statement_timeout_ms: int | None = PG_STATEMENT_TIMEOUT_MS
) -> Engine:
    """The daemon's database: like every command's, but a PostgreSQL server that stops
    answering fails a poll's write in seconds (then the poll is spooled) instead of minutes."""
    kwargs: dict[str, Any] = {}
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        backend = ""
    if backend in ("postgresql", "postgres"):
        kwargs["connect_args"] = daemon_connect_args(url, statement_timeout_ms)
    return make_engine(url, **kwargs)


def connection_unavailable(dialect: str, message: str) -> bool:
    """Is this connect error one that goes away by itself (server down, unreachable, busy)?

    No for what only a person can fix: a refused login or a database that does not exist.
    """
    if dialect == "sqlite":
        return "locked" in message or "busy" in message
    if "FATAL:" not in message:
        return True  # refused, timed out, dropped, name not resolved: nothing answered
    return any(hint in message for hint in _TRANSIENT_FATAL)


def open_daemon_database(url: str) -> tuple[Engine, str | None]:
    """The daemon's engine with its schema ready, or (engine, why) if the server is away.

    A bad URL or a schema behind the newest revision still stops the daemon (exit 2), and
    so does a refused login (exit 1): waiting would not fix them.
    """
    engine = daemon_engine(url)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        orig = getattr(exc, "orig", None) or exc
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        if not connection_unavailable(engine.dialect.name, first):
            raise DatabaseError(f"database {redact_url(str(engine.url))}: {first}") from None
        return engine, first
    ensure_schema(engine)
    return engine, None


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
    from etl.status import any_stale, format_plain, source_statuses, spool_notes, status_rows

    config = app.config
    statuses = source_statuses(app.engine, config)
    spool = Spool(config.spool_dir)
    pending, unreadable = len(spool), len(spool.unreadable())
    stale = any_stale(statuses)
    notes = spool_notes(config.spool_dir, pending, unreadable)
    if as_json:
        click.echo(json.dumps(
            {"stale": stale, "spool_pending": pending, "spool_unreadable": unreadable,
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
