"""Read what the reports need from the database: series keys, sample arrays, latest snapshots.

Timestamps are read as integer microseconds (SQLite stores them so; PostgreSQL converts
exactly with extract(epoch)) so no per-row Python datetime is ever built.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Connection, Engine, exists, func, or_, select, text

from etl.config import Config
from etl.errors import RetiredHistoryError
from etl.store import packs
from etl.store.models import Sample, Series
from etl.store.retire import retired_before
from etl.timefmt import from_micros, to_micros
from etl.vendors.parsing import MAX_READING

log = logging.getLogger("reports.read")

# The same reads in the drivers' own parameter styles. A missing limit comes back as -inf
# (no vendor sends that as a limit; if one is stored, the chunk is read again exactly), so
# every cell is a number and rows stream straight into one array, no list of tuples.
_NO_LIMIT = float("-inf")
_SQLITE_SAMPLES_RAW = (
    "SELECT observed_at, value, coalesce(plan_limit, -9e999) FROM samples "
    "WHERE series_id = ? AND observed_at >= ? AND observed_at < ? ORDER BY observed_at"
)
_PG_SAMPLES_RAW = (
    "SELECT (extract(epoch FROM observed_at) * 1000000)::bigint, value, "
    "coalesce(plan_limit, '-Infinity'::float8) FROM {src} "
    "WHERE series_id = %s AND observed_at >= %s AND observed_at < %s ORDER BY observed_at"
)
_SQLITE_SAMPLES_EXACT = (
    "SELECT observed_at, value, plan_limit FROM samples "
    "WHERE series_id = ? AND observed_at >= ? AND observed_at < ? ORDER BY observed_at"
)
_PG_SAMPLES_EXACT = (
    "SELECT (extract(epoch FROM observed_at) * 1000000)::bigint, value, plan_limit FROM {src} "
    "WHERE series_id = %s AND observed_at >= %s AND observed_at < %s ORDER BY observed_at"
)
_SQLITE_MINUS_INF = (
    "SELECT count(*) FROM samples WHERE series_id = ? AND observed_at >= ? "
    "AND observed_at < ? AND plan_limit < -1.7e308"
)
_PG_MINUS_INF = (
    "SELECT count(*) FROM {src} WHERE series_id = %s AND observed_at >= %s "
    "AND observed_at < %s AND plan_limit < -1.7e308"
)
_PREV_VALUE = text(
    "SELECT value FROM samples WHERE series_id = :sid AND observed_at < :a "
    "AND abs(value) <= :most ORDER BY observed_at DESC LIMIT 1"
)
_LATEST_PAYLOAD = text(
    "SELECT payload FROM snapshots WHERE source = :source AND observed_at < :b "
    "ORDER BY observed_at DESC LIMIT 1"
)


@dataclass(frozen=True)
class SampleArrays:
    """One series' samples in a time range: epoch microseconds, values, plan limits (NaN)."""

    t: np.ndarray
    value: np.ndarray
    limit: np.ndarray

    def __len__(self) -> int:
        return len(self.t)


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one consistent state of the database.

    Whatever commits meanwhile: REPEATABLE READ on PostgreSQL, one read transaction on
    SQLite (WAL keeps its snapshot). Nothing is written through it; it is rolled back.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        else:
            conn.exec_driver_sql("BEGIN")  # pysqlite would read each SELECT on its own
        try:
            yield conn
        finally:
            conn.rollback()


def series_ids(engine: Engine) -> dict[tuple[str, str], int]:
    """(source, metric) -> series id for every series stored."""
    series = Series.__table__.c  # Core columns: no ORM compile step (nor mapper) to read
    with engine.connect() as conn:
        return {(s, m): i for i, s, m in conn.execute(
            select(series.id, series.source, series.metric))}


def item_series(engine: Engine, source: str, until_us: int) -> list[str]:
    """Return the per-item series (`NAME:KEY`, SPEC 7) of `source` seen before `until_us`.

    In name order: the ones a report over a period ending then has rows for.
    """
    # One query, not one per series: a vendor may have 100,000 items (issue 26).
    until = from_micros(int(until_us))
    with engine.connect() as conn:
        seen: ColumnElement[bool] = exists().where(Sample.series_id == Series.id,
                                                   Sample.observed_at < until)
        if packs.has_packs(conn):
            seen = or_(seen, packs.packed_before(until))
        return list(conn.execute(
            select(Series.metric)
            .where(Series.source == source, Series.metric.contains(":"), seen)
            .order_by(Series.metric)
        ).scalars())


def _source(conn: Connection, start_us: int, end_us: int) -> str:
    # Rows and, on PostgreSQL, the packed days of the period only (etl.store.packs).
    return packs.source_sql(conn, from_micros(int(start_us)), from_micros(int(end_us)))


