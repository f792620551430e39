"""The `usage-etl` command line: a thin click layer over library functions.

Library errors become one-line messages here and nowhere else. Start-up stays light: the
command modules import SQLAlchemy, Alembic, pandas and requests inside the commands that use
them, so `--help`, `--version` and `status` do not pay for what they do not run
(tests/test_cli_startup.py, benchmarks/startup.py).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from etl.cli.context import AppContext
from etl.errors import ConfigError, DatabaseUrlError, RetiredHistoryError, UsageEtlError
from etl.files import os_error_text
from etl.redact import LOG_MASK, redact

log = logging.getLogger("etl")


class ErrorHandlingGroup(click.Group):
    """Turns usage-etl errors into `usage-etl: error: ...` lines and the SPEC exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a usage-etl error becomes one line on stderr and its exit status (SPEC 3)."""
        try:
            result = super().invoke(ctx)
            # Output still buffered fails here, not at interpreter exit, if its reader is gone.
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            # The reader stopped early (`usage-etl export ... | head`): click's own handler
            # stops quietly with exit status 1, as Python documents for SIGPIPE.
            raise
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(f"usage-etl: error: {_masked(problem)}", err=True)
            ctx.exit(exc.exit_code)
        except DatabaseUrlError as exc:
            # Named as the user gave it: the option, the variable or the file's key.
            obj = ctx.obj if isinstance(ctx.obj, AppContext) else None
            label = obj.database_url_from() if obj is not None else "database_url"
            click.echo(f"usage-etl: error: {_masked(f'{label}: {exc.problem}')}", err=True)
            ctx.exit(exc.exit_code)
        except RetiredHistoryError as exc:
            # Where the retired history is: the configured archive folder.
            obj = ctx.obj if isinstance(ctx.obj, AppContext) else None
            config = obj.config_or_none() if obj is not None else None
            if config is not None:
                exc = RetiredHistoryError(exc.before, config.retention.archive_dir)
            click.echo(f"usage-etl: error: {_masked(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except UsageEtlError as exc:
            click.echo(f"usage-etl: error: {_masked(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a file the command writes: full or read-only disk, ...
            click.echo(f"usage-etl: error: {redact(os_error_text(exc))}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("usage-etl: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            from etl.store.engine import describe_database_error  # loaded by now

            obj = ctx.obj if isinstance(ctx.obj, AppContext) else None
            url = obj.database_url_or_none() if obj is not None else None
            click.echo(f"usage-etl: error: {_masked(describe_database_error(exc, url))}",
                       err=True)
            ctx.exit(1)


def _masked(message: str) -> str:
    """`message` with every secret of the loaded config masked (a database password too)."""
    return redact(message, LOG_MASK.secrets())


def _is_database_error(exc: BaseException) -> bool:
    """Whether `exc` is a database error, asked without importing SQLAlchemy.

    Only a command that opened a database has loaded it (and only such a command can raise
    its errors).
    """
    # Also the drivers' own errors, from the raw-cursor paths (bulk import, report reads).
    for module, name in (("sqlalchemy.exc", "SQLAlchemyError"), ("sqlite3", "Error"),
                         ("psycopg", "Error")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $USAGE_ETL_CONFIG, else ./usage-etl.toml).",
)
@click.option(
    "--database-url",
    metavar="URL",
    help="Database URL; overrides the config and $USAGE_ETL_DATABASE_URL.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="usage-etl")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, database_url: str | None, verbose: int) -> None:
    """Keep the usage history SaaS vendors don't keep for you.

    Polls vendor usage endpoints, appends every snapshot to SQLite or PostgreSQL,
    and builds daily, billing and reconciliation reports.

    \b
    Example:
      usage-etl --config usage-etl.toml collect
      usage-etl report daily --date 2026-11-21 --format both
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    quiet_library_loggers()
    ctx.obj = app = AppContext(config_path=config_path, database_url=database_url)
    ctx.call_on_close(app.close)


# Libraries whose debug lines would print stored data: SQLAlchemy's engine logs every
# statement's parameters and result rows (vendor bodies, alert payloads) at -vv.
_SILENCED = ("sqlalchemy.engine", "sqlalchemy.pool", "sqlalchemy.orm")


def quiet_library_loggers() -> None:
    """Mask secrets in every log handler's records; SQLAlchemy's statements and rows stay off.

    The mask is etl.redact.LOG_MASK, whatever -v asks for. urllib3 logs each request's path at DEBUG (a webhook URL's token) and its retries at
    WARNING, psycopg its connection attempts: their lines go out masked.
    """
    for handler in logging.getLogger().handlers:
        handler.addFilter(LOG_MASK)
    for name in _SILENCED:
        logging.getLogger(name).setLevel(logging.WARNING)


def _register() -> None:
    # Imported here so each command family lives in its own module.
    from etl.cli import (
        alerts_cmd,
        backfill_cmd,
        collect_cmd,
        compact_cmd,
        db_cmd,
        report_cmd,
        schedule_cmd,
        vendors_cmd,
    )

    for module in (db_cmd, collect_cmd, backfill_cmd, compact_cmd, report_cmd, schedule_cmd,
                   alerts_cmd, vendors_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """The `usage-etl` console script (and `python -m etl`)."""
    cli(prog_name="usage-etl")
