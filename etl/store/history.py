"""The write path of history sources (SPEC 10): buckets, their latest fetch, read ranges, `H`.

A page of a history source is one Observation with a `window` (its request range) whose
samples each cover a bucket `[bucket_start, bucket_end)`. A sample row of such a series is
keyed by its bucket's start, holds its end, the fetch time of the value stored
(`fetched_at`, the page's observed_at) and how often a fetch brought another value
(`revisions`). For each series, stored buckets never overlap: a bucket replaces the stored
ones it overlaps that were fetched earlier and is not stored if one it overlaps was fetched
later. Fetches are ordered by (fetch time, value), so the same pages imported in any order,
or twice, leave the same rows.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select, update

from etl.store.models import HistoryMark, HistoryRead, Sample, Snapshot
from etl.store.retire import skip_retired
from etl.store.rows import StoreResult, insert_ignore, series_ids
from etl.timefmt import to_micros
from etl.vendors.types import Observation

# The longest bucket looked back for when finding stored buckets a new one overlaps: a
# calendar month (`width = "1mo"`) is at most 31 days.
MAX_BUCKET = timedelta(days=32)


@dataclass(slots=True)
class _Bucket:
    """One stored (or to be stored) bucket of one series."""

    start: datetime
    end: datetime
    value: float
    fetched: datetime
    revisions: int
    limit: float | None
    status: str | None
    # Its page was stored before: it was offered then, and counted as a revision then.
    repeat: bool = False

    def rank(self) -> tuple[datetime, float]:
        # The later fetch wins; of two fetches at one instant, the larger value (any fixed
        # rule would do: it only has to give the same answer in every order of arrival).
        return (self.fetched, self.value)

    def row(self) -> tuple[Any, ...]:
        return (self.start, self.end, self.value, self.fetched, self.revisions, self.limit,
                self.status)


def store_history(conn: Connection, observations: Iterable[Observation]) -> StoreResult:
    """Store pages of history sources in the caller's transaction (SPEC 10 "Revisions").

    Each observation must carry `window`, and each of its samples `bucket_start` and
    `bucket_end` (ValueError otherwise). Records the page's window as read at its
    observed_at (coverage). Returns new snapshots, samples written (new or replacing) and
    duplicates (a bucket fetched again at the same instant with the same value); history
    sources have no conflicts. Buckets in retired history are not stored (`skip_retired`).
    """
    result = StoreResult()
    pages = skip_retired(conn, list(observations), result)
    if not pages:
        return result
    _, new_pages = _insert_snapshots(conn, pages, result)
    _record_reads(conn, pages)
    offered: dict[int, list[_Bucket]] = {}
    for obs in pages:
        ids = series_ids(conn, obs.source, obs.kind, obs.samples)
        page = (obs.source, obs.observed_at)
        repeat, at = page not in new_pages, obs.observed_at
        for sv in obs.samples:
            if sv.bucket_start is None or sv.bucket_end is None:
                raise ValueError(f"{obs.source}: {sv.metric}: a history sample needs its bucket")
            offered.setdefault(ids[sv.metric], []).append(_Bucket(
                sv.bucket_start, sv.bucket_end, sv.value, at, 0, sv.limit, sv.status, repeat))
    spans: dict[int, tuple[datetime, datetime]] = {}
    rows: list[tuple[int, _Bucket]] = []
    for sid, buckets in offered.items():
        changed = _merge_series(conn, sid, buckets, result, rows)
        if changed is not None:
            spans[sid] = changed
    _insert_samples(conn, rows)
    if spans:
        from etl.store.rollups import mark_dirty

        mark_dirty(conn, spans)
    return result


def _insert_snapshots(
    conn: Connection, pages: Sequence[Observation], result: StoreResult,
) -> tuple[dict[tuple[str, datetime], int], set[tuple[str, datetime]]]:
    """Insert each page not stored yet (keyed like any snapshot); every page's id, the new ones."""
    rows: dict[tuple[str, datetime], dict[str, Any]] = {}
    for obs in pages:
        if obs.window is None:
            raise ValueError(f"{obs.source}: a page of a history source needs its window")
        rows.setdefault((obs.source, obs.observed_at), {
            "source": obs.source, "kind": obs.kind, "observed_at": obs.observed_at,
            "received_at": obs.received_at, "origin": str(obs.origin), "payload": obs.payload,
            "window_start": obs.window[0], "window_end": obs.window[1]})
    found = _snapshot_ids(conn, rows)
    new = set(rows) - set(found)
    if new:
        # One statement for the range's new pages (a backfill's range has dozens).
        conn.execute(insert_ignore(conn, Snapshot, ("source", "observed_at")),
                     [rows[key] for key in sorted(new)])
        found.update(_snapshot_ids(conn, {key: rows[key] for key in new}))
        result.snapshots += len(new)
    return found, new