def _bind(conn: Connection, us: int) -> Any:
    # SQLite holds the raw integers; PostgreSQL compares timestamptz.
    return int(us) if conn.dialect.name == "sqlite" else from_micros(int(us))


def read_samples(conn: Connection, series_id: int, start_us: int, end_us: int) -> SampleArrays:
    """The samples of one series with start_us <= observed_at < end_us, oldest first.

    A stored reading beyond MAX_READING (possible only in history written before that check)
    is left out, with a warning: it cannot be billed, and it must not stop the report.
    """
    sqlite = conn.dialect.name == "sqlite"
    params = (series_id, _bind(conn, start_us), _bind(conn, end_us))
    src = _source(conn, start_us, end_us)
    # The driver's own cursor: at millions of rows, building SQLAlchemy Row objects costs
    # more than the read itself (measured by benchmarks/, see docs/performance.md).
    cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(_SQLITE_SAMPLES_RAW if sqlite else _PG_SAMPLES_RAW.format(src=src), params)
        # One float64 block; epoch microseconds (< 2**53) stay exact.
        flat = np.fromiter(chain.from_iterable(cur), dtype=np.float64)
        block = flat.reshape(-1, 3)
        limit = block[:, 2].copy()
        missing = limit == _NO_LIMIT
        if missing.any():
            if _stored_minus_inf(cur, sqlite, params, src):
                cur.execute(_SQLITE_SAMPLES_EXACT if sqlite else _PG_SAMPLES_EXACT.format(src=src),
                            params)
                block = np.array(cur.fetchall() or np.zeros((0, 3)), dtype=np.float64)
                limit = block[:, 2].copy()
            else:
                limit[missing] = np.nan
    finally:
        cur.close()
    billable = np.abs(block[:, 1]) <= MAX_READING  # NaN and inf are not
    if not billable.all():
        log.warning("series %d: %d stored reading(s) above 10^15 (or not finite) left out of "
                    "the report: too large to bill", series_id, int((~billable).sum()))
        block, limit = block[billable], limit[billable]
    return SampleArrays(block[:, 0].astype(np.int64), block[:, 1].copy(), limit)


@dataclass(frozen=True)
class ManySampleArrays:
    """Samples of several series in a time range, ordered by series id, then time.

    `sid`: each row's series id; the rest as SampleArrays.
    """

    sid: np.ndarray
    t: np.ndarray
    value: np.ndarray
    limit: np.ndarray


def read_samples_many(conn: Connection, series_ids: Sequence[int], start_us: int,
                      end_us: int) -> ManySampleArrays:
    """`read_samples` of many series in one query (a wide vendor's 100,000 series, issue 26).

    The same rows, readings beyond MAX_READING left out with the same warning per series.
    """
    sids = [int(s) for s in series_ids]
    if not sids:
        z = np.zeros(0)
        return ManySampleArrays(z.astype(np.int64), z.astype(np.int64), z, z.copy())
    if conn.dialect.name == "sqlite":
        return _sqlite_many(conn, sids, start_us, end_us)
    return _rows_many(conn, sids, start_us, end_us)


# One row per series: its times, readings and limits as comma-separated integers. SQLite
# returns each sample row to Python one column at a time (and Python 3.11 releases the GIL
# around each), so at millions of samples a row per sample costs several times what the
# scan does; integer text costs SQLite little and numpy parses it in C (docs/performance.md).
# Exact only for integral readings and limits: any other is left out of its list (NULL), so
# the list comes back short and that series is read row by row instead (so is a negative
# limit, which could be taken for the NULL marker).
_NULL_LIMIT = -1  # the marker below: short, and no limit read packed is negative
_EXACT_INT = 2**53
_PACKED = (
    "count(*), group_concat(observed_at), "
    "group_concat(CASE WHEN value = CAST(value AS INTEGER) THEN CAST(value AS INTEGER) END), "
    "group_concat(CASE WHEN plan_limit IS NULL THEN -1 "
    "WHEN plan_limit = CAST(plan_limit AS INTEGER) AND plan_limit >= 0 "
    "THEN CAST(plan_limit AS INTEGER) END) FROM samples WHERE "
)
_SQLITE_PACKED = (
    "SELECT series_id, " + _PACKED + "series_id IN ({marks}) AND observed_at >= ? "
    "AND observed_at < ? GROUP BY series_id ORDER BY series_id"
)
# A few long series: one query each costs SQLite less than grouping (no key per row).
_SQLITE_PACKED_ONE = ("SELECT " + _PACKED
                      + "series_id = ? AND observed_at >= ? AND observed_at < ?")
_FEW_SERIES = 64


