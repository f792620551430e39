"""One poll or backfill of a history source (SPEC 10): ranges oldest first, one transaction each.

A poll reads [floor(H - lookback), ceil(now)) (the first time from now - backfill); a
backfill reads the range asked for. Each request range is read page by page and stored
with the move of `H` in one transaction; a range that fails stores nothing and ends the
run; a range that would start past the deadline is left for the next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from etl.collect.history import history_of, poll_span, read_range, settled
from etl.collect.http import HttpFailure
from etl.collect.poll import Collector
from etl.config import SourceConfig
from etl.errors import ParseError, SecretError
from etl.redact import redact
from etl.store.history import advance_read_up_to, read_up_to, store_history
from etl.textutil import first_line
from etl.vendors.types import POLL_OUTCOME, Outcome, PollRecord

log = logging.getLogger("etl.collect")

# Called after each range is stored: (range start, range end, ranges done, ranges in all).
OnRange = Callable[[datetime, datetime, int, int], None]


def poll_history(engine: Engine, collector: Collector, source: SourceConfig, *,
                 start: datetime | None = None, end: datetime | None = None,
                 deadline: float | None = None, on_range: OnRange | None = None) -> PollRecord:
    """Read a history source and store what it read; the attempt's record, never raises.

    Without `start` a poll (its deadline: the source's interval); with `start` a backfill of
    [start, end or ceil(now)) (no deadline unless given). The record's observation is None
    (the pages are stored already) and `samples_stored` counts the samples written.
    """
    spec = history_of(source)
    started = collector.now()
    if start is None and deadline is None:
        deadline = collector.deadline(source)
    ranges: list[tuple[datetime, datetime]] = []
    stored = 0
    tries, status, latency = 0, None, 0.0
    try:
        if start is None:
            with engine.connect() as conn:
                mark = read_up_to(conn, source.name)
            ranges = spec.ranges(*poll_span(spec, mark, started))
        else:
            ranges = spec.ranges(start, end or spec.window.align.ceil(started))
        for i, (a, b) in enumerate(ranges):
            if deadline is not None and collector.past(deadline):
                log.info("%s: %d range(s) left for the next poll", source.name, len(ranges) - i)
                break
            read = read_range(collector, source, a, b, deadline if deadline is not None
                              else float("inf"))
            tries, status = tries + read.tries, read.http_status
            latency += read.latency_ms
            mark_to = settled(spec, b, collector.now())
            try:
                with engine.begin() as conn:
                    stored += store_history(conn, read.pages).samples
                    advance_read_up_to(conn, source.name, mark_to)
            except (OperationalError, InterfaceError) as exc:
                # The database is away or locked: the range read is not lost. The poll ends
                # here with the range's pages, which the writer stores with the attempt or
                # keeps in the spool until it can (their windows make coverage and `H` as if
                # stored now); the ranges after it are left for the next poll.
                log.warning("%s: the database refused the range %s to %s (%s): kept to store "
                            "later", source.name, a.isoformat(), b.isoformat(), first_line(exc),
                            extra=POLL_OUTCOME)
                return PollRecord(source=source.name, outcome=Outcome.OK, started_at=started,
                                  finished_at=collector.now(), http_status=read.http_status,
                                  latency_ms=latency if tries else None, tries=tries,
                                  error=None, observation=None, samples_stored=stored,
                                  pages=tuple(read.pages), read_up_to=mark_to)
            if on_range is not None:
                on_range(a, b, i + 1, len(ranges))
    except HttpFailure as exc:
        return _failed(collector, source, started, exc.outcome, str(exc), stored,
                       tries + exc.tries, exc.http_status, exc.retry_after)
    except ParseError as exc:
        return _failed(collector, source, started, Outcome.INVALID_RESPONSE,
                       f"body refused: {exc}", stored, tries + 1, status)
    except SecretError as exc:
        return _failed(collector, source, started, Outcome.AUTH_ERROR, str(exc), stored, tries)
    except SQLAlchemyError as exc:
        # H could not be read (nothing was read from the vendor), or the database refused a
        # range's values: the vendor keeps its history, the next poll reads it again.
        return _failed(collector, source, started, Outcome.CONNECTION_ERROR,
                       f"the database refused the range: {first_line(exc)}", stored, tries)
    return PollRecord(source=source.name, outcome=Outcome.OK, started_at=started,
                      finished_at=collector.now(), http_status=status,
                      latency_ms=latency if tries else None, tries=tries, error=None,
                      observation=None, samples_stored=stored)


def _failed(collector: Collector, source: SourceConfig, started: datetime, outcome: Outcome,
            message: str, stored: int, tries: int, status: int | None = None,
            retry_after: float | None = None) -> PollRecord:
    secret = ""
    try:
        secret = source.read_secret()
    except SecretError:
        pass
    error = redact(message, [secret] if secret else [])
    log.warning("%s: %s: %s", source.name, outcome, error, extra=POLL_OUTCOME)
    return PollRecord(source=source.name, outcome=outcome, started_at=started,
                      finished_at=collector.now(), http_status=status, latency_ms=None,
                      tries=tries, error=error, observation=None, retry_after=retry_after,
                      samples_stored=stored)
