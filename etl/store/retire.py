"""Retirement (SPEC 13, samples_days): samples leave the database once their raw responses are archived.

Per source, samples observed before the cut are deleted only up to its oldest raw response
still in the database and only through months whose archive file exists, so whatever is
retired can be re-derived by importing the files. Each series keeps its last sample before
the cut (a counter's next increase needs its predecessor), and `retired_history` records
the instant before which its history is gone: reports of such a period refuse in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from etl.store import packs, partitions
from etl.store.compact import archive_path
from etl.store.models import RetiredHistory, RollupDay, Sample, Series, Snapshot
from etl.store.rows import StoreResult
from etl.timefmt import month_start, next_month, utc_z
from etl.vendors.types import Observation

log = logging.getLogger("etl.store")




@dataclass
class RetireResult:
    """What a retirement did: samples deleted, series whose history now starts later."""

    samples: int = 0
    series: int = 0


def day_floor(at: datetime) -> datetime:
    """UTC midnight at or before `at`: a retired day is retired whole."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


def retire(engine: Engine, archive_dir: Path, cut: datetime) -> RetireResult:
    """Delete samples (and their daily rollups) observed before `cut` where archived.

    Deletes one month of one series per transaction (bounded, whatever the history).
    """
    cut = day_floor(cut)
    result = RetireResult()
    with engine.connect() as conn:
        by_source: dict[str, list[int]] = {}
        for sid, source in conn.execute(select(Series.id, Series.source)):
            by_source.setdefault(source, []).append(sid)
    limits: dict[str, datetime] = {}
    bound: datetime | None = None  # partitions ending by then hold nothing to keep
    with engine.connect() as conn:
        for source, sids in sorted(by_source.items()):
            limit = _archived_until(conn, archive_dir, source, sids, cut)
            if limit is not None:
                limits[source] = limit
            for sid in sids:
                # The oldest sample kept: the predecessor before the limit, or the first.
                kept = _last_before(conn, sid, limit) if limit is not None else None
                kept = kept or _first(conn, [sid])
                if kept is not None:
                    bound = kept if bound is None else min(bound, kept)
    if bound is not None:
        result.samples += _drop_partitions(engine, bound)
    for source, limit in limits.items():
        for sid in by_source[source]:
            deleted = _retire_series(engine, sid, limit)
            if deleted is not None:
                result.series += 1
                result.samples += deleted
    return result


def _drop_partitions(engine: Engine, bound: datetime) -> int:
    """PostgreSQL: drop the monthly partitions of samples that end by `bound`; rows dropped.

    Whole months go at once (SPEC 13), with no row-by-row delete; the month the cut goes
    through is left to the per-series deletes.
    """
    dropped = 0
    with engine.begin() as conn:
        if not partitions.is_partitioned(conn):
            return 0
        for name in sorted(partitions.existing(conn)):
            month = partitions.month_of(name)
            if month is None or next_month(month) > bound:
                continue
            dropped += int(conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one())  # noqa: S608
            conn.exec_driver_sql(f"DROP TABLE {name}")
            pack_name = partitions.pack_partition_name(month)  # its packed days too
            if conn.exec_driver_sql(f"SELECT to_regclass('{pack_name}')").scalar() is not None:
                dropped += int(conn.exec_driver_sql(
                    f"SELECT coalesce(sum(cardinality(observed_at)), 0) FROM {pack_name}"  # noqa: S608
                ).scalar_one())
                conn.exec_driver_sql(f"DROP TABLE {pack_name}")
    if dropped:
        partitions.forget(engine)
    return dropped


def _archived_until(conn: Connection, archive_dir: Path, source: str, sids: list[int],
                    cut: datetime) -> datetime | None:
    """The instant up to which `source`'s samples may go: before `cut`, raw responses archived."""
    limit = cut
    oldest_raw = conn.scalar(select(func.min(Snapshot.observed_at))
                             .where(Snapshot.source == source))
    if oldest_raw is not None:
        limit = min(limit, oldest_raw)
    first = _first(conn, sids)
    if first is None or first >= limit:
        return None
    month = month_start(first)
    while month < limit:
        end = next_month(month)
        held = conn.scalar(select(Sample.observed_at).where(
            Sample.series_id.in_(sids), Sample.observed_at >= month,
            Sample.observed_at < min(end, limit)).limit(1))
        packed = packs.packed_between(conn, sids, month, min(end, limit))
        if (held is not None or packed) and not archive_path(archive_dir, source, month).is_file():
            limit = month  # its raw responses are not in the archive: keep from here on
            break
        month = end
    return limit


