"""The daemon's pause policy: how long a source rests after auth failures or a Retry-After."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl.errors import DatabaseTimeoutError
from etl.runtime.clocks import monotonic_of
from etl.runtime.db_steps import DatabaseSteps
from etl.runtime.logs import event
from etl.runtime.status import failures_since_success
from etl.store.state import Claim, ClaimReason, save_source_state
from etl.textutil import first_line
from etl.vendors.types import Outcome, PollRecord

log = logging.getLogger("etl.schedule")

# Growing pause after authentication failures: 1 min, 2, 4, ... at most an hour.
AUTH_PAUSE_FIRST = 60.0
AUTH_PAUSE_MAX = 3600.0


def auth_pause_seconds(failures: int) -> float:
    """The pause after the `failures`-th failure in a row that was an auth failure."""
    return min(AUTH_PAUSE_FIRST * 2 ** max(0, min(failures, 20) - 1), AUTH_PAUSE_MAX)


@dataclass(frozen=True)
class Pause:
    """A source kept from polling until `until` (UTC), and the reason logged and stored."""

    until: datetime
    reason: str


@dataclass
class _Memory:
    """What one process remembers about a source, also when the database is away."""

    not_before: datetime | None = None
    not_before_elapsed: float = 0.0  # the same end on the monotonic clock
    pause_saved: bool = False  # is not_before also in source_state?
    consecutive_failures: int = 0


class PausePolicy:
    """Pauses after failures, kept in memory and in source_state (SPEC 3 politeness).

    The database's pause is authoritative (the poll gate reads it, and a later success
    lifts it); the one kept here counts when the database could not be asked or never
    heard of it.
    """

    def __init__(self, engine: Engine, db: DatabaseSteps, clock: Callable[[], datetime],
                 names: Iterable[str] = ()) -> None:
        self.engine = engine
        self.db = db
        self.clock = clock
        self.monotonic = monotonic_of(clock)
        self._memory = {name: _Memory() for name in names}

    def _of(self, name: str) -> _Memory:
        return self._memory.setdefault(name, _Memory())

    def own_pause(self, name: str, claim: Claim, now: datetime) -> datetime | None:
        """When this process's own pause of `name` ends, if it keeps this poll from running."""
        memory = self._of(name)
        # Over when either clock says so: a wall clock stepped back does not stretch it.
        if (memory.not_before is None or now >= memory.not_before
                or self.monotonic() >= memory.not_before_elapsed):
            return None
        match claim.reason:
            case ClaimReason.UNCOORDINATED:
                counts = True  # the database could not tell
            case ClaimReason.FREE:
                counts = not memory.pause_saved  # a saved one the gate has judged already
            case ClaimReason.LOCKED | ClaimReason.SLOT_TAKEN | ClaimReason.PAUSED:
                counts = True  # not polled anyway
            case _:
                assert_never(claim.reason)
        return memory.not_before if counts else None

    def after_poll(self, name: str, result: PollRecord, db_ok: bool) -> Pause | None:
        """Update the bookkeeping after a poll of `name`; the pause it starts, if any.

        `db_ok`: the poll was stored, so the failure count can be read from (and the pause
        saved to) the database.
        """
        memory = self._of(name)
        now = self.clock()
        if result.outcome is Outcome.OK:
            memory.consecutive_failures = 0
            memory.not_before = None
            if db_ok:
                self._save_state(name, 0, None)
            return None
        failures = memory.consecutive_failures + 1
        if db_ok:
            failures = self._stored_failures(name) or failures
        memory.consecutive_failures = failures
        pause: Pause | None = None
        if result.outcome is Outcome.AUTH_ERROR:
            delay = auth_pause_seconds(failures)
            pause = Pause(now + timedelta(seconds=delay),
                          f"authentication failed ({failures} failure(s) in a row); "
                          f"paused {delay:g}s")
        elif result.retry_after is not None and result.retry_after > 0:
            reason = f"{result.outcome}: vendor asked to wait {result.retry_after:g}s"
            sent = result.retry_after_sent
            if sent is not None and sent > result.retry_after:
                reason = (f"{result.outcome}: vendor asked to wait {sent:g}s; paused "
                          f"{result.retry_after:g}s (our cap)")
            pause = Pause(now + timedelta(seconds=result.retry_after), reason)
        memory.not_before = pause.until if pause is not None else None
        if pause is not None:
            memory.not_before_elapsed = (self.monotonic()
                                         + (pause.until - now).total_seconds())
        memory.pause_saved = db_ok and self._save_state(name, failures, pause)
        return pause

    def _stored_failures(self, name: str) -> int:
        """Failures in a row in the collection record (this poll included), 0 if unknown."""
        def read() -> int:
            with self.engine.connect() as conn:
                return failures_since_success(conn, name)

        try:
            return self.db.run("failure count", read)
        except (SQLAlchemyError, DatabaseTimeoutError):
            return 0

    def _save_state(self, name: str, failures: int, pause: Pause | None) -> bool:
        until, reason = (pause.until, pause.reason) if pause is not None else (None, None)
        try:
            self.db.run("source state", save_source_state, self.engine, name, failures, until,
                        reason)
        except (SQLAlchemyError, DatabaseTimeoutError) as exc:
            event(log, logging.DEBUG, "state-not-saved", source=name, error=first_line(exc))
            return False
        return True
