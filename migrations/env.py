"""Alembic environment: the URL comes from the usage-etl config, batch mode on SQLite."""

from __future__ import annotations

import sys
from logging.config import fileConfig
from typing import NoReturn

from alembic import context
from sqlalchemy import Connection, Engine

from etl.config import load_config
from etl.errors import ConfigError, UsageEtlError
from etl.store.engine import make_engine
from etl.store.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _fail(problems: list[str], exit_code: int) -> NoReturn:
    """Stop the `alembic` command with one line per problem, as `usage-etl` would."""
    for problem in problems:
        print(f"alembic: error: {problem}", file=sys.stderr)
    raise SystemExit(exit_code)


def _configured_url() -> str:
    """The URL from the ini or the usage-etl config (file, environment)."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    try:
        return load_config().database_url
    except ConfigError as exc:
        # From the `alembic` command line a bad config is a usage error, not a crash; called
        # from usage-etl (no cmd_opts) it goes up to the caller, which reports it its own way.
        if config.cmd_opts is None:
            raise
        _fail(exc.problems, exc.exit_code)


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    try:
        return make_engine(_configured_url())
    except UsageEtlError as exc:
        if config.cmd_opts is None:
            raise
        _fail([str(exc)], exc.exit_code)


def run_migrations_offline() -> None:
    url = _configured_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # A caller holding a lock in its own transaction (etl.store.engine.ensure_schema) passes that
    # connection: the migrations then run inside the transaction, under the lock.
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    with _engine().connect() as connection:
        _run_on(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
