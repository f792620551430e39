"""`usage-etl collect`: poll the (named) sources once, concurrently, and record every poll."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from etl.collect.poll import Collector
from etl.config import Config
from etl.errors import ConfigError
from etl.runtime.history import poll_history
from etl.store.spool import ReplayResult, Spool, SpoolInUseError
from etl.store.state import stored_pauses
from etl.store.writer import record_polls_apart
from etl.textutil import first_line
from etl.timefmt import utc_human, utcnow
from etl.vendors.types import POLL_OUTCOME, Outcome, PollRecord

log = logging.getLogger("etl.collect")

# Polls run in parallel, but a handful of threads is plenty: each poll mostly waits.
MAX_WORKERS = 8
# Finished polls are stored in batches: one transaction per batch (still one
# collection_attempts row per poll), after at most this many polls or this long a wait.
STORE_BATCH = 200
STORE_LINGER_S = 0.02


def skipped_poll(source: str, until: datetime, reason: str | None) -> PollRecord:
    """The record of a poll not made because the source is paused until `until`."""
    now = utcnow()
    error = f"paused until {utc_human(until)}" + (f" ({reason})" if reason else "") + ": not polled"
    return PollRecord(
        source=source, outcome=Outcome.SKIPPED, started_at=now, finished_at=now, http_status=None,
        latency_ms=None, tries=0, error=error, observation=None, retry_after=None,
    )


@dataclass
class Kept:
    """Where `collect` put the polls the database did not take (SPEC 3: nothing fetched is lost)."""

    database_error: str | None = None
    spooled: dict[str, Path] = field(default_factory=dict)  # source -> spool file
    lost: dict[str, str] = field(default_factory=dict)  # source -> why the spool refused it
    replayed: ReplayResult | None = None  # what an earlier run had spooled, stored now


def collect_once(
    engine: Engine,
    config: Config,
    names: Sequence[str] = (),
    *,
    collector: Collector | None = None,
    force: bool = False,
    kept: Kept | None = None,
) -> list[PollRecord]:
    """Poll the (named) sources concurrently with a bounded pool and store each result.

    Finished polls are stored in batches (record_polls: one transaction per batch, one
    collection_attempts row per poll) while the others are still polling. Missing secrets
    are refused up front (SecretError); one failing source never stops the others. A source
    under a stored pause (see `stored_pauses`) is not polled unless `force`: its result is
    recorded with outcome "skipped". Results come back in config order.

    A batch the database refuses (SQLite locked past its busy timeout, a server gone) is
    written to the spool (config.spool_dir) instead, and `kept` says so; polls an earlier
    run spooled are stored first, unless a running daemon owns the spool (it replays them).
    """
    kept = kept if kept is not None else Kept()
    spool = Spool(config.spool_dir)
    sources = config.select_sources(list(names))
    if not sources:
        raise ConfigError("no sources configured: add a [[sources]] table to the config")
    config.check_secrets(sources)
    kept.replayed = _replay_earlier(engine, spool)
    results: dict[str, PollRecord] = {}
    if not force:
        pauses = stored_pauses(engine, [s.name for s in sources])
        if pauses:
            skipped = [skipped_poll(name, until, reason)
                       for name, (until, reason) in pauses.items()]
            _record_or_spool(engine, skipped, spool, kept)
            results.update((r.source, r) for r in skipped)
            for r in skipped:
                log.warning("%s: %s", r.source, r.error, extra=POLL_OUTCOME)
            sources = [s for s in sources if s.name not in pauses]
    if not sources:
        return [results[s.name] for s in config.sources if s.name in results]
    own = collector is None
    poller = collector if collector is not None else Collector(sources)
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(sources)),
                                thread_name_prefix="poll") as pool:
            pending: set[Future[PollRecord]] = {
                pool.submit(poll_history, engine, poller, s) if s.vendor.history is not None
                else pool.submit(poller.poll, s) for s in sources}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                # Linger briefly so that one transaction carries many polls.
                deadline = time.monotonic() + STORE_LINGER_S
                while pending and len(done) < STORE_BATCH:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    more, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
                    done |= more
                batch = _record_or_spool(engine, [f.result() for f in done], spool, kept)
                results.update((r.source, r) for r in batch)
    finally:
        if own:
            poller.close()
    return [results[s.name] for s in config.sources if s.name in results]


def _record_or_spool(engine: Engine, polls: list[PollRecord], spool: Spool,
                     kept: Kept) -> list[PollRecord]:
    """Store the polls (record_polls_apart); if the database refuses, spool each of them.

    Returns the polls as recorded (a response the database refused alone is recorded as
    its attempt, see record_polls_apart), or as they were when spooled.
    """
    try:
        return record_polls_apart(engine, polls)
    except SQLAlchemyError as exc:
        kept.database_error = first_line(exc)
    for poll in polls:
        try:
            kept.spooled[poll.source] = spool.put(poll)
        except OSError as exc:
            kept.lost[poll.source] = exc.strerror or str(exc)
            log.error("%s: not stored (database: %s) and not spooled (%s): poll lost",
                      poll.source, kept.database_error, kept.lost[poll.source], extra=POLL_OUTCOME)
        else:
            log.warning("%s: database refused the poll (%s): kept in the spool as %s",
                        poll.source, kept.database_error, kept.spooled[poll.source],
                        extra=POLL_OUTCOME)
    return polls


def _replay_earlier(engine: Engine, spool: Spool) -> ReplayResult | None:
    """Store what earlier runs spooled, unless a running daemon owns the spool (it will)."""
    if not spool.pending():
        return None
    try:
        lock = spool.lock()
    except SpoolInUseError:
        return None
    with lock:
        result = spool.replay(engine)
    if result.replayed or result.already_stored:
        log.info("stored %d poll(s) an earlier run had spooled (%d already stored)",
                 result.replayed, result.already_stored, extra=POLL_OUTCOME)
    return result
