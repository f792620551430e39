"""`usage-etl collect`: poll the (named) sources once, concurrently, and record every poll."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime

from sqlalchemy import Engine

from etl.collect.poll import Collector
from etl.config import Config
from etl.errors import ConfigError
from etl.store.state import stored_pauses
from etl.store.writer import record_polls, record_polls_apart
from etl.timefmt import utc_human, utcnow
from etl.vendors.types import Outcome, PollRecord

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


def collect_once(
    engine: Engine,
    config: Config,
    names: Sequence[str] = (),
    *,
    collector: Collector | None = None,
    force: bool = False,
) -> list[PollRecord]:
    """Poll the (named) sources concurrently with a bounded pool and store each result.

    Finished polls are stored in batches (record_polls: one transaction per batch, one
    collection_attempts row per poll) while the others are still polling. Missing secrets
    are refused up front (SecretError); one failing source never stops the others. A source
    under a stored pause (see `stored_pauses`) is not polled unless `force`: its result is
    recorded with outcome "skipped". Results come back in config order.
    """
    sources = config.select_sources(list(names))
    if not sources:
        raise ConfigError("no sources configured: add a [[sources]] table to the config")
    config.check_secrets(sources)
    results: dict[str, PollRecord] = {}
    if not force:
        pauses = stored_pauses(engine, [s.name for s in sources])
        if pauses:
            skipped = [skipped_poll(name, until, reason)
                       for name, (until, reason) in pauses.items()]
            record_polls(engine, skipped)
            results.update((r.source, r) for r in skipped)
            for r in skipped:
                log.warning("%s: %s", r.source, r.error)
            sources = [s for s in sources if s.name not in pauses]
    if not sources:
        return [results[s.name] for s in config.sources if s.name in results]
    own = collector is None
    poller = collector if collector is not None else Collector(sources)
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(sources)),
                                thread_name_prefix="poll") as pool:
            pending: set[Future[PollRecord]] = {pool.submit(poller.poll, s) for s in sources}
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
                batch = record_polls_apart(engine, [f.result() for f in done])
                results.update((r.source, r) for r in batch)
    finally:
        if own:
            poller.close()
    return [results[s.name] for s in config.sources if s.name in results]
