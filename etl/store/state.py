"""Source state in the database: who may poll a source now (slots, locks, stored pauses).

At most one poll per source and slot (etl.slots), whoever claims it first. A replica polls a
source only after it has

1. taken a lock for that source, held while it polls and stores: a PostgreSQL session
   advisory lock (``pg_try_advisory_lock``), or on SQLite a POSIX byte-range lock in a file
   next to the database; a replica that cannot take it skips, someone else is polling;
2. seen no attempt of that source started inside the current slot, and no pause
   (``source_state.paused_until``) in force. After the wall clock stepped back, attempts
   stored before one stamped later than the current slot are from before the step and do
   not count (the slot is free again, so polling resumes within one interval).
"""

from __future__ import annotations

import fcntl
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, NamedTuple, assert_never

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from etl.config import SourceConfig
from etl.slots import slot_bounds, slot_of
from etl.store.models import CollectionAttempt, SourceState
from etl.timefmt import utcnow
from etl.vendors.types import Outcome

log = logging.getLogger("etl.store.state")

# First key of the two-int advisory lock: a namespace so we never collide with other apps.
ADVISORY_NAMESPACE = 0x05E7_0001


def source_key(name: str) -> int:
    """A stable signed 32-bit key for a source name (Python's hash() is salted per process)."""
    value = zlib.crc32(name.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


class ClaimReason(StrEnum):
    """Why a claim was or was not granted; the refusals are logged as written here."""

    FREE = "free"  # granted: the slot is free and no pause holds
    UNCOORDINATED = "uncoordinated"  # granted: the database could not be asked
    LOCKED = "locked"  # refused: another replica holds the source's lock
    SLOT_TAKEN = "slot-taken"  # refused: an attempt already started in this slot
    PAUSED = "paused"  # refused: a stored pause holds


@dataclass(frozen=True)
class Claim:
    """The answer to "may this replica poll this source now?"."""

    reason: ClaimReason
    paused_until: datetime | None = None
    pause_reason: str | None = None

    @property
    def granted(self) -> bool:
        """May this replica poll now."""
        match self.reason:
            case ClaimReason.FREE | ClaimReason.UNCOORDINATED:
                return True
            case ClaimReason.LOCKED | ClaimReason.SLOT_TAKEN | ClaimReason.PAUSED:
                return False
            case _:
                assert_never(self.reason)


class LastSuccess(NamedTuple):
    """The newest successful attempt of a source: when it started and when it finished."""

    started_at: datetime
    finished_at: datetime


def last_successes(conn: Connection,
                   sources: Sequence[str] | None = None) -> dict[str, LastSuccess]:
    """The newest successful attempt of each source (or of `sources`), by source name.

    The one "last success" query: the poll gate's pause rule, `status`, its failure count
    and `/metrics` all read it here. Sources that never succeeded are absent.
    """
    ca = CollectionAttempt
    newest = select(ca.source, func.max(ca.started_at).label("started_at")).where(
        ca.outcome == Outcome.OK)
    if sources is not None:
        newest = newest.where(ca.source.in_(list(sources)))
    found = newest.group_by(ca.source).subquery()
    rows = conn.execute(
        select(ca.source, ca.started_at, func.max(ca.finished_at))
        .join(found, (ca.source == found.c.source) & (ca.started_at == found.c.started_at))
        .where(ca.outcome == Outcome.OK)
        .group_by(ca.source, ca.started_at)
    ).all()
    return {source: LastSuccess(started, finished) for source, started, finished in rows}


def last_success(conn: Connection, source: str) -> datetime | None:
    """When the newest successful attempt of `source` started (None: it never succeeded)."""
    found = last_successes(conn, [source]).get(source)
    return found.started_at if found is not None else None


# How far after "now" a stored pause may have been stored and still hold: more is the
# residue of a wall clock stepped back (etl.runtime.clocks), less the skew between replicas.
PAUSE_CLOCK_SLACK_S = 60.0


def pause_holds(paused_until: datetime | None, stored_at: datetime,
                last_ok: datetime | None, now: datetime) -> bool:
    """Whether a pause stored at `stored_at` still keeps its source from being polled.

    It holds until it runs out, unless a success was recorded after it was stored (say
    `usage-etl collect --force` once the credential was fixed), which lifts it, or it was
    stored more than PAUSE_CLOCK_SLACK_S after `now` (the wall clock stepped back since). The poll
    gate, `collect` and `status` all decide by this one rule.
    """
    # A pause stored well after `now` was stored before the wall clock stepped back: it
    # would hold for its own length plus the step, so it no longer holds (the next failure
    # pauses again from the new clock). Replicas' clocks may differ by less than the slack.
    return (paused_until is not None and paused_until > now
            and (last_ok is None or last_ok < stored_at)
            and stored_at <= now + timedelta(seconds=PAUSE_CLOCK_SLACK_S))


class PollGate:
    """Claims (source, slot) pairs through the database so replicas never poll twice."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._lock_file: Path | None = None
        if self.dialect == "sqlite":
            db = engine.url.database
            if db and db != ":memory:" and not db.startswith("file:"):
                self._lock_file = Path(db).expanduser().resolve().with_name(
                    Path(db).name + ".poll-lock"
                )

    @contextmanager
    def claim(self, source: SourceConfig, now: datetime | None = None) -> Iterator[Claim]:
        """Hold the source's lock for the body if granted; the body polls and stores.

        If the database cannot be reached the claim is granted as "uncoordinated": losing
        a poll is worse than a rare duplicate, which the sample key makes harmless.
        """
        now = now or datetime.now(UTC)
        if self.dialect == "postgresql":
            with self._claim_pg(source, now) as claim:
                yield claim
        else:
            with self._claim_file(source, now) as claim:
                yield claim

    @contextmanager
    def _claim_pg(self, source: SourceConfig, now: datetime) -> Iterator[Claim]:
        key = source_key(source.name)
        try:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            log.debug("lock for %s unavailable: %s", source.name, exc)
            yield Claim(ClaimReason.UNCOORDINATED)
            return
        locked = False
        try:
            try:
                locked = bool(
                    conn.execute(
                        text("SELECT pg_try_advisory_lock(:ns, :key)"),
                        {"ns": ADVISORY_NAMESPACE, "key": key},
                    ).scalar()
                )
                decision = (self._decide(conn, source, now) if locked
                            else Claim(ClaimReason.LOCKED))
            except SQLAlchemyError as exc:
                log.debug("lock for %s unavailable: %s", source.name, exc)
                decision = Claim(ClaimReason.UNCOORDINATED)
            yield decision
        finally:
            if locked:
                try:
                    conn.execute(
                        text("SELECT pg_advisory_unlock(:ns, :key)"),
                        {"ns": ADVISORY_NAMESPACE, "key": key},
                    )
                except SQLAlchemyError:
                    # The session is gone, and with it the lock.
                    conn.invalidate()
            try:
                conn.close()
            except SQLAlchemyError:
                pass

    @contextmanager
    def _claim_file(self, source: SourceConfig, now: datetime) -> Iterator[Claim]:
        fh: IO[bytes] | None = None
        offset = source_key(source.name) & 0x7FFF_FFFF
        if self._lock_file is not None:
            try:
                fh = open(self._lock_file, "a+b")  # noqa: SIM115 - closed below
                # One byte per source: POSIX record locks exclude other processes only, and
                # max_instances=1 already keeps threads of one process apart.
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
            except BlockingIOError:
                assert fh is not None
                fh.close()
                yield Claim(ClaimReason.LOCKED)
                return
            except OSError as exc:
                if fh is not None:
                    fh.close()
                fh = None
                log.debug("lock file %s unusable: %s", self._lock_file, exc)
        try:
            try:
                with self.engine.connect() as conn:
                    decision = self._decide(conn, source, now)
            except SQLAlchemyError as exc:
                log.debug("slot check for %s failed: %s", source.name, exc)
                decision = Claim(ClaimReason.UNCOORDINATED)
            yield decision
        finally:
            if fh is not None:
                fh.close()  # closing drops the record lock

    @staticmethod
    def _decide(conn: Connection, source: SourceConfig, now: datetime) -> Claim:
        state = conn.execute(
            select(
                SourceState.paused_until, SourceState.pause_reason, SourceState.updated_at
            ).where(SourceState.source == source.name)
        ).first()
        # The success query only runs for a pause that has not run out: every poll asks.
        if (state is not None and state.paused_until is not None and state.paused_until > now
                and pause_holds(state.paused_until, state.updated_at,
                                last_success(conn, source.name), now)):
            return Claim(ClaimReason.PAUSED, state.paused_until, state.pause_reason)
        start, end = slot_bounds(source.name, source.interval_seconds,
                                 slot_of(source.name, source.interval_seconds, now))
        # An attempt stamped after this slot ends was made before the wall clock stepped
        # back: the attempts stored before it belong to the time before the step, not to
        # this slot, else a clock stepped back an hour would find every slot of that hour
        # taken. Only attempts stored after the newest such one (ids grow) take the slot.
        ahead = (select(func.coalesce(func.max(CollectionAttempt.id), 0))
                 .where(CollectionAttempt.source == source.name,
                        CollectionAttempt.started_at >= end)
                 .scalar_subquery())
        taken = conn.execute(
            select(func.count()).select_from(CollectionAttempt).where(
                CollectionAttempt.source == source.name,
                CollectionAttempt.started_at >= start,
                CollectionAttempt.started_at < end,
                CollectionAttempt.id > ahead,
            )
        ).scalar()
        if taken:
            return Claim(ClaimReason.SLOT_TAKEN)
        return Claim(ClaimReason.FREE)


def stored_pauses(
    engine: Engine, names: Sequence[str], now: datetime | None = None
) -> dict[str, tuple[datetime, str | None]]:
    """The sources among `names` that a stored pause keeps from being polled now.

    The daemon stores a pause in source_state after a 429/503 with Retry-After or an auth
    failure; whether it still holds is etl.store.state.pause_holds, as for the daemon's poll gate.
    Returns name -> (paused_until, reason).
    """
    now = now or utcnow()
    wanted = set(names)
    with engine.connect() as conn:
        rows = [
            r for r in conn.execute(
                select(SourceState.source, SourceState.paused_until, SourceState.pause_reason,
                       SourceState.updated_at).where(SourceState.paused_until > now)
            )
            if r.source in wanted
        ]
        if not rows:
            return {}
        last_ok = {source: ok.started_at for source, ok
                   in last_successes(conn, [r.source for r in rows]).items()}
    return {
        r.source: (r.paused_until, r.pause_reason) for r in rows
        if pause_holds(r.paused_until, r.updated_at, last_ok.get(r.source), now)
    }


def save_source_state(engine: Engine, name: str, failures: int, until: datetime | None,
                      reason: str | None) -> None:
    """Upsert the source's failure count and pause (None: no pause) in its own transaction.

    Raises SQLAlchemyError when the database refuses.
    """
    values = {
        "source": name,
        "consecutive_failures": failures,
        "paused_until": until,
        "pause_reason": reason,
        "updated_at": datetime.now(UTC),
    }
    with engine.begin() as conn:
        # Each dialect's insert is imported when used: a SQLite process never loads PostgreSQL's.
        insert: Any
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            insert = pg_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            insert = sqlite_insert
        stmt = insert(SourceState).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["source"],
            set_={k: stmt.excluded[k] for k in values if k != "source"},
        )
        conn.execute(stmt)