def _sqlite_many(conn: Connection, sids: list[int], start_us: int, end_us: int
                 ) -> ManySampleArrays:
    """read_samples_many on SQLite: integral series packed (one row each), the rest as rows."""
    marks = ", ".join(["?"] * len(sids))
    cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if len(sids) <= _FEW_SERIES:
            packed = []
            for sid in sorted(sids):
                cur.execute(_SQLITE_PACKED_ONE, (sid, int(start_us), int(end_us)))
                row = cur.fetchone()
                if row[0]:
                    packed.append((sid, *row))
        else:
            cur.execute(_SQLITE_PACKED.format(marks=marks), (*sids, int(start_us), int(end_us)))
            packed = cur.fetchall()
    except sqlite3.DataError:  # a list longer than SQLite's longest string (1 GB by default)
        return _rows_many(conn, sids, start_us, end_us)
    finally:
        cur.close()
    parts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    odd = []
    for sid, count, times, values, limits in packed:
        got = _unpack(count, times, values, limits)
        if got is None:
            odd.append(int(sid))
        else:
            parts[int(sid)] = got
    if odd:
        rows = _rows_many(conn, odd, start_us, end_us)
        cut = np.searchsorted(rows.sid, np.array(sorted(odd)), side="left").tolist()
        for k, sid in enumerate(sorted(odd)):
            a, b = cut[k], cut[k + 1] if k + 1 < len(cut) else len(rows.sid)
            parts[sid] = (rows.t[a:b], rows.value[a:b], rows.limit[a:b])
    order = sorted(parts)
    if not order:
        z = np.zeros(0)
        return ManySampleArrays(z.astype(np.int64), z.astype(np.int64), z, z.copy())
    sizes = [len(parts[s][0]) for s in order]
    return ManySampleArrays(
        np.repeat(np.array(order, dtype=np.int64), sizes),
        np.concatenate([parts[s][0] for s in order]),
        np.concatenate([parts[s][1] for s in order]),
        np.concatenate([parts[s][2] for s in order]))


