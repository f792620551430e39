"""Engines, schema checks and migrations: everything that touches the database's shape."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from etl.config import database_url_problem, normalize_url
from etl.errors import DatabaseError, InputError, SchemaOutdatedError
from etl.redact import redact_url
from etl.textutil import first_line

SQLITE_BUSY_TIMEOUT_MS = 30_000
# A PostgreSQL server that does not answer fails a command in seconds, not minutes of TCP
# retries; a connect_timeout in the URL wins.
PG_CONNECT_TIMEOUT_S = 10


def sqlite_busy_timeout_ms() -> int:
    """How long SQLite waits for a lock: $USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS, else 30 s."""
    raw = os.environ.get("USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS", "").strip()
    if not raw:
        return SQLITE_BUSY_TIMEOUT_MS
    if not raw.isascii() or not raw.isdigit():
        raise InputError(
            f"$USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS: {raw!r} is not a whole number of milliseconds"
        )
    return int(raw)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for `url`; SQLite gets WAL, foreign keys and a busy timeout."""
    problem = database_url_problem(url)
    if problem:
        raise InputError(f"database_url: {problem}")
    parsed = make_url(normalize_url(url))
    connect_args = dict(kwargs.pop("connect_args", None) or {})
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and not db.startswith("file:"):
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise InputError(f"database_url: folder {parent} does not exist")
        # Read once: a bad value is refused here, not inside every later connect.
        busy_ms = sqlite_busy_timeout_ms()
        kwargs.setdefault("poolclass", NullPool)
        connect_args.setdefault("timeout", busy_ms / 1000)
    else:
        busy_ms = 0
        kwargs.setdefault("pool_pre_ping", True)
        if "connect_timeout" not in parsed.query:
            connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
    try:
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    except ModuleNotFoundError as exc:
        raise InputError(
            f"database_url: driver {exc.name!r} is not installed "
            "(pip install 'usage-etl[postgres]' for PostgreSQL)"
        ) from None
    if engine.dialect.name == "sqlite":

        def pragmas(dbapi_conn: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_conn, busy_ms)

        event.listen(engine, "connect", pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, busy_ms: int) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={busy_ms}")
    # WAL makes NORMAL durable against application crashes, and it is much faster than FULL.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def migrations_dir() -> str:
    """The Alembic scripts: `etl/migrations` in an installed wheel, `./migrations` in a clone."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "migrations"
    if (installed / "env.py").is_file():
        return str(installed)
    return str(package.parent / "migrations")


def alembic_config(engine: Engine | None = None, url: str | None = None) -> AlembicConfig:
    """An Alembic config pointing at our migrations; the URL comes from the app, never the ini."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", migrations_dir())
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (default the newest)."""
    try:
        command.upgrade(alembic_config(engine), revision)
    except OperationalError as exc:
        raise DatabaseError(f"database {redact_url(str(engine.url))}: {first_line(exc)}") from None


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine), revision)


# pg_advisory_xact_lock key taken while creating the schema ("usage-etl" as a 63-bit number).
_SCHEMA_LOCK = 0x75736167652D6574


def ensure_schema(engine: Engine) -> None:
    """Create the schema on an empty database; refuse one that is behind the newest revision."""
    try:
        current = current_revision(engine)
        if current is None:
            _create_schema(engine)
            return
    except OperationalError as exc:
        raise DatabaseError(f"database {redact_url(str(engine.url))}: {first_line(exc)}") from None
    head = head_revision()
    if current != head:
        script = ScriptDirectory.from_config(alembic_config())
        known = {rev.revision for rev in script.walk_revisions()}
        if current not in known:
            raise SchemaOutdatedError(
                f"database schema revision {current} is newer than this usage-etl knows; "
                "upgrade usage-etl"
            )
        raise SchemaOutdatedError(
            f"database schema is at revision {current}, the newest is {head}: "
            "run `usage-etl db upgrade`"
        )


def _create_schema(engine: Engine) -> None:
    """Migrate an empty database to head, one process at a time.

    Several processes may start on the same new database at once (a daemon and a cron
    `collect`, replicas): each takes the database's own write lock, looks again, and only the
    first creates the schema; the others find it done.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock; others wait (busy timeout)
        else:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
        if MigrationContext.configure(conn).get_current_revision() is None:
            tables = set(inspect(conn).get_table_names())
            if tables - {"alembic_version"}:
                raise SchemaOutdatedError(
                    f"database {redact_url(str(engine.url))} has tables but no usage-etl schema "
                    "version; point database_url at an empty or usage-etl database"
                )
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        conn.commit()


def open_database(url: str) -> Engine:
    """An engine whose schema is ready to use (created if the database is empty)."""
    engine = make_engine(url)
    ensure_schema(engine)
    return engine


