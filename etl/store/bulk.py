"""Fast bulk writer for archives of millions of observations, below the ORM and Core executemany."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Engine

from etl.store import partitions
from etl.store.packs import latest_packed, unpack_spans
from etl.store.rows import Conflict, StoreResult, series_ids
from etl.timefmt import from_micros, to_micros
from etl.vendors.types import Observation

# Observations per transaction: big enough to amortize the per-chunk queries, small enough
# that memory stays flat and an interrupted import keeps what it committed.
CHUNK = 50_000
# SQLite's page cache (KiB) while a chunk is written, instead of its 2 MiB default: a chunk
# of ordinary lines dirties about 15 MiB of pages, and a smaller cache spilled them to the
# WAL mid-transaction and read them back (a third of the import's system time).
SQLITE_WRITE_CACHE_KIB = 65536


class _Retry(Exception):
    """The optimistic direct write hit a key that is stored already: use the staging path."""


@dataclass
class _Chunk:
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
        return len(self.snap_rows) + len(self.received_rows)

    def samples(self) -> int:
        return len(self.sample_rows) + len(self.bare_rows)

    def series_ranges(self) -> dict[int, tuple[Any, Any]]:
        # All samples of an observation share its instant: a series spans its source's range.
        return {
            sid: lo_hi
            for source, lo_hi in self.snap_ranges.items()
            for sid in self.source_series[source]
        }

    def first_values(self) -> dict[tuple[int, Any], float]:
        firsts = {(r[0], r[1]): r[2] for r in self.sample_rows}
        firsts.update(((r[0], r[1]), r[2]) for r in self.bare_rows)
        return firsts


def bulk_store(engine: Engine, observations: Iterable[Observation], *, chunk: int = CHUNK) -> StoreResult:
    """Store observations like etl.store.store_observations, but fast; one transaction per chunk.

    The first stored observation of a (source, metric, observed_at) key wins: the same value
    again is a duplicate, another value is a Conflict (reported, not stored).
    """
    result = StoreResult()
    it = iter(observations)
    while True:
        batch = list(islice(it, chunk))
        if not batch:
            return result
        result.add(_store_chunk(engine, batch))


def _store_chunk(engine: Engine, batch: list[Observation]) -> StoreResult:
    sqlite = engine.dialect.name == "sqlite"
    if not sqlite:  # the months' partitions first, so rows never wait in the default one
        partitions.ensure(engine, _instants(batch))
    # Series rows are committed first, so a rolled-back attempt never leaves cached ids of
    # series rows that do not exist.
    with engine.begin() as conn:
        prepared = _prepare(conn, batch, sqlite)
    try:
        with engine.connect() as conn, _write_cache(conn, sqlite), \
                _series_checked_once(conn, prepared, sqlite), conn.begin():
            if _anything_stored(conn, prepared, sqlite):
                raise _Retry()
            res, touched = _direct(conn, prepared, sqlite)
            _check_series(conn, prepared, sqlite)
            _mark(conn, touched)
        return res
    except _Retry:
        pass
    try:
        # Usually only a few keys (a repeated line, a late one) fall where something is
        # stored: everything newer than all that is stored goes in directly, the rest staged.
        with engine.connect() as conn, _write_cache(conn, sqlite), conn.begin():
            fresh, rest = _split(conn, prepared, sqlite)
            if fresh.snapshots() and rest.snapshots():
                res, touched = _direct(conn, fresh, sqlite)
                more, more_touched = _staged(conn, rest, sqlite)
                res.add(more)
                for sid, (lo, hi) in more_touched.items():
                    _widen(touched, sid, lo)
                    _widen(touched, sid, hi)
                _mark(conn, touched)
                return res
    except _Retry:
        pass
    with engine.connect() as conn, _write_cache(conn, sqlite), conn.begin():
        res, touched = _staged(conn, prepared, sqlite)
        _mark(conn, touched)
    return res


@contextmanager
def _write_cache(conn: Connection, sqlite: bool) -> Iterator[None]:
    """SQLite: a page cache of SQLITE_WRITE_CACHE_KIB on `conn` meanwhile, then its own again."""
    if not sqlite:
        yield
        return
    raw: Any = conn.connection.driver_connection
    before = int(raw.execute("PRAGMA cache_size").fetchone()[0])
    raw.execute(f"PRAGMA cache_size=-{SQLITE_WRITE_CACHE_KIB}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA cache_size={before}")


@contextmanager
def _series_checked_once(conn: Connection, ch: _Chunk, sqlite: bool) -> Iterator[None]:
    """SQLite: no per-row foreign key check on `conn` meanwhile; `_check_series` does it once.

    SQLite looked up the series row of each inserted sample (about a tenth of writing it);
    the chunk's samples all belong to the few series `_check_series` finds in the same
    transaction, whose lock keeps them there. The pragma only takes effect outside a
    transaction: this runs before `conn.begin()`, and sets it back after the commit.
    """
    if not sqlite:
        yield
        return
    raw: Any = conn.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _check_series(conn: Connection, ch: _Chunk, sqlite: bool) -> None:
    """SQLite, with the per-row check off: every series the chunk wrote to exists."""
    if not sqlite:
        return
    sids = sorted({sid for sids in ch.source_series.values() for sid in sids})
    found = 0
    cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for i in range(0, len(sids), 500):  # SQLite allows a few hundred parameters at least
            part = sids[i:i + 500]
            marks = ", ".join("?" * len(part))
            found += cur.execute(f"SELECT count(*) FROM series WHERE id IN ({marks})",  # noqa: S608
                                 part).fetchone()[0]
    finally:
        cur.close()
    if found != len(sids):
        raise sqlite3.IntegrityError("FOREIGN KEY constraint failed: a series row is missing")


def _instants(batch: list[Observation]) -> set[datetime]:
    """The instants samples of `batch` are stored at (a bucket's start for history sources)."""
    out = {obs.observed_at for obs in batch}
    out.update(s.bucket_start for obs in batch for s in obs.samples if s.bucket_start is not None)
    return out


def _split(conn: Connection, ch: _Chunk, sqlite: bool) -> tuple[_Chunk, _Chunk]:
    """The chunk's observations later than anything stored for their source, and the rest."""
    packed = {} if sqlite else latest_packed(
        conn, [sid for sids in ch.source_series.values() for sid in sids])
    if not sqlite:
        unpack_spans(conn, ch.series_ranges())
    cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    after: dict[str, Any] = {}  # source -> latest stored instant of its snapshots and series
    try:
        snaps = _latest(cur, "snapshots", "source", list(ch.source_series), sqlite)
        samples = _latest(cur, "samples", "series_id",
                          [sid for sids in ch.source_series.values() for sid in sids], sqlite)
    finally:
        cur.close()
    for source, sids in ch.source_series.items():
        latest = [snaps[source]]
        for sid in sids:
            latest.append(samples[sid])
            latest.append(packed[sid][0] if sid in packed else None)
        found = [x for x in latest if x is not None]
        if found:
            after[source] = max(found)

    def is_fresh(source: str, at: Any) -> bool:
        latest = after.get(source)
        return latest is None or at > latest

    return _partition(ch, is_fresh)


def _latest(cur: Any, table: str, key_column: str, keys: list[Any], sqlite: bool
            ) -> dict[Any, Any]:
    """The latest `observed_at` in `table` of each key (None: it has no row)."""
    if sqlite:
        out = {}
        for key in keys:
            cur.execute(f"SELECT max(observed_at) FROM {table} WHERE {key_column} = ?",  # noqa: S608
                        (key,))
            out[key] = cur.fetchone()[0]
        return out
    # PostgreSQL: every key in one statement (an index probe each), not a round trip each.
    key_type = "int4" if key_column == "series_id" else "text"
    cur.execute(f"SELECT r.k, (SELECT max(observed_at) FROM {table} WHERE {key_column} = r.k) "  # noqa: S608
                f"FROM unnest(%s::{key_type}[]) AS r(k)", (keys,))
    return dict(cur.fetchall())


def _partition(ch: _Chunk, is_fresh: Callable[[str, Any], bool]) -> tuple[_Chunk, _Chunk]:
    """The chunk's rows in two chunks: those `is_fresh(source, instant)` and the rest."""
    fresh, rest = _Chunk(ch.base), _Chunk(ch.base)
    for part in (fresh, rest):
        part.names, part.source_series = ch.names, ch.source_series
    for which in ("snap_rows", "received_rows"):
        for row in getattr(ch, which):
            part = fresh if is_fresh(row[1], row[3]) else rest
            getattr(part, which).append(row)
            _widen(part.snap_ranges, row[1], row[3])
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


def _prepare(conn: Connection, batch: list[Observation], sqlite: bool) -> _Chunk:
    ch = _Chunk(_next_id(conn) if sqlite else 0)
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


def _received(ch: _Chunk, k: int, obs: Observation, at: Any, micros: _Micros | None) -> None:
    """The snapshot row of an observation with a received time (a live poll's, not a line's)."""
    recv: Any = obs.received_at
    ch.received_rows.append((k, obs.source, obs.kind, at, micros[recv] if micros is not None
                             else recv, obs.origin, obs.payload))


def _repeat(conn: Connection, ch: _Chunk, ids_by_source: dict[str, dict[str, int]],
            obs: Observation, at: Any) -> None:
    """Note the samples of an observation whose key came earlier in the chunk."""
    ids = ids_by_source.get(obs.source) or _add_series(conn, ch, ids_by_source, obs)
    for sv in obs.samples:
        sid = ids.get(sv[0])
        if sid is None:
            sid = _add_series(conn, ch, ids_by_source, obs)[sv[0]]
        ch.repeats.append((sid, at, sv[1]))


def _add_series(conn: Connection, ch: _Chunk, ids_by_source: dict[str, dict[str, int]],
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


def _widen(ranges: dict[Any, tuple[Any, Any]], key: Any, at: Any) -> None:
    """Stretch `ranges[key]` (lowest, highest) to take in `at`."""
    lo_hi = ranges.get(key)
    if lo_hi is None:
        ranges[key] = (at, at)
    elif at < lo_hi[0]:
        ranges[key] = (at, lo_hi[1])
    elif at > lo_hi[1]:
        ranges[key] = (lo_hi[0], at)


def _anything_stored(conn: Connection, ch: _Chunk, sqlite: bool) -> bool:
    """Whether any sample or snapshot is stored inside the chunk's time range of its series."""
    if not sqlite:  # a packed day is written into as rows (etl.store.packs)
        unpack_spans(conn, ch.series_ranges())
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return (_any_in_ranges(cur, "samples", "series_id", ch.series_ranges(), sqlite)
                or _any_in_ranges(cur, "snapshots", "source", ch.snap_ranges, sqlite))
    finally:
        cur.close()


def _any_in_ranges(cur: Any, table: str, key_column: str,
                   ranges: dict[Any, tuple[Any, Any]], sqlite: bool) -> bool:
    """Whether `table` has a row of some key observed inside that key's [lowest, highest]."""
    if not sqlite and ranges:
        # PostgreSQL: every key in one statement (one index probe each, as below), not one
        # round trip per key: a chunk of the benchmark has 300 series and 200 sources.
        keys, los, his = zip(*((key, lo, hi) for key, (lo, hi) in ranges.items()), strict=True)
        key_type = "int4" if key_column == "series_id" else "text"
        cur.execute(
            f"SELECT 1 FROM unnest(%s::{key_type}[], %s::timestamptz[], %s::timestamptz[]) "  # noqa: S608
            f"AS r(k, lo, hi) WHERE EXISTS (SELECT 1 FROM {table} t WHERE t.{key_column} = r.k "
            "AND t.observed_at >= r.lo AND t.observed_at <= r.hi) LIMIT 1",
            (list(keys), list(los), list(his)),
        )
        return cur.fetchone() is not None
    for key, (lo, hi) in ranges.items():  # SQLite: a probe each, in process, no round trip
        cur.execute(
            # The table and column names are this module's constants, never input.
            f"SELECT 1 FROM {table} WHERE {key_column} = ? AND observed_at >= ? "  # noqa: S608
            "AND observed_at <= ? LIMIT 1",
            (key, lo, hi),
        )
        if cur.fetchone() is not None:
            return True
    return False


def _direct(conn: Connection, ch: _Chunk, sqlite: bool) -> tuple[StoreResult, dict[int, tuple[Any, Any]]]:
    """Nothing of the chunk is stored yet: write straight into the tables with pre-assigned ids."""
    raw: Any = conn.connection.driver_connection
    if sqlite:
        cur = raw.cursor()
        try:
            cur.executemany(
                "INSERT INTO snapshots (id, source, kind, observed_at, origin, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ch.snap_rows,
            )
            if ch.received_rows:
                cur.executemany(
                    "INSERT INTO snapshots (id, source, kind, observed_at, received_at, origin, "
                    "payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ch.received_rows,
                )
            cur.executemany(
                "INSERT INTO samples (series_id, observed_at, value, plan_limit, status) "
                "VALUES (?, ?, ?, ?, ?)",
                ch.sample_rows,
            )
            cur.executemany(
                "INSERT INTO samples (series_id, observed_at, value) VALUES (?, ?, ?)",
                ch.bare_rows,
            )
        except sqlite3.IntegrityError:
            raise _Retry() from None
        finally:
            cur.close()
    else:
        import psycopg

        cur = raw.cursor(binary=True)
        try:
            # Binary COPY: the server need not parse text timestamps and floats, which was
            # most of its time on the text format. Snapshot ids come from their sequence
            # (each row's k, its first item, is left out).
            _copy(cur, "snapshots (source, kind, observed_at, origin, payload)", _SNAP_TYPES,
                  ch.snap_rows, without_k=True)
            _copy(cur, "snapshots (source, kind, observed_at, received_at, origin, payload)",
                  _RECEIVED_SNAP_TYPES, ch.received_rows, without_k=True)
            _copy(cur, "samples (series_id, observed_at, value, plan_limit, status)",
                  _SAMPLE_TYPES, ch.sample_rows)
            _copy(cur, "samples (series_id, observed_at, value)", _SAMPLE_TYPES[:3],
                  ch.bare_rows)
        except psycopg.errors.UniqueViolation:
            raise _Retry() from None
        finally:
            cur.close()
    res = StoreResult(snapshots=ch.snapshots(), samples=ch.samples())
    _repeats(res, ch, {})
    return res, ch.series_ranges()


def _copy(cur: Any, target: str, types: list[str], rows: list[tuple[Any, ...]], *,
          without_k: bool = False) -> None:
    """PostgreSQL: binary COPY of `rows` into `target` (a table and its columns)."""
    if not rows:
        return
    with cur.copy(f"COPY {target} FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(types)
        write = cp.write_row
        if without_k:
            for r in rows:
                write(r[1:])
        else:
            for r in rows:
                write(r)


# Column types of snapshots and samples on PostgreSQL, for binary COPY.
_SNAP_TYPES = ["varchar", "varchar", "timestamptz", "varchar", "text"]
_RECEIVED_SNAP_TYPES = ["varchar", "varchar", "timestamptz", "timestamptz", "varchar", "text"]
_SAMPLE_TYPES = ["int4", "timestamptz", "float8", "float8", "varchar"]
_STAGE_SNAP_TYPES = ["int4", "text", "text", "timestamptz", "text", "text"]
_STAGE_RECEIVED_SNAP_TYPES = ["int4", "text", "text", "timestamptz", "timestamptz", "text", "text"]
_STAGE_SAMPLE_TYPES = ["int4", "timestamptz", "float8", "float8", "text"]

_SQLITE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS bulk_snap (k INTEGER, source TEXT, kind TEXT, "
    "observed_at INTEGER, received_at INTEGER, origin TEXT, payload TEXT)",
    "CREATE TEMP TABLE IF NOT EXISTS bulk_samp (series_id INTEGER, observed_at INTEGER, "
    "value REAL, plan_limit REAL, status TEXT, k INTEGER)",
)
_PG_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS bulk_snap (k integer, source text, kind text, "
    "observed_at timestamptz, received_at timestamptz, origin text, payload text) "
    "ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS bulk_samp (series_id integer, observed_at timestamptz, "
    "value double precision, plan_limit double precision, status text, k integer) "
    "ON COMMIT DELETE ROWS",
)


def _staged(conn: Connection, ch: _Chunk, sqlite: bool) -> tuple[StoreResult, dict[int, tuple[Any, Any]]]:
    """Some keys may be stored already: stage the chunk, classify against what is stored, merge."""
    if not sqlite:
        unpack_spans(conn, ch.series_ranges())
    raw: Any = conn.connection.driver_connection
    cur = raw.cursor()
    try:
        for ddl in _SQLITE_STAGE if sqlite else _PG_STAGE:
            cur.execute(ddl)
        cur.execute("DELETE FROM bulk_snap")
        cur.execute("DELETE FROM bulk_samp")
        snap_cols = "k, source, kind, observed_at, origin, payload"
        received_cols = "k, source, kind, observed_at, received_at, origin, payload"
        sample_cols, bare_cols = "series_id, observed_at, value, plan_limit, status", \
            "series_id, observed_at, value"
        staged = ((f"bulk_snap ({snap_cols})", ch.snap_rows, _STAGE_SNAP_TYPES),
                  (f"bulk_snap ({received_cols})", ch.received_rows, _STAGE_RECEIVED_SNAP_TYPES),
                  (f"bulk_samp ({sample_cols})", ch.sample_rows, _STAGE_SAMPLE_TYPES),
                  (f"bulk_samp ({bare_cols})", ch.bare_rows, _STAGE_SAMPLE_TYPES[:3]))
        for target, rows, types in staged:
            if not rows:
                continue
            if sqlite:
                marks = ", ".join("?" * len(types))
                cur.executemany(f"INSERT INTO {target} VALUES ({marks})", rows)  # noqa: S608
            else:
                _copy(cur, target, types, rows)
        cur.execute(
            "SELECT b.series_id, b.observed_at, s.value FROM bulk_samp b "
            "JOIN samples s ON s.series_id = b.series_id AND s.observed_at = b.observed_at"
        )
        stored: dict[tuple[int, Any], float] = {
            (sid, at): value for sid, at, value in cur.fetchall()
        }
        # SQLite needs the WHERE to tell the upsert clause from a join constraint.
        cur.execute(
            "INSERT INTO snapshots (source, kind, observed_at, received_at, origin, payload) "
            "SELECT source, kind, observed_at, received_at, origin, payload FROM bulk_snap "
            "WHERE true ORDER BY k ON CONFLICT (source, observed_at) DO NOTHING"
        )
        n_snaps = cur.rowcount
        cur.execute(
            "INSERT INTO samples (series_id, observed_at, value, plan_limit, status) "
            "SELECT series_id, observed_at, value, plan_limit, status FROM bulk_samp "
            "WHERE true ON CONFLICT (series_id, observed_at) DO NOTHING"
        )
        n_samples = cur.rowcount
    finally:
        cur.close()
    res = StoreResult(snapshots=n_snaps, samples=n_samples)
    touched: dict[int, tuple[Any, Any]] = {}
    for row in itertools.chain(ch.sample_rows, ch.bare_rows):
        sid, at, value = row[0], row[1], row[2]
        old = stored.get((sid, at))
        if old is None:
            _widen(touched, sid, at)
        elif old == value:
            res.duplicates += 1
        else:
            source, metric = ch.names[sid]
            res.conflicts.append(Conflict(source, metric, _instant(at), old, value))
    _repeats(res, ch, stored)
    return res, touched


def _repeats(res: StoreResult, ch: _Chunk, stored: dict[tuple[int, Any], float]) -> None:
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
            res.conflicts.append(Conflict(source, metric, _instant(at), kept, value))


def _instant(at: Any) -> datetime:
    return from_micros(at) if isinstance(at, int) else at


def _mark(conn: Connection, touched: dict[int, tuple[Any, Any]]) -> None:
    """Tell the rollups which series' time spans changed (same transaction)."""
    if not touched:
        return
    from etl.store.rollups import mark_dirty_raw

    mark_dirty_raw(conn, touched)


def chunks(items: Iterable[Observation], size: int = CHUNK) -> Iterator[list[Observation]]:
    """Split an iterable into lists of at most `size` observations."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
