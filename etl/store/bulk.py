"""Fast bulk writer for archives of millions of observations, below the ORM and Core executemany.

A chunk's rows are built by etl.store.bulk_rows; this module writes them: directly when
nothing is stored where they go, staged where something is, on each engine.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Engine

from etl.store import partitions
from etl.store.bulk_rows import Chunk, count_repeats, instant, instants, partition, prepare, widen
from etl.store.packs import latest_packed, unpack_spans
from etl.store.rows import Conflict, StoreResult
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
        partitions.ensure(engine, instants(batch))
    # Series rows are committed first, so a rolled-back attempt never leaves cached ids of
    # series rows that do not exist.
    with engine.begin() as conn:
        prepared = prepare(conn, batch, sqlite)
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
                    widen(touched, sid, lo)
                    widen(touched, sid, hi)
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
def _series_checked_once(conn: Connection, ch: Chunk, sqlite: bool) -> Iterator[None]:
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


def _check_series(conn: Connection, ch: Chunk, sqlite: bool) -> None:
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


def _split(conn: Connection, ch: Chunk, sqlite: bool) -> tuple[Chunk, Chunk]:
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

    return partition(ch, is_fresh)


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


def _anything_stored(conn: Connection, ch: Chunk, sqlite: bool) -> bool:
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


def _direct(conn: Connection, ch: Chunk, sqlite: bool) -> tuple[StoreResult, dict[int, tuple[Any, Any]]]:
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
    count_repeats(res, ch, {})
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


def _staged(conn: Connection, ch: Chunk, sqlite: bool) -> tuple[StoreResult, dict[int, tuple[Any, Any]]]:
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
            widen(touched, sid, at)
        elif old == value:
            res.duplicates += 1
        else:
            source, metric = ch.names[sid]
            res.conflicts.append(Conflict(source, metric, instant(at), old, value))
    count_repeats(res, ch, stored)
    return res, touched


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
