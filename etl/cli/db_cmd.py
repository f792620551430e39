"""`usage-etl db ...`: schema management."""

from __future__ import annotations

import click

from etl.cli.context import AppContext
from etl.redact import redact_url


@click.group()
def db() -> None:
    """Manage the database schema.

    \b
    Example:
      usage-etl db upgrade
    """


@db.command("upgrade")
@click.pass_obj
def db_upgrade(app: AppContext) -> None:
    """Bring the database schema to the newest revision (same as `alembic upgrade head`).

    \b
    Example:
      usage-etl --database-url postgresql://postgres@127.0.0.1/usage db upgrade
    """
    from etl.store.engine import current_revision, upgrade

    engine = app.unchecked_engine
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    where = redact_url(str(engine.url))
    if before == after:
        click.echo(f"{where}: schema already at {after}")
    else:
        click.echo(f"{where}: schema upgraded {before or 'empty'} -> {after}")


@db.command("current")
@click.pass_obj
def db_current(app: AppContext) -> None:
    """Print the schema revision of the database and the newest one.

    \b
    Example:
      usage-etl db current
    """
    from etl.store.engine import current_revision, head_revision

    engine = app.unchecked_engine
    click.echo(f"current: {current_revision(engine) or 'empty'}\nnewest:  {head_revision()}")


COMMANDS = [db]
