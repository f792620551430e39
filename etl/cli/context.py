"""Per-invocation state shared by the commands: the config and the database, loaded lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from etl.errors import SecretError
from etl.redact import LOG_MASK
from etl.timefmt import parse_day

# etl.config (vendor kinds, billing and alert rules, currency codes) is imported by the first
# command that reads the config: `--help` and `--version` do without it.
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from etl.config import Config


@dataclass
class AppContext:
    """What every command shares.

    The config path and database URL from the options, and the config and engine, each
    made once on first use.
    """

    config_path: str | None = None
    database_url: str | None = None
    _config: Config | None = field(default=None, init=False)
    _engine: Engine | None = field(default=None, init=False)
    _unchecked: Engine | None = field(default=None, init=False)

    @property
    def config(self) -> Config:
        """The loaded config (SPEC 2); raises etl.errors.ConfigError when it is invalid."""
        if self._config is None:
            from etl.config import load_config

            self._config = load_config(self.config_path, self.database_url)
            config = self._config
            LOG_MASK.add_source(lambda: config_secrets(config))
        return self._config

    @property
    def engine(self) -> Engine:
        """The database, with its schema created if empty and checked if not."""
        if self._engine is None:
            from etl.store.engine import open_database

            self._engine = open_database(self.config.database_url)
        return self._engine

    @property
    def unchecked_engine(self) -> Engine:
        """The database as it is, schema not checked (`db upgrade`, `db current`)."""
        if self._unchecked is None:
            from etl.store.engine import make_engine

            self._unchecked = make_engine(self.config.database_url)
        return self._unchecked

    def close(self) -> None:
        """Close the engines' pooled connections when the command ends.

        A command run in-process (click's test runner, a notebook) would otherwise leave
        them open until the garbage collector finds the engine, which closes them with a
        warning ("connection ... was deleted while still open") in whatever runs then.
        """
        for engine in (self._engine, self._unchecked):
            if engine is not None:
                engine.dispose()
        self._engine = self._unchecked = None

    def config_or_none(self) -> Config | None:
        """The config if a command loaded it (for messages), else None."""
        return self._config

    def database_url_from(self) -> str:
        """Where the database URL came from, for messages (the config's key if loaded)."""
        if self._config is not None:
            return self._config.database_url_from
        return "--database-url" if self.database_url is not None else "database_url"

    def database_url_or_none(self) -> str | None:
        """The database URL if the config was loaded (for messages about the database)."""
        return self._config.database_url if self._config is not None else self.database_url


def config_secrets(config: Config) -> list[str]:
    """Every secret `config` leads to that can be read now, to mask in log lines.

    Sources' credentials, notifiers' URLs and passwords, the database URL's password.
    """
    from etl.alerts.notifiers import notifier_secrets
    from etl.config.settings import database_url_passwords

    found = notifier_secrets(config.notifiers)
    for src in config.sources:
        try:
            found.append(src.read_secret())
            if src.vendor.more_secrets is not None:  # SPEC 10: user names, secret headers
                found += src.vendor.more_secrets()
        except SecretError:
            continue
    found += database_url_passwords(config.database_url)
    return found


class Day(click.ParamType):
    """A `YYYY-MM-DD` option (`export`, `backfill`): a datetime at that day's midnight.

    A bad one is the same one line `report`'s dates give (etl.timefmt.parse_day) and exit
    status 2, not click's three-line usage error; each command checks its own range.
    """

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        """The day's midnight (naive: the command reads it in its zone); InputError if bad."""
        if isinstance(value, datetime):
            return value
        option = param.opts[0] if param is not None and param.opts else "DATE"
        return datetime.combine(parse_day(str(value), option), datetime.min.time())
