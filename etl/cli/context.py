"""Per-invocation state shared by the commands: the config and the database, loaded lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from etl.config import Config, load_config

if TYPE_CHECKING:
    from sqlalchemy import Engine


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

    @property
    def config(self) -> Config:
        """The loaded config (SPEC 2); raises etl.errors.ConfigError when it is invalid."""
        if self._config is None:
            self._config = load_config(self.config_path, self.database_url)
        return self._config

    @property
    def engine(self) -> Engine:
        """The database, with its schema created if empty and checked if not."""
        if self._engine is None:
            from etl.store.engine import open_database

            self._engine = open_database(self.config.database_url)
        return self._engine

    def database_url_or_none(self) -> str | None:
        """The database URL if the config was loaded (for messages about the database)."""
        return self._config.database_url if self._config is not None else self.database_url
