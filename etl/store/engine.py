"""Engines, schema checks and migrations: everything that touches the database's shape."""

from __future__ import annotations

import ast
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from etl.config import database_url_problem, normalize_url
from etl.errors import DatabaseError, DatabaseUrlError, InputError, SchemaOutdatedError
from etl.redact import redact_url
from etl.textutil import first_line

# Alembic is imported by the functions that migrate or inspect revisions: opening a database
# already at the newest revision (every command but the first) does without it.
if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

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


def make_engine(url: str, *, read_only_ok: bool = True, **kwargs: Any) -> Engine:
    """An Engine for `url`; SQLite gets WAL, foreign keys and a busy timeout.

    A SQLite file whose folder cannot be written is opened read-only unless `read_only_ok`
    is False (a writer such as the daemon then fails at once, naming the read-only folder).
    """
    problem = database_url_problem(url)
    if problem:
        raise DatabaseUrlError(problem)
    parsed = make_url(normalize_url(url))
    connect_args = dict(kwargs.pop("connect_args", None) or {})
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and not db.startswith("file:"):
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise DatabaseUrlError(f"folder {parent} does not exist")
            if read_only_ok:
                parsed = _read_only_sqlite(parsed, Path(db).expanduser().resolve())
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
        raise DatabaseUrlError(
            f"driver {exc.name!r} is not installed "
            "(pip install 'usage-etl[postgres]' for PostgreSQL)"
        ) from None
    if engine.dialect.name == "sqlite":

        def pragmas(dbapi_conn: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_conn, busy_ms)

        event.listen(engine, "connect", pragmas)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _utc_session)
    return engine


def _utc_session(dbapi_conn: Any, _record: Any) -> None:
    """Run every PostgreSQL session in UTC.

    In a server's own zone an instant stored near year 1 or 9999 reads as a local time in
    year 0 or 10000, which the driver cannot return (SPEC 4).
    """
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    try:
        with dbapi_conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
    finally:
        dbapi_conn.autocommit = autocommit


def _read_only_sqlite(parsed: URL, path: Path) -> URL:
    """`parsed`, or a read-only URI of it when the file is there but its folder cannot be written.

    SQLite opens a WAL database only if it can create the `-shm` file beside it, so a copy in a
    folder the user cannot write (or on a read-only file system) fails with "unable to open
    database file" even to read (SPEC 3 amended: read commands work there). With a `-shm`
    already there, `mode=ro` reads it with its `-wal`; without, nobody can be writing it
    through this folder, and `immutable=1` reads the file alone.
    """
    if not path.is_file() or os.access(path.parent, os.W_OK):
        return parsed
    shm = path.with_name(path.name + "-shm")
    query = {"mode": "ro"} if shm.is_file() and os.access(shm, os.R_OK) else {"immutable": "1"}
    return parsed.set(database=f"file:{path}", query={**parsed.query, **query, "uri": "true"})


