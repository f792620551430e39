"""What the DataFrame API reads from: a database given as URL, path, Engine or Config, and its config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from etl.config import Config, database_url_problem, load_config
from etl.errors import InputError
from etl.store.engine import ensure_schema, make_engine, normalize_url

DbLike = str | os.PathLike[str] | Engine | Config
ConfigLike = Config | str | os.PathLike[str] | None


def _url_of(db: str | os.PathLike[str]) -> str:
    """A URL as given, or a SQLite URL for a plain file path."""
    text = os.fspath(db)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _check_exists(url: URL) -> None:
    # SQLite would silently create a missing file: a typo in a path must not look like an
    # empty history.
    if url.get_backend_name() != "sqlite":
        return
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise InputError(
            f"database {path} does not exist (check the URL or path; "
            "`usage-etl demo` creates a demo database)"
        )


@contextmanager
def open_engine(db: DbLike) -> Iterator[Engine]:
    """An engine with a ready schema; one made here is disposed of afterwards."""
    if isinstance(db, Engine):
        _check_exists(db.url)
        ensure_schema(db)
        yield db
        return
    if isinstance(db, Config):
        url = db.database_url
    elif isinstance(db, str | os.PathLike):
        url = _url_of(db)
    else:
        raise InputError(f"db: expected a database URL, a path, an Engine or a Config, "
                         f"not {type(db).__name__}")
    problem = database_url_problem(url)
    if problem is not None:
        raise InputError(f"db: {problem}")
    parsed = make_url(normalize_url(url))
    _check_exists(parsed)
    engine = make_engine(url)
    try:
        ensure_schema(engine)
        yield engine
    finally:
        engine.dispose()


def report_config(db: DbLike, config: ConfigLike) -> Config:
    """The config to report with: `config`, else `db` if it is one, else the usual one."""
    if isinstance(config, Config):
        cfg = config
    elif config is not None:
        cfg = load_config(os.fspath(config))
    elif isinstance(db, Config):
        cfg = db
    else:
        cfg = load_config()
    if not cfg.sources:
        where = cfg.path or "no config file found"
        raise InputError(
            f"config ({where}) has no [[sources]]: the reports need the config that lists "
            "them; pass config= (a Config or a TOML path) or set USAGE_ETL_CONFIG"
        )
    return cfg
