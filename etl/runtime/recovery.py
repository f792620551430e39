"""The daemon's spool and schema recovery: what the database cannot take waits in the spool."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import StrEnum

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl.errors import SchemaOutdatedError, UsageEtlError
from etl.redact import redact_url
from etl.runtime.db_steps import DatabaseSteps
from etl.runtime.logs import EventLog, event
from etl.store.engine import ensure_schema
from etl.store.identity import generation
from etl.store.spool import ReplayResult, Spool
from etl.store.writer import record_poll
from etl.textutil import first_line
from etl.vendors.types import PollRecord

log = logging.getLogger("etl.schedule")


class Stored(StrEnum):
    """Where a poll's result went (the `stored` field of its log line)."""

    DB = "db"
    SPOOL = "spool"
    LOST = "lost"  # neither the database nor the spool folder took it


class Recovery:
    """Stores polls in the database or else the spool, and replays the spool once it can.

    `schema_ready=False` is spool-only mode, for a database that was unreachable at start-up:
    polls go to the spool until a replay pass has checked (or created) the schema. Then
    `on_ready` runs (the nightly job retries at once); `on_replayed` runs after a replay
    that stored polls (alerts are evaluated).
    """

    def __init__(self, engine: Engine, spool: Spool, db: DatabaseSteps, emit: EventLog, *,
                 schema_ready: bool, on_ready: Callable[[], None],
                 on_replayed: Callable[[], None]) -> None:
        self.engine = engine
        self.spool = spool
        self.db = db
        self.emit = emit
        self.on_ready = on_ready
        self.on_replayed = on_replayed
        self._ready = schema_ready
        self._problem: str | None = None
        self._replay_lock = threading.Lock()
        self._generation = generation(engine)
        self._replaced_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Has the schema been found ready (or created) since start-up."""
        return self._ready

    def why_not_ready(self, default: str) -> str | None:
        """None once the database can be used, else why not (`default` if not known)."""
        return None if self._ready else (self._problem or default)

    def store(self, result: PollRecord) -> Stored:
        """Store the poll; on a database failure spool it (both logged when they fail)."""
        with self._replaced_lock:  # polls finishing meanwhile wait for the schema check
            if self._replaced():
                self.ensure_database()
        reason = self.why_not_ready("database not checked yet (unreachable at start-up)")
        if reason is None:
            try:
                self.db.run("store poll", self._record, result)
                return Stored.DB
            except Exception as exc:  # noqa: BLE001 - whatever broke the write, keep the poll
                # A write given up on may still land later: replaying the spooled copy then
                # finds it recorded and stores nothing twice (etl.store.writer).
                reason = first_line(exc)
        try:
            path = self.spool.put(result)
        except OSError as exc:
            self.emit(logging.ERROR, "spool-failed", source=result.source,
                      database_error=reason, disk_error=str(exc))
            return Stored.LOST
        self.emit(logging.WARNING, "spooled", source=result.source, file=path.name,
                  database_error=reason)
        return Stored.SPOOL

    def _record(self, result: PollRecord) -> None:
        # `once`: should this write be given up on and commit late, it and the replay of the
        # spooled copy meet on one lock, and only one of them records the poll.
        record_poll(self.engine, result, once=True)

    def recover_partial(self) -> None:
        """Finish or set aside spool files a killed process left half-written (logged)."""
        recovered = self.spool.recover_partial()
        if recovered.restored or recovered.set_aside or recovered.duplicates:
            event(log, logging.WARNING, "spool-recovered",
                  restored=",".join(recovered.restored) or None,
                  set_aside=",".join(recovered.set_aside) or None,
                  duplicates_removed=",".join(recovered.duplicates) or None)

    def replay(self) -> ReplayResult:
        """Write spooled polls to the database (each once); quiet when there is nothing to do.

        In spool-only mode it first checks (or creates) the schema, and ends that mode.
        """
        with self._replay_lock:
            if not self.ensure_database():
                return ReplayResult(remaining=len(self.spool))
            if not self.spool.pending():
                return ReplayResult()
            result = self.spool.replay(self.engine, on_stored=self._log_replayed)
        if result.replayed or result.already_stored:
            self.emit(logging.INFO, "spool-replayed", replayed=result.replayed,
                      already_stored=result.already_stored, remaining=result.remaining)
            if result.replayed:
                self.on_replayed()
        if result.error:
            self.emit(logging.DEBUG, "spool-waiting", remaining=result.remaining,
                      database_error=result.error)
        if result.set_aside:
            self.emit(logging.ERROR, "spool-set-aside", files=",".join(result.set_aside),
                      folder=str(self.spool.dir / "unreadable"),
                      message="the database refused these polls every time; see .reason")
        return result

    def final_replay(self) -> None:
        """The replay at stop: a full disk is logged, not raised."""
        try:
            self.replay()
        except OSError as exc:
            self.emit(logging.ERROR, "spool-failed", error=str(exc))

    def _replaced(self) -> bool:
        """Whether the SQLite file was deleted or replaced since last asked (logged once).

        Then its schema is checked (or created) again before the next write, and the ids
        the writer cached are read anew from the new file (etl.store.identity).
        """
        gen = generation(self.engine)
        if gen == self._generation:
            return False
        self._generation = gen
        self._ready = False
        self.emit(logging.WARNING, "database-replaced",
                  database=redact_url(str(self.engine.url)),
                  message="the database file was deleted or replaced: schema checked again, "
                          "cached ids read anew")
        return True

    def ensure_database(self) -> bool:
        """True once the schema has been found ready (or created) since start-up."""
        self._replaced()
        if self._ready:
            return True
        try:
            ensure_schema(self.engine)
        except SchemaOutdatedError as exc:
            # Polls keep going to the spool (nothing is lost); say so once, loudly.
            if self._problem != str(exc):
                self.emit(logging.ERROR, "database-refused", error=str(exc),
                          message="polls stay in the spool until this is fixed")
            self._problem = str(exc)
            return False
        except (UsageEtlError, SQLAlchemyError) as exc:
            self.emit(logging.DEBUG, "database-waiting", error=first_line(exc))
            return False
        self._ready = True
        self._problem = None
        self.emit(logging.INFO, "database-ready", database=redact_url(str(self.engine.url)),
                  pending_spool=len(self.spool))
        self.on_ready()
        return True

    def _log_replayed(self, poll: PollRecord) -> None:
        self.emit(logging.DEBUG, "replayed", source=poll.source, started_at=poll.started_at)
