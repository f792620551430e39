"""The daemon's database policy: time limits on a silent server, and which outages to wait out."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from etl.config import normalize_url
from etl.errors import DatabaseError
from etl.store.engine import describe_database_error, ensure_schema, make_engine
from etl.textutil import first_line

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


# SQLite's words for the same: a lock held elsewhere, and a full disk ("disk I/O error" is
# what a full disk gives while the write-ahead log grows).
_SQLITE_TRANSIENT = ("locked", "busy", "disk is full", "disk I/O error")


def daemon_connect_args(
    url: str, statement_timeout_ms: int | None = PG_STATEMENT_TIMEOUT_MS
) -> dict[str, Any]:
    """The libpq settings that bound how long a silent server can hold a poll; the URL's win."""
    try:
        query = make_url(normalize_url(url)).query
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
    """The daemon's database: like every command's, but failing fast on a silent server.

    A PostgreSQL server that stops answering fails a poll's write in seconds (then the poll
    is spooled) instead of minutes.
    """
    kwargs: dict[str, Any] = {}
    try:
        backend = make_url(normalize_url(url)).get_backend_name()
    except ArgumentError:
        backend = ""
    if backend in ("postgresql", "postgres"):
        kwargs["connect_args"] = daemon_connect_args(url, statement_timeout_ms)
    return make_engine(url, read_only_ok=False, **kwargs)


def connection_unavailable(dialect: str, message: str) -> bool:
    """Is this connect error one that goes away by itself (server down, unreachable, busy)?

    No for what only a person can fix: a refused login or a database that does not exist.
    """
    if dialect == "sqlite":
        # Locked or busy; or a full disk (or one failing under it): space can come back.
        return any(hint in message for hint in _SQLITE_TRANSIENT)
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
        first = first_line(exc)
        if not connection_unavailable(engine.dialect.name, first):
            # As every command says it: a read-only folder or a full disk named as such.
            raise DatabaseError(describe_database_error(exc, str(engine.url))) from None
        return engine, first
    try:
        ensure_schema(engine)
    except DatabaseError as exc:  # the schema could not be created or read
        if not connection_unavailable(engine.dialect.name, str(exc)):
            raise
        return engine, str(exc)
    return engine, None
