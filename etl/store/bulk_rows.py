"""One chunk of the bulk writer as rows: built once from observations, split by freshness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from etl.store.rows import Conflict, StoreResult, series_ids
from etl.timefmt import from_micros, to_micros
from etl.vendors.types import Observation


@dataclass
class Chunk:
    """One chunk prepared in Python: unique observations' rows and the in-chunk repeats.

    Rows carry no None the statement can leave out: SQLite's driver looks up an adapter for
    each None it binds (a failed attribute lookup, about as dear as inserting a number), so
    snapshots without a received time and samples with neither limit nor status go in
    through statements that leave those columns NULL.
    """

    base: int  # snapshot ids are base + k (SQLite); PostgreSQL takes them from the sequence
    snap_rows: list[tuple[Any, ...]] = field(default_factory=list)  # k, source, kind, at, origin, payload
    received_rows: list[tuple[Any, ...]] = field(default_factory=list)  # k, source, kind, at, recv, origin, payload
    sample_rows: list[tuple[Any, ...]] = field(default_factory=list)  # sid, at, value, limit, status
    bare_rows: list[tuple[Any, ...]] = field(default_factory=list)  # sid, at, value (no limit, status)
    repeats: list[tuple[int, Any, float]] = field(default_factory=list)  # sid, at, value
    names: dict[int, tuple[str, str]] = field(default_factory=dict)  # sid -> source, metric
    source_series: dict[str, list[int]] = field(default_factory=dict)
    snap_ranges: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # source -> lo, hi

    def snapshots(self) -> int:
        """Snapshot rows of the chunk (with or without a received time)."""
        return len(self.snap_rows) + len(self.received_rows)

    def samples(self) -> int:
        """Sample rows of the chunk (with or without a limit and status)."""
        return len(self.sample_rows) + len(self.bare_rows)

    def series_ranges(self) -> dict[int, tuple[Any, Any]]:
        """Series id -> (lowest, highest) instant the chunk writes for it."""
        # All samples of an observation share its instant: a series spans its source's range.
        return {
            sid: lo_hi
            for source, lo_hi in self.snap_ranges.items()
            for sid in self.source_series[source]
        }

    def first_values(self) -> dict[tuple[int, Any], float]:
        """(series id, instant) -> the value the chunk writes there (its first observation's)."""
        firsts = {(r[0], r[1]): r[2] for r in self.sample_rows}
        firsts.update(((r[0], r[1]), r[2]) for r in self.bare_rows)
        return firsts


def instants(batch: list[Observation]) -> set[datetime]:
    """The instants samples of `batch` are stored at (a bucket's start for history sources)."""
    out = {obs.observed_at for obs in batch}
    out.update(s.bucket_start for obs in batch for s in obs.samples if s.bucket_start is not None)
    return out


def partition(ch: Chunk, is_fresh: Callable[[str, Any], bool]) -> tuple[Chunk, Chunk]:
    """The chunk's rows in two chunks: those `is_fresh(source, instant)` and the rest."""
    fresh, rest = Chunk(ch.base), Chunk(ch.base)
    for part in (fresh, rest):
        part.names, part.source_series = ch.names, ch.source_series
    for which in ("snap_rows", "received_rows"):
        for row in getattr(ch, which):
            part = fresh if is_fresh(row[1], row[3]) else rest
            getattr(part, which).append(row)
            widen(part.snap_ranges, row[1], row[3])
    names = ch.names
    for which in ("sample_rows", "bare_rows"):
        for row in getattr(ch, which):
            getattr(fresh if is_fresh(names[row[0]][0], row[1]) else rest, which).append(row)
    for rep in ch.repeats:
        (fresh if is_fresh(names[rep[0]][0], rep[1]) else rest).repeats.append(rep)
    for part in (fresh, rest):
        # series_ranges() covers the sources of this part only.
        part.source_series = {src: ch.source_series[src] for src in part.snap_ranges}
    return fresh, rest


def prepare(conn: Connection, batch: list[Observation], sqlite: bool) -> Chunk:
    """The rows of `batch` for the tables; series rows are made as needed on `conn`.

    A key's first observation in the batch makes its rows, later ones are kept as repeats to
    compare. On SQLite instants are epoch microseconds and snapshot ids are assigned here
    (the next after the largest stored); PostgreSQL takes them from the sequence.
    """
    ch = Chunk(_next_id(conn) if sqlite else 0)
    seen: set[tuple[str, Any]] = set()
    ids_by_source: dict[str, dict[str, int]] = {}
    micros = _Micros()  # sources share instants: each is converted once
    spans: dict[str, list[Any]] = {}  # source -> [lowest, highest] instant
    snap_rows = ch.snap_rows
    add_full, add_bare = ch.sample_rows.append, ch.bare_rows.append
    k = ch.base
    # One pass, and no call per observation or sample that the common case can do without:
    # this loop runs for every line of an archive.
    for obs in batch:
        source = obs.source
        at = micros[obs.observed_at] if sqlite else obs.observed_at
        span = spans.get(source)
        if span is None:
            spans[source] = [at, at]
        elif at > span[1]:
            span[1] = at
        elif at < span[0]:
            span[0] = at
        key = (source, at)
        if key in seen:
            _repeat(conn, ch, ids_by_source, obs, at)
            continue
        seen.add(key)
        if obs.received_at is None:
            snap_rows.append((k, source, obs.kind, at, obs.origin, obs.payload))
        else:
            _received(ch, k, obs, at, micros if sqlite else None)
        ids = ids_by_source.get(source) or _add_series(conn, ch, ids_by_source, obs)
        for sv in obs.samples:
            sid = ids.get(sv[0])
            if sid is None:  # a metric this source had not shown yet in this chunk
                sid = _add_series(conn, ch, ids_by_source, obs)[sv[0]]
            if sv[2] is None and sv[3] is None:
                add_bare((sid, at, sv[1]))
            else:
                add_full((sid, at, sv[1], sv[2], sv[3]))
        k += 1
    ch.snap_ranges.update((source, (lo, hi)) for source, (lo, hi) in spans.items())
    return ch


class _Micros(dict[datetime, int]):
    """Epoch microseconds of each instant looked up, each converted once."""

    def __missing__(self, at: datetime) -> int:
        self[at] = micros = to_micros(at)
        return micros


def _next_id(conn: Connection) -> int:
    # Ids are assigned here; a writer racing us makes the direct insert fail and retry.
    cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return int(cur.execute("SELECT coalesce(max(id), 0) + 1 FROM snapshots").fetchone()[0])
    finally:
        cur.close()


def _received(ch: Chunk, k: int, obs: Observation, at: Any, micros: _Micros | None) -> None:
    """The snapshot row of an observation with a received time (a live poll's, not a line's)."""
    recv: Any = obs.received_at
    ch.received_rows.append((k, obs.source, obs.kind, at, micros[recv] if micros is not None
                             else recv, obs.origin, obs.payload))


def _repeat(conn: Connection, ch: Chunk, ids_by_source: dict[str, dict[str, int]],
            obs: Observation, at: Any) -> None:
    """Note the samples of an observation whose key came earlier in the chunk."""
    ids = ids_by_source.get(obs.source) or _add_series(conn, ch, ids_by_source, obs)
    for sv in obs.samples:
        sid = ids.get(sv[0])
        if sid is None:
            sid = _add_series(conn, ch, ids_by_source, obs)[sv[0]]
        ch.repeats.append((sid, at, sv[1]))


def _add_series(conn: Connection, ch: Chunk, ids_by_source: dict[str, dict[str, int]],
                obs: Observation) -> dict[str, int]:
    """Series ids of `obs`'s samples (rows created as needed), recorded in the chunk."""
    ids = ids_by_source.setdefault(obs.source, {})
    known = ch.source_series.setdefault(obs.source, [])
    for metric, sid in series_ids(conn, obs.source, obs.kind, obs.samples).items():
        if metric not in ids:
            ids[metric] = sid
            known.append(sid)
            ch.names[sid] = (obs.source, metric)
    return ids


def widen(ranges: dict[Any, tuple[Any, Any]], key: Any, at: Any) -> None:
    """Stretch `ranges[key]` (lowest, highest) to take in `at`."""
    lo_hi = ranges.get(key)
    if lo_hi is None:
        ranges[key] = (at, at)
    elif at < lo_hi[0]:
        ranges[key] = (at, lo_hi[1])
    elif at > lo_hi[1]:
        ranges[key] = (lo_hi[0], at)


def count_repeats(res: StoreResult, ch: Chunk, stored: dict[tuple[int, Any], float]) -> None:
    """Repeats of a key inside the chunk compare with the value that ended up stored."""
    if not ch.repeats:
        return
    firsts = ch.first_values()
    for sid, at, value in ch.repeats:
        first_value = firsts.get((sid, at))
        if first_value is None:  # a metric the first observation of this key did not have
            continue
        kept = stored.get((sid, at), first_value)
        if kept == value:
            res.duplicates += 1
        else:
            source, metric = ch.names[sid]
            res.conflicts.append(Conflict(source, metric, instant(at), kept, value))


def instant(at: Any) -> datetime:
    """A row's instant as a UTC datetime (SQLite rows hold epoch microseconds)."""
    return from_micros(at) if isinstance(at, int) else at
