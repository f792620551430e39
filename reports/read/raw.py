"""Raw history for the DataFrame API: stored series, samples and poll attempts as rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Select,
    cast,
    func,
    select,
    type_coerce,
)

from etl.store import packs
from etl.store.models import CollectionAttempt, Sample, Series
from etl.timefmt import to_micros

_Q = TypeVar("_Q", bound="Select[*tuple[Any, ...]]")


def micros(column: Any, conn: Connection) -> ColumnElement[int]:
    """A UTC timestamp column as integer epoch microseconds, read without Python datetimes.

    SQLite stores them so already; PostgreSQL converts exactly with extract(epoch).
    """
    if conn.dialect.name == "sqlite":
        return type_coerce(column, BigInteger)
    return cast(func.extract("epoch", column) * 1_000_000, BigInteger)


def _between(query: _Q, column: Any, lo: datetime | None, hi: datetime | None) -> _Q:
    """`query` narrowed to lo <= column < hi (either bound None: open)."""
    if lo is not None:
        query = query.where(column >= lo.astimezone(UTC))
    if hi is not None:
        query = query.where(column < hi.astimezone(UTC))
    return query


def stored_names(conn: Connection) -> list[tuple[str, str]]:
    """Every stored (source, metric)."""
    return [(s, m) for s, m in conn.execute(select(Series.source, Series.metric)).all()]


def series_rows(conn: Connection) -> list[tuple[Any, ...]]:
    """(source, metric, kind, metric_type, samples, first_us, last_us) per stored series.

    Ordered by source and metric; a series without samples has 0 and None times.
    """
    query = (
        select(Series.source, Series.metric, Series.kind, Series.metric_type,
               func.count(Sample.observed_at), func.min(micros(Sample.observed_at, conn)),
               func.max(micros(Sample.observed_at, conn)), Series.id)
        .join(Sample, Sample.series_id == Series.id, isouter=True)
        .group_by(Series.source, Series.metric, Series.kind, Series.metric_type, Series.id)
        .order_by(Series.source, Series.metric)
    )
    # Packed days (PostgreSQL, etl.store.packs) add their counts and bounds, read from
    # the packs' array headers and end elements, not unpacked.
    packed = packs.packed_summary(conn)
    out = []
    for *head, n, first, last, sid in conn.execute(query).all():
        if sid in packed:
            more, lo, hi = packed[sid]
            n += more
            first = min(x for x in (first, to_micros(lo)) if x is not None)
            last = max(x for x in (last, to_micros(hi)) if x is not None)
        out.append((*head, n, first, last))
    return out


def sample_rows(conn: Connection, sources: Sequence[str] | None, metrics: Sequence[str] | None,
                lo: datetime | None, hi: datetime | None) -> list[tuple[Any, ...]]:
    """(observed_us, source, metric, metric_type, value, limit, status) of the samples.

    Narrowed to the given sources and metrics (None: all) and to lo <= observed_at < hi;
    ordered by source, metric and time.
    """
    s = packs.samples_from(conn, lo, hi).c
    query = (
        select(micros(s.observed_at, conn), Series.source, Series.metric,
               Series.metric_type, s.value, s.plan_limit, s.status)
        .join(Series, Series.id == s.series_id)
    )
    if sources is not None:
        query = query.where(Series.source.in_(sources))
    if metrics is not None:
        query = query.where(Series.metric.in_(metrics))
    query = _between(query, s.observed_at, lo, hi)
    return [tuple(r) for r in conn.execute(
        query.order_by(Series.source, Series.metric, s.observed_at)).all()]


def attempt_rows(conn: Connection, sources: Sequence[str] | None, lo: datetime | None,
                 hi: datetime | None) -> list[tuple[Any, ...]]:
    """Poll attempts with lo <= started_at < hi, oldest first.

    Each row: (source, started_us, finished_us, outcome, http_status, latency_ms, tries,
    samples_stored, error).
    """
    a = CollectionAttempt
    query = select(a.source, micros(a.started_at, conn), micros(a.finished_at, conn), a.outcome,
                   a.http_status, a.latency_ms, a.tries, a.samples_stored, a.error)
    if sources is not None:
        query = query.where(a.source.in_(sources))
    query = _between(query, a.started_at, lo, hi)
    return [tuple(r) for r in conn.execute(query.order_by(a.started_at, a.id)).all()]
