"""Daily rollups: per-(series, timezone, day) report rows kept fresh as samples arrive.

Every write marks the UTC span it touched per series as dirty (cheap, in the writer's
transaction). Before reports read rollups, `invalidate_dirty` drops the rollup rows whose
figures those spans can change; the reports then recompute only the missing days.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Integer, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from etl.store.engine import refuses_writes
from etl.store.models import RollupDay, RollupDirty, Sample, Series, Snapshot
from etl.store.packs import first_packed_after
from etl.store.rollup_rows import (  # noqa: F401 - decode_row, gc_paused: where callers look
    decode_groups,
    decode_row,
    decode_rows,
    gc_paused,
)
from etl.textutil import first_line
from etl.timefmt import from_micros

log = logging.getLogger("etl.store.rollups")


def mark_dirty(conn: Connection, spans: Mapping[int, tuple[datetime, datetime]]) -> None:
    """Record that samples of each series id were written between the two instants."""
    if spans:
        conn.execute(
            insert(RollupDirty),
            [{"series_id": sid, "start_at": lo, "end_at": hi} for sid, (lo, hi) in spans.items()],
        )


def mark_dirty_raw(conn: Connection, spans: Mapping[int, tuple[Any, Any]]) -> None:
    """`mark_dirty` for spans in the database's own representation (used by etl.store.bulk)."""
    if conn.dialect.name == "sqlite":
        cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.executemany(
                "INSERT INTO rollup_dirty (series_id, start_at, end_at) VALUES (?, ?, ?)",
                [(sid, lo, hi) for sid, (lo, hi) in spans.items()],
            )
        finally:
            cur.close()
        return
    mark_dirty(conn, {sid: (_aware(lo), _aware(hi)) for sid, (lo, hi) in spans.items()})


def _aware(value: Any) -> datetime:
    return from_micros(value) if isinstance(value, int) else value


def invalidate_dirty(engine: Engine) -> int:
    """Drop the rollup rows that the spans marked dirty can change; returns how many.

    A new or late sample changes its own day, the days its staleness window reaches (its
    coverage), and the day of the series' next sample (whose counter increase now starts
    from it).
    """
    with engine.begin() as conn:
        dirty = RollupDirty.__table__.c  # Core columns: no ORM compile for a read (see below)
        spans = conn.execute(
            select(dirty.id, dirty.series_id, dirty.start_at, dirty.end_at)).all()
        if not spans:
            return 0
        merged: dict[int, tuple[datetime, datetime]] = {}
        for _, sid, lo, hi in spans:
            old = merged.get(sid)
            merged[sid] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        # Series with the same span in one statement: one poll of a wide vendor marks its
        # 100,000 series with one span (issue 26), one statement per series took minutes.
        by_span: dict[tuple[datetime, datetime], list[int]] = {}
        for sid, span in merged.items():
            by_span.setdefault(span, []).append(sid)
        dropped = 0
        by_next: dict[datetime, list[int]] = {}
        for (lo, hi), sids in by_span.items():
            for k in range(0, len(sids), 500):
                part = sids[k:k + 500]
                # The widest staleness among these series' own rows, through the primary
                # key (series_id first): never a scan of every series' rollups.
                most = conn.scalar(select(func.max(RollupDay.staleness))
                                   .where(RollupDay.series_id.in_(part)))
                if most is None:  # none of them rolled up: nothing to invalidate
                    continue
                reach = timedelta(seconds=float(most))
                dropped += conn.execute(
                    delete(RollupDay).where(
                        RollupDay.series_id.in_(part), RollupDay.day_end > lo,
                        RollupDay.day_start <= hi + reach,
                    )
                ).rowcount
                for sid, at in _next_samples(conn, part, hi).items():
                    by_next.setdefault(at, []).append(sid)
        for nxt_at, sids in by_next.items():
            for k in range(0, len(sids), 500):
                dropped += conn.execute(
                    delete(RollupDay).where(
                        RollupDay.series_id.in_(sids[k:k + 500]), RollupDay.day_start <= nxt_at,
                        RollupDay.day_end > nxt_at,
                    )
                ).rowcount
        conn.execute(delete(RollupDirty).where(RollupDirty.id <= max(s[0] for s in spans)))
        return dropped


def _next_samples(conn: Connection, sids: list[int], after: datetime) -> dict[int, datetime]:
    """Per series: the instant of its first sample after `after` (none: left out)."""
    nxt = (select(Sample.observed_at)
           .where(Sample.series_id == Series.id, Sample.observed_at > after)
           .order_by(Sample.observed_at).limit(1).scalar_subquery())
    found = {sid: at for sid, at in conn.execute(
        select(Series.id, nxt).where(Series.id.in_(sids))) if at is not None}
    # A packed day (PostgreSQL, etl.store.packs) may hold the next sample.
    for sid, at in first_packed_after(conn, sids, after).items():
        if sid not in found or at < found[sid]:
            found[sid] = at
    return found