def _unpack(count: int, times: str, values: str | None, limits: str | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One packed series' (t, value, limit), or None if its text is not what was asked for."""
    if not (times and values and limits):
        return None
    t = np.fromstring(times, dtype=np.int64, sep=",")
    value = np.fromstring(values, dtype=np.int64, sep=",").astype(np.float64)
    lim = np.fromstring(limits, dtype=np.int64, sep=",")
    if not len(t) == len(value) == len(lim) == count or (count > 1 and bool(
            (np.diff(t) <= 0).any())):
        return None  # group_concat's order is the scan's: checked, not assumed
    none = lim == _NULL_LIMIT
    if (np.abs(value) > MAX_READING).any() or (np.abs(lim[~none]) > _EXACT_INT).any():
        return None  # left out with a warning, or not exact as a float: read as rows
    limit = lim.astype(np.float64)
    limit[none] = np.nan
    return t, value, limit


def _rows_many(conn: Connection, sids: list[int], start_us: int, end_us: int
               ) -> ManySampleArrays:
    """read_samples_many one row per sample (PostgreSQL; SQLite's non-integral series)."""
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    marks = ", ".join([mark] * len(sids))
    when = ("observed_at" if sqlite
            else "(extract(epoch FROM observed_at) * 1000000)::bigint")
    no_limit = "-9e999" if sqlite else "'-Infinity'::float8"
    where = (f"FROM {_source(conn, start_us, end_us)} WHERE series_id IN ({marks}) "
             f"AND observed_at >= {mark} "
             f"AND observed_at < {mark}")
    params = (*sids, _bind(conn, start_us), _bind(conn, end_us))
    cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(f"SELECT series_id, {when}, value, coalesce(plan_limit, {no_limit}) "
                    f"{where} ORDER BY series_id, observed_at", params)
        block = np.fromiter(chain.from_iterable(cur), dtype=np.float64).reshape(-1, 4)
        limit = block[:, 3].copy()
        missing = limit == _NO_LIMIT
        if missing.any():
            cur.execute(f"SELECT count(*) {where} AND plan_limit < -1.7e308", params)
            if cur.fetchone()[0]:
                cur.execute(f"SELECT series_id, {when}, value, plan_limit {where} "
                            "ORDER BY series_id, observed_at", params)
                block = np.array(cur.fetchall() or np.zeros((0, 4)), dtype=np.float64)
                limit = block[:, 3].copy()
            else:
                limit[missing] = np.nan
    finally:
        cur.close()
    sid = block[:, 0].astype(np.int64)
    billable = np.abs(block[:, 2]) <= MAX_READING
    if not billable.all():
        left_out = sid[~billable]
        for one in np.unique(left_out).tolist():
            log.warning("series %d: %d stored reading(s) above 10^15 (or not finite) left out "
                        "of the report: too large to bill", one, int((left_out == one).sum()))
        block, limit, sid = block[billable], limit[billable], sid[billable]
    return ManySampleArrays(sid, block[:, 1].astype(np.int64), block[:, 2].copy(), limit)


def read_prev_values(conn: Connection, series_ids: Sequence[int], before_us: int
                     ) -> dict[int, float]:
    """`read_prev_value` of many series in one query: id -> value (none: left out)."""
    sids = [int(s) for s in series_ids]
    if not sids:
        return {}
    inner = (select(Sample.value)
             .where(Sample.series_id == Series.id,
                    Sample.observed_at < from_micros(int(before_us)),
                    func.abs(Sample.value) <= MAX_READING)
             .order_by(Sample.observed_at.desc()).limit(1).scalar_subquery())
    rows = conn.execute(select(Series.id, inner).where(Series.id.in_(sids)))
    out = {int(i): float(v) for i, v in rows if v is not None}
    _newer_packed(conn, out, sids, before_us)
    return out


def _newer_packed(conn: Connection, out: dict[int, float], sids: Sequence[int],
                  before_us: int) -> None:
    """Put in `out` the packed last values before `before_us` newer than the rows' ones."""
    before = from_micros(int(before_us))
    found = packs.latest_packed(conn, sids, before, MAX_READING)
    if not found:
        return
    at = {}
    if any(sid in out for sid in found):
        at = dict(conn.execute(
            select(Series.id, select(func.max(Sample.observed_at)).where(
                Sample.series_id == Series.id, Sample.observed_at < before,
                func.abs(Sample.value) <= MAX_READING).scalar_subquery())
            .where(Series.id.in_(list(found)))).all())
    for sid, (when, value, _limit) in found.items():
        if sid not in out or at.get(sid) is None or when > at[sid]:
            out[sid] = value


def _stored_minus_inf(cur: Any, sqlite: bool, params: tuple[Any, ...], src: str) -> bool:
    cur.execute(_SQLITE_MINUS_INF if sqlite else _PG_MINUS_INF.format(src=src), params)
    return bool(cur.fetchone()[0])


def read_series_samples(conn: Connection, keys: Iterable[tuple[str, str]], start_us: int,
                        end_us: int) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(times in epoch us, values) of each stored (source, metric) in [start_us, end_us).

    For quantities no day rollup can give (a month's p95 needs every reading); series that
    are not stored are left out. `conn` is the report's read_snapshot(), so these samples
    and the report's day rows come from one state of the database.
    """
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    ids = series_ids(conn.engine)
    out = {}
    for key in wanted:
        if key in ids:
            arr = read_samples(conn, ids[key], start_us, end_us)
            out[key] = (arr.t, arr.value)
    return out


def refuse_retired(engine: Engine, sids: Sequence[int], start_us: int) -> None:
    """Raise RetiredHistoryError if a period from `start_us` (epoch us) needs retired samples.

    SPEC 13: a retired period is said so in one line, never shown as zeros.
    """
    with engine.connect() as conn:
        retired = retired_before(conn)
    cuts = [retired[s] for s in sids if s in retired and to_micros(retired[s]) > start_us]
    if cuts:
        raise RetiredHistoryError(max(cuts))


def read_prev_value(conn: Connection, series_id: int, before_us: int) -> float | None:
    """The value of the series' last sample before `before_us` (None if there is none)."""
    row = conn.execute(_PREV_VALUE, {"sid": series_id, "a": _bind(conn, before_us),
                                     "most": MAX_READING}).first()
    out = {} if row is None else {series_id: float(row[0])}
    _newer_packed(conn, out, [series_id], before_us)
    return out.get(series_id)


def latest_payload(engine: Engine, source: str, before: datetime) -> dict[str, Any] | None:
    """The JSON body of the source's latest snapshot before `before`, if any parses."""
    with engine.connect() as conn:
        b = to_micros(before) if conn.dialect.name == "sqlite" else before
        row = conn.execute(_LATEST_PAYLOAD, {"source": source, "b": b}).first()
    if row is None:
        return None
    try:
        body = json.loads(row[0])
    except (TypeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def source_snapshots(engine: Engine, config: Config, before: datetime) -> list[dict[str, Any]]:
    """Per source whose kind names display fields: those body fields of its latest snapshot.

    One dict per such source, in config order: source, kind, `fields` (label, text) for the
    kind's display fields (etl.vendors.VendorKind.display_fields, "" when absent) and the
    body's timestamp; the HTML reports show them (escaped: it is vendor text).
    """
    found = []
    for src in config.sources:
        fields = src.vendor.display_fields
        if not fields:
            continue
        body = latest_payload(engine, src.name, before) or {}
        found.append({
            "source": src.name, "kind": src.kind,
            "fields": [(label, str(body.get(key, ""))) for label, key in fields.items()],
            "observed_at": str(body.get("timestamp", "")),
        })
    return found