def _snapshot_ids(conn: Connection, keys: Iterable[tuple[str, datetime]]
                  ) -> dict[tuple[str, datetime], int]:
    """The ids of the stored snapshots among (source, observed_at) `keys`."""
    by_source: dict[str, list[datetime]] = {}
    for source, at in keys:
        by_source.setdefault(source, []).append(at)
    found: dict[tuple[str, datetime], int] = {}
    for source, ats in by_source.items():
        for i in range(0, len(ats), 500):  # bounded IN lists
            found.update(((source, at), sid) for sid, at in conn.execute(
                select(Snapshot.id, Snapshot.observed_at).where(
                    Snapshot.source == source, Snapshot.observed_at.in_(ats[i:i + 500]))))
    return found


def _record_reads(conn: Connection, pages: Sequence[Observation]) -> None:
    """Keep each (source, window) with the latest time it was read."""
    latest: dict[tuple[str, datetime, datetime], datetime] = {}
    for obs in pages:
        assert obs.window is not None
        key = (obs.source, *obs.window)
        latest[key] = max(latest.get(key, obs.observed_at), obs.observed_at)
    for (source, start, end), at in latest.items():
        where = and_(HistoryRead.source == source, HistoryRead.start_at == start,
                     HistoryRead.end_at == end)
        stored = conn.execute(select(HistoryRead.read_at).where(where)).scalar()
        if stored is None:
            conn.execute(insert(HistoryRead), [{"source": source, "start_at": start,
                                                "end_at": end, "read_at": at}])
        elif stored < at:
            conn.execute(update(HistoryRead).where(where).values(read_at=at))


def _merge_series(conn: Connection, sid: int, offered: list[_Bucket], result: StoreResult,
                  rows: list[tuple[int, _Bucket]]) -> tuple[datetime, datetime] | None:
    """Merge offered buckets into one series' stored ones; the changed span, if any.

    Deletes the stored rows that change here; the buckets to insert are appended to `rows`
    with their series id, written for every series at once by _insert_samples.
    """
    lo = min(b.start for b in offered)
    hi = max(b.end for b in offered)
    stored: dict[datetime, _Bucket] = {}
    for row in conn.execute(select(
            Sample.observed_at, Sample.bucket_end, Sample.value, Sample.fetched_at,
            Sample.revisions, Sample.plan_limit, Sample.status).where(
            Sample.series_id == sid, Sample.observed_at < hi,
            Sample.observed_at > lo - MAX_BUCKET)):
        start, end = row[0], row[1]
        if end is None or end <= lo:
            continue
        stored[start] = _Bucket(start, end, row[2], row[3] or start, row[4] or 0, row[5],
                                row[6])
    if not stored:
        # Nothing stored near: a backfill's usual case. Buckets that do not overlap one
        # another are all stored as offered (what _offer would do, without its search).
        ordered = sorted(offered, key=_START)
        if all(a.end <= b.start for a, b in zip(ordered, ordered[1:], strict=False)):
            rows.extend((sid, b) for b in ordered)
            result.samples += len(ordered)
            return ordered[0].start, max(b.end for b in ordered)
    original = {start: b.row() for start, b in stored.items()}
    starts = sorted(stored)
    for new in sorted(offered, key=lambda b: (b.start, b.rank())):
        _offer(stored, starts, new, result)
    gone = [start for start, row in original.items()
            if start not in stored or stored[start].row() != row]
    # Only buckets loaded here can be unchanged: a new one is fresh without comparing.
    fresh = [b for start, b in stored.items()
             if start not in original or original[start] != b.row()]
    if not gone and not fresh:
        return None
    if gone:
        conn.execute(delete(Sample).where(Sample.series_id == sid,
                                          Sample.observed_at.in_(gone)))
    rows.extend((sid, b) for b in fresh)
    result.samples += len(fresh)
    touched = [*gone, *(b.start for b in fresh)]
    ends = [b.end for b in fresh] + [original[s][1] for s in gone]
    return min(touched), max(ends)


_START = attrgetter("start")
# The columns of a sample row of a history series, in the order _Bucket.row() gives them.
SAMPLE_COLUMNS = ("series_id", "observed_at", "bucket_end", "value", "fetched_at", "revisions",
                  "plan_limit", "status")