def _sqlite_pragmas(dbapi_conn: Any, busy_ms: int) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass  # a read-only file keeps its journal mode; its writes are refused later, by name
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
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", migrations_dir())
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    """The newest Alembic revision of the migrations shipped in the package."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (default the newest)."""
    from alembic import command

    try:
        command.upgrade(alembic_config(engine), revision)
    except OperationalError as exc:
        raise DatabaseError(describe_database_error(exc, str(engine.url))) from None


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database down to `revision` (tests and `alembic downgrade` only)."""
    from alembic import command

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
        raise DatabaseError(describe_database_error(exc, str(engine.url))) from None
    head = head_revision()
    if current != head:
        from alembic.script import ScriptDirectory

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
    from alembic import command
    from alembic.runtime.migration import MigrationContext

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
    """An engine whose schema is ready to use (created if the database is empty).

    Raises DatabaseError (unreachable), SchemaOutdatedError (behind, ahead or foreign).
    """
    engine = make_engine(url)
    if not _at_newest_revision(engine):
        ensure_schema(engine)
    return engine


def _at_newest_revision(engine: Engine) -> bool:
    """Is the database at the newest revision? One SELECT, without loading Alembic.

    False whenever in doubt (no version table yet, several heads, an unreadable script):
    ensure_schema then asks Alembic, which creates, checks and explains.
    """
    newest = newest_revision_in_scripts()
    if newest is None:
        return False
    try:
        with engine.connect() as conn:
            try:
                found = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            except DBAPIError:
                return False  # no version table: an empty database, which Alembic creates
    except OperationalError as exc:  # the connection itself
        raise DatabaseError(describe_database_error(exc, str(engine.url))) from None
    return [row[0] for row in found] == [newest]


# A top-level `revision = ...` or `down_revision = ...` line of a migration script, annotated
# or not: the value up to an end-of-line comment.
_REVISION_LINE = re.compile(
    r"^(revision|down_revision)[ \t]*(?::[^=\n]*)?=[ \t]*([^#\n]*?)[ \t]*(?:#.*)?$", re.M)


def newest_revision_in_scripts() -> str | None:
    """The one head of the migration scripts, without importing them; None if unclear.

    Read from their top-level `revision`/`down_revision` lines (as Alembic's ScriptDirectory
    finds it, the last one of each name counting); None if they do not name exactly one head
    plainly (a value over several lines, a computed one, a merge).

    Our own reader, not Alembic's `ScriptDirectory.get_current_head()` (which `head_revision`
    and every check that finds a difference use), because of what Alembic costs every command
    that opens a database: importing any part of Alembic runs `alembic/__init__`, which loads
    its runtime, DDL and autogenerate modules (about 100 ms), and the head then executes every
    script (about 15 ms); this reads them in under 1 ms. Measured 2026-12-07 on the demo, 21
    interleaved fresh runs each: `status` 0.37 s median with this reader, 0.51 s with
    Alembic's (1,464 M against 1,945 M instructions; docs/performance.md, "status").
    tests/test_cli.py checks that a new script moves the head commands compare with, whether
    this reader or Alembic decides.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(Path(migrations_dir(), "versions").glob("*.py")):
        if path.name == "__init__.py":
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, ValueError):
            return None
        names: dict[str, object] = {}
        for name, value in _REVISION_LINE.findall(source):
            try:
                names[name] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                names[name] = ...
        revision, parent = names.get("revision"), names.get("down_revision")
        if not isinstance(revision, str) or not (parent is None or isinstance(parent, str)):
            return None  # a merge or a computed value: Alembic decides
        revisions.add(revision)
        if parent is not None:
            parents.add(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def describe_database_error(exc: BaseException, url: str | None = None) -> str:
    """One line for a failed database step, naming a full or read-only disk as such.

    SQLite says "database or disk is full" for a full disk, and "unable to open database
    file" or "attempt to write a readonly database" for a read-only file system; PostgreSQL
    says "No space left on device". The URL's password is masked.
    """
    text = first_line(getattr(exc, "orig", None) or exc)
    lowered = text.lower()
    path = _sqlite_path(url) if url else None
    if path is not None:
        url = f"sqlite:///{path}"  # as the user wrote it, not the read-only URI opened
    where = f" {redact_url(url)}" if url else ""
    if url and any(hint in lowered for hint in ("readonly", "unable to open", "i/o error")):
        if path is not None:
            folder = Path(path).expanduser().resolve().parent
            if _read_only(folder):
                return f"database{where}: its folder {folder} is on a read-only file system ({text})"
            if _full(folder):
                return f"database{where}: the disk holding it is full ({text})"
    if "disk is full" in lowered or "no space left" in lowered:
        return f"database{where}: the disk holding it is full ({text})"
    return f"database{where}: {redact_url(text)}"


def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (plain or `file:` URI), None for another database."""
    try:
        parsed = make_url(normalize_url(url))
    except Exception:  # noqa: BLE001 - only for a message
        return None
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return None
    return db.removeprefix("file:") if parsed.query.get("uri") == "true" else db


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _full(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


# SQLSTATEs of a database that refuses writes: a read-only transaction (a hot standby,
# default_transaction_read_only) and a missing privilege (a SELECT-only login).
_REFUSED_WRITE_STATES = frozenset({"25006", "42501"})


def refuses_writes(exc: BaseException) -> bool:
    """Whether `exc` is a database refusing a write it could otherwise do (SPEC 3 amended).

    SQLite: "attempt to write a readonly database" (a read-only file or URI); PostgreSQL: a
    read-only transaction or a permission denied. A cache writer that sees this computes
    without storing.
    """
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) in _REFUSED_WRITE_STATES:
        return True
    return isinstance(orig, sqlite3.OperationalError) and "readonly" in str(orig).lower()


def is_database_error(exc: BaseException) -> bool:
    """Whether a database step raised `exc`.

    SQLAlchemy, or a driver's own cursor (the bulk import and report reads use those
    directly); psycopg is asked only if it is loaded.
    """
    if isinstance(exc, SQLAlchemyError | sqlite3.Error):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)