class RollupStore:
    """The stored day rows of one timezone over a range, and the ones computed meanwhile.

    Create it before reading (it applies the dirty spans first), `get` what is there,
    `put` what had to be computed, `flush` to store those.

    Rollups are a cache: a report never needs the write lock just to read. When the dirty
    spans cannot be applied (SQLite locked past its busy timeout, a lock wait on
    PostgreSQL, a read-only database: a SELECT-only login, a hot standby, a SQLite file that
    cannot be written), no stored row is trusted and every day is computed from the samples;
    when the computed rows cannot be stored, they are not (SPEC 3 amended). Either way one warning says that
    nothing was cached, and `cached` is False.
    """

    # Series named one by one in the read, at most (more: every series' rows are read).
    MOST_NAMED = 1000

    def __init__(self, engine: Engine, tz: str, start_us: int, end_us: int,
                 series_ids: Sequence[int] | None = None) -> None:
        """`series_ids`: the series whose rows will be asked for (default: every series)."""
        self.engine = engine
        self.tz = tz
        self.cached = True
        self._rows: dict[tuple[int, str], tuple[float, dict[str, Any] | None]] = {}
        # Or, read a series at a time: its staleness, days and rows (see _read_grouped).
        self._series: dict[int, tuple[float, list[str], list[dict[str, Any] | None]]] = {}
        self._new: dict[tuple[int, str], dict[str, Any]] = {}
        self._watermark = 0
        try:
            invalidate_dirty(engine)
        except DBAPIError as exc:
            if not _cache_refused(exc):
                raise
            self._give_up(exc)
            return
        # Every write adds a snapshot row (ids only grow): one committed after this point,
        # which the report's reads may have missed, makes its rows unfit to keep.
        self._watermark = _last_snapshot_id(engine)
        # Series by series through the primary key (series_id, tz, day), the days bounded by
        # the period's (a local day is within a day of its UTC date): what the period holds,
        # however many years of rows the table keeps. day_start is the exact test.
        lo_day = (from_micros(start_us) - timedelta(days=2)).date().isoformat()
        hi_day = (from_micros(end_us) + timedelta(days=2)).date().isoformat()
        # A report of some series (a billing report's billed ones) reads only theirs.
        # Core columns, not the ORM's: a report's reads need no mapper (configuring the
        # models and the ORM's compile step were 3 % of a warm month's reports).
        day = RollupDay.__table__.c
        owned = (day.series_id.in_(sorted(set(series_ids)))
                 if series_ids is not None and len(series_ids) <= self.MOST_NAMED
                 else day.series_id.in_(select(Series.__table__.c.id).scalar_subquery()))
        where = (owned, day.tz == tz, day.day >= lo_day, day.day <= hi_day,
                 day.day_start >= from_micros(start_us), day.day_start < from_micros(end_us))
        with engine.connect() as conn:
            grouped = _read_grouped(conn, where) if conn.dialect.name == "sqlite" else None
            if grouped is not None:
                self._series = grouped
                return
            found = conn.execute(
                select(day.series_id, day.day, day.staleness, day.data).where(*where)).all()
        # Decoded here, all at once (one orjson call for a month's 15,000 rows, not one each).
        self._rows = {(sid, day): (stale, row) for (sid, day, stale, _), row in zip(
            found, decode_rows([data for *_, data in found]), strict=True)}

    def get(self, series_id: int, days: Sequence[str], staleness_s: float
            ) -> list[dict[str, Any]] | None:
        """The stored rows of these days, or None if any is missing or was built otherwise.

        The rows are the store's own (decoded once): read them, never change them.
        """
        if not self.cached:
            return None
        if (kept := self._series.get(series_id)) is not None:
            stale, stored, kept_rows = kept
            if stale != staleness_s:
                return None
            found = (list(kept_rows) if stored == days  # the period's days in order (common)
                     else list(map(dict(zip(stored, kept_rows, strict=True)).get, days)))
            return None if None in found else found  # type: ignore[return-value]
        out = []
        rows = self._rows
        for day in days:
            hit = rows.get((series_id, day))
            if hit is None or hit[0] != staleness_s or hit[1] is None:
                return None
            out.append(hit[1])
        return out

    def put(self, series_id: int, days: Sequence[str], bounds: Sequence[int],
            staleness_s: float, rows: Sequence[dict[str, Any]]) -> None:
        """Remember freshly computed rows of these days (bounds: len(days) + 1 instants, us)."""
        for i, (day, row) in enumerate(zip(days, rows, strict=True)):
            self._new[(series_id, day)] = {
                "series_id": series_id, "tz": self.tz, "day": day,
                "day_start": from_micros(int(bounds[i])),
                "day_end": from_micros(int(bounds[i + 1])),
                "staleness": staleness_s, "data": json.dumps(row),
            }

    def flush(self) -> None:
        """Store what `put` collected (replacing rows of the same days)."""
        if not self._new or not self.cached:
            self._new.clear()
            return
        rows = sorted(self._new.values(), key=lambda r: (r["series_id"], r["day"]))
        self._new.clear()
        try:
            self._store(rows)
        except DBAPIError as exc:
            if not _cache_refused(exc):
                raise
            self._give_up(exc)

    def _store(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            if _last_snapshot_id(conn) != self._watermark:
                return  # a write landed since the reads began: the next report computes anew
            by_series: dict[int, list[str]] = {}
            for row in rows:
                by_series.setdefault(row["series_id"], []).append(row["day"])
            # Series with the same days in one statement: a wide vendor's 100,000 series
            # cost 100,000 DELETEs one by one (issue 26).
            by_days: dict[tuple[str, ...], list[int]] = {}
            for sid, days in by_series.items():
                by_days.setdefault(tuple(days), []).append(sid)
            for days_key, sids in by_days.items():
                days = list(days_key)
                for i in range(0, len(days), 500):
                    for k in range(0, len(sids), 500):
                        conn.execute(delete(RollupDay).where(
                            RollupDay.series_id.in_(sids[k:k + 500]), RollupDay.tz == self.tz,
                            RollupDay.day.in_(days[i:i + 500])))
            conn.execute(_upsert(conn), rows)

    def _give_up(self, exc: DBAPIError) -> None:
        self.cached = False
        error = first_line(exc)
        # An event for the daemon's structured log (etl.runtime.logs), a line for the CLI.
        log.warning("report built from the samples, nothing cached: the daily rollups could "
                    "not be updated (%s)", error,
                    extra={"event": "rollups-not-cached", "fields": {"error": error}})


def _read_grouped(conn: Connection, where: Sequence[Any]
                  ) -> dict[int, tuple[float, list[str], list[dict[str, Any] | None]]] | None:
    """SQLite: the stored rows `where` selects, a row per series (its days and texts joined).

    Python's sqlite3 hands back each column of each row at a cost (the GIL released and
    taken again): a month of 300 series is 9,000 rows one by one, 300 this way. None where
    only a row-by-row read is sure: a series stored with several stalenesses, a row whose
    text does not start with "{", rows decode_groups cannot read at once.
    """
    day = RollupDay.__table__.c
    try:
        found = conn.execute(
            select(day.series_id, func.min(day.staleness), func.max(day.staleness), func.count(),
                   func.sum(func.unicode(day.data) == 123, type_=Integer),  # starting with "{"
                   func.group_concat(day.day, ","), func.group_concat(day.data, ","))
            .where(*where).group_by(day.series_id)).all()
    except DataError:  # a series' rows longer than SQLite's longest string (1 GB by default)
        return None
    days = [joined.split(",") for *_, joined, _ in found]
    if any(lo != hi or opening != count or len(named) != count
           for (_, lo, hi, count, opening, _, _), named in zip(found, days, strict=True)):
        return None
    rows = decode_groups([texts for *_, texts in found], [count for _, _, _, count, *_ in found])
    if rows is None:
        return None
    return {sid: (stale, named, got) for (sid, stale, *_), named, got in zip(
        found, days, rows, strict=True)}


def _cache_refused(exc: DBAPIError) -> bool:
    """A lock not granted in time, or a read-only database (SPEC 3 amended): compute, not cache."""
    return isinstance(exc, OperationalError) or refuses_writes(exc)


def _last_snapshot_id(bind: Engine | Connection) -> int:
    stmt = select(func.max(Snapshot.__table__.c.id))
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return int(conn.scalar(stmt) or 0)
    return int(bind.scalar(stmt) or 0)


def _upsert(conn: Connection) -> Any:
    """INSERT of rollup rows that replaces a row another report stored meanwhile.

    Two cold reports of one day at once (replicas' nightly jobs) store the same figures:
    never a duplicate key.
    """
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = dialect_insert(RollupDay)
    keys = ("series_id", "tz", "day")
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: stmt.excluded[c] for c in ("day_start", "day_end", "staleness", "data")})