_INSERT = (f"INSERT INTO {Sample.__tablename__} ({', '.join(SAMPLE_COLUMNS)}) "  # noqa: S608
           "VALUES ({})")


class _Micros(dict[datetime, int]):
    """Epoch microseconds of each datetime looked up, each converted once."""

    def __missing__(self, at: datetime) -> int:
        found = self[at] = to_micros(at)
        return found


def _insert_samples(conn: Connection, buckets: list[tuple[int, _Bucket]]) -> None:
    """Insert (series id, bucket) rows in one executemany on the driver's own cursor.

    Below Core (as etl.store.bulk): a 90-day backfill writes over a hundred thousand rows,
    and Core's per-row parameter processing was most of the write. Times are stored as the
    column type does: integer microseconds on SQLite, timestamptz on PostgreSQL.
    """
    if not buckets:
        return
    raw: Any = conn.connection.driver_connection
    rows: list[tuple[Any, ...]]
    if conn.dialect.name == "sqlite":
        sql = _INSERT.format(", ".join("?" * len(SAMPLE_COLUMNS)))
        # Bucket bounds and fetch times repeat across a page's series: each converted once.
        us = _Micros()
        rows = [(sid, us[b.start], us[b.end], b.value, us[b.fetched], b.revisions, b.limit,
                 b.status) for sid, b in buckets]
    else:
        sql = _INSERT.format(", ".join(["%s"] * len(SAMPLE_COLUMNS)))
        rows = [(sid, *b.row()) for sid, b in buckets]
    cur = raw.cursor()
    try:
        cur.executemany(sql, rows)
    finally:
        cur.close()


def _offer(stored: dict[datetime, _Bucket], starts: list[datetime], new: _Bucket,
           result: StoreResult) -> None:
    """One fetched bucket against the stored ones of its series (in memory).

    `starts` are the keys of `stored` in order. Stored buckets never overlap, so their ends
    are in the same order: the ones `new` overlaps are found by bisection (a 90-day backfill
    of hourly buckets offers thousands to one series).
    """
    i = bisect_right(starts, new.start)
    first = i - 1 if i and stored[starts[i - 1]].end > new.start else i
    past = bisect_left(starts, new.end, lo=i)
    overlapping = [stored[start] for start in starts[first:past]]
    same = stored.get(new.start)
    if same is not None and same.end != new.end:
        same = None
    if same is not None and same.rank() == new.rank():
        result.duplicates += 1
        return
    if any(b.rank() > new.rank() for b in overlapping):
        # A later fetch holds (part of) this bucket. Its value differing counts as a revision
        # of the stored bucket, as it would have had the fetches arrived in time order.
        if same is not None and same.value != new.value and not new.repeat:
            same.revisions += 1
        return
    revisions = 0
    if same is not None:
        revisions = same.revisions + (1 if same.value != new.value else 0)
    for b in overlapping:
        del stored[b.start]
    del starts[first:past]
    new.revisions = revisions
    stored[new.start] = new
    insort(starts, new.start)


def read_up_to(conn: Connection, source: str) -> datetime | None:
    """The source's read-up-to point `H` (None: it has read nothing yet)."""
    return conn.execute(select(HistoryMark.read_up_to).where(
        HistoryMark.source == source)).scalar()


def read_up_to_all(conn: Connection) -> dict[str, datetime]:
    """Every history source's read-up-to point, by source name."""
    return {source: at for source, at in conn.execute(
        select(HistoryMark.source, HistoryMark.read_up_to))}


def advance_read_up_to(conn: Connection, source: str, at: datetime) -> None:
    """Move `H` of the source to `at` if that is later (SPEC 10: H never moves back)."""
    stored = read_up_to(conn, source)
    if stored is None:
        conn.execute(insert(HistoryMark), [{"source": source, "read_up_to": at}])
    elif stored < at:
        conn.execute(update(HistoryMark).where(HistoryMark.source == source)
                     .values(read_up_to=at))


def read_ranges(conn: Connection, source: str, lo: datetime,
                hi: datetime) -> list[tuple[datetime, datetime, datetime]]:
    """The (start, end, latest read) of the source's read ranges that overlap `[lo, hi)`."""
    rows = conn.execute(select(HistoryRead.start_at, HistoryRead.end_at, HistoryRead.read_at)
                        .where(HistoryRead.source == source, HistoryRead.start_at < hi,
                               HistoryRead.end_at > lo)
                        .order_by(HistoryRead.start_at))
    return [(a, b, c) for a, b, c in rows]