def _retire_series(engine: Engine, sid: int, limit: datetime) -> int | None:
    """Delete `sid`'s samples before its last one before `limit`; None if it had none."""
    with engine.connect() as conn:
        keep = _last_before(conn, sid, limit)
        first = _first(conn, [sid])
        known = conn.scalar(select(RetiredHistory.before).where(RetiredHistory.series_id == sid))
    if keep is None or first is None or (known is not None and known >= limit):
        return None
    with engine.begin() as conn:
        deleted = packs.retire_before(conn, sid, keep)
    month = month_start(first)
    while month < keep:
        end = min(next_month(month), keep)
        with engine.begin() as conn:
            deleted += conn.execute(delete(Sample).where(
                Sample.series_id == sid, Sample.observed_at >= month,
                Sample.observed_at < end)).rowcount or 0
        month = next_month(month)
    with engine.begin() as conn:
        conn.execute(delete(RollupDay).where(RollupDay.series_id == sid,
                                             RollupDay.day_start < limit))
        if known is None:
            conn.execute(insert(RetiredHistory).values(series_id=sid, before=limit))
        else:
            conn.execute(update(RetiredHistory)
                         .where(RetiredHistory.series_id == sid).values(before=limit))
    return deleted


def _last_before(conn: Connection, sid: int, limit: datetime) -> datetime | None:
    """The instant of the series' last sample before `limit`, rows or packed."""
    found = [conn.scalar(select(func.max(Sample.observed_at)).where(
        Sample.series_id == sid, Sample.observed_at < limit))]
    found += [at for at, _v, _l in packs.latest_packed(conn, [sid], limit).values()]
    return max((x for x in found if x is not None), default=None)


def _first(conn: Connection, sids: list[int]) -> datetime | None:
    """The instant of these series' first sample, rows or packed."""
    found = [conn.scalar(select(func.min(Sample.observed_at)).where(Sample.series_id.in_(sids))),
             packs.oldest_packed(conn, sids)]
    return min((x for x in found if x is not None), default=None)


def retired_before(conn: Connection) -> dict[int, datetime]:
    """Series id -> the instant before which its samples were retired (SPEC 13)."""
    retired = RetiredHistory.__table__.c  # Core: every report reads this, no mapper needed
    return {sid: before for sid, before in conn.execute(
        select(retired.series_id, retired.before))}


def retired_sources(conn: Connection) -> dict[str, datetime]:
    """Source -> the instant before which its history was retired (empty: nothing retired).

    Retirement cuts a source's series at one instant (`retire`), so the latest of its
    series' boundaries is the source's.
    """
    out: dict[str, datetime] = {}
    for source, before in conn.execute(
            select(Series.source, func.max(RetiredHistory.before))
            .join(RetiredHistory, RetiredHistory.series_id == Series.id)
            .group_by(Series.source)):
        out[source] = before
    return out


def without_retired(observations: Sequence[Observation], bounds: dict[str, datetime]
                    ) -> tuple[list[Observation], dict[str, int]]:
    """The observations minus what falls in retired history, and samples left out per source.

    A writer must not store again what retirement removed (SPEC 13): the samples would be
    back in the database while reports still refuse their period, and retirement (which
    has passed that instant) would never remove them. A snapshot observed before its
    source's boundary is left out whole; a history page (SPEC 10) keeps the buckets that
    start at or after it, and is left out when none does.
    """
    if not bounds:
        return list(observations), {}
    kept: list[Observation] = []
    skipped: dict[str, int] = {}
    for obs in observations:
        bound = bounds.get(obs.source)
        if bound is None:
            kept.append(obs)
        elif obs.window is None:
            if obs.observed_at >= bound:
                kept.append(obs)
            else:
                skipped[obs.source] = skipped.get(obs.source, 0) + len(obs.samples)
        else:
            fresh = tuple(s for s in obs.samples
                          if s.bucket_start is None or s.bucket_start >= bound)
            if len(fresh) < len(obs.samples):
                skipped[obs.source] = skipped.get(obs.source, 0) + len(obs.samples) - len(fresh)
            if fresh:
                kept.append(obs if len(fresh) == len(obs.samples) else obs._replace(samples=fresh))
    return kept, skipped


def retired_message(skipped: dict[str, int], bounds: dict[str, datetime]) -> list[str]:
    """One line per source whose samples `without_retired` left out, for people."""
    lines = []
    for source, n in sorted(skipped.items()):
        when = utc_z(bounds[source]) if source in bounds else "its retired boundary"
        lines.append(f"{source}: {n} samples before {when} not stored: that history was "
                     "retired ([retention] samples_days); import the archive files into "
                     "another database to report on it")
    return lines


def skip_retired(conn: Connection, observations: list[Observation], result: StoreResult,
                 *, warn: bool = True) -> list[Observation]:
    """`observations` minus what falls in retired history, counted in `result.retired`.

    Every writer calls this (`without_retired` has the rule). With `warn`, a
    warning is logged per source left out: a poll or a backfill has no other place to say
    so (an import says it in its summary).
    """
    bounds = retired_sources(conn)
    if not bounds:
        return observations
    kept, skipped = without_retired(observations, bounds)
    for line in retired_message(skipped, bounds) if warn else ():
        log.warning("%s", line)
    result.retired.update(skipped)
    return kept
