"""Packed samples on PostgreSQL (SPEC 13): compacted days held as one row per series and UTC day.

A row of `samples` costs PostgreSQL about 90 bytes (tuple header, line pointer, primary-key
entry) for 20-odd bytes of data. Once a UTC day's raw responses are archived, compaction
moves each snapshot-style series' samples of that day into one `sample_packs` row: their
instants, values, plan limits and statuses as four arrays, which PostgreSQL compresses into
TOAST (docs/performance.md). History buckets (bucket_end, fetched_at, revisions) stay rows.

Invariants: a (series, UTC day) is either rows or one pack, never both; a pack is never
empty and its arrays are in time order. Every write into a packed day unpacks it first, in
the writer's transaction (`unpack_spans`), so the writers' rules see rows only. Every read
goes through `source_sql` / `samples_from` (a range) or the `latest_*` helpers here.
SQLite keeps rows (its rows are already small): every helper is then the plain table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    String,
    and_,
    column,
    exists,
    literal_column,
    table,
    text,
)
from sqlalchemy.sql import ColumnElement, FromClause

from etl.store.models import Sample, Series, UtcDateTime
from etl.timefmt import month_start, next_month

TABLE = "sample_packs"
DEFAULT_PARTITION = "sample_packs_default"
DAY = timedelta(hours=24)
# The columns every reader of samples sees, in the table's order.
COLUMNS = ("series_id", "observed_at", "value", "plan_limit", "status", "bucket_end",
           "fetched_at", "revisions")
_UNNEST = ("unnest(p.observed_at, p.value, p.plan_limit, p.status) "
           "AS u(observed_at, value, plan_limit, status)")


def day_floor(at: datetime) -> datetime:
    """UTC midnight at or before `at` (a pack holds one UTC day)."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


# Databases (by URL) known to have the packs table: asked once per process, as every read
# and write asks; forgotten when migration 0010's down drops it.
_known: set[str] = set()


def _url(conn: Connection) -> str:
    return conn.engine.url.render_as_string(hide_password=True)


def has_packs(conn: Connection) -> bool:
    """Whether this database has the packs table (PostgreSQL from migration 0010)."""
    if conn.dialect.name != "postgresql":
        return False
    if _url(conn) in _known:
        return True
    found = bool(conn.exec_driver_sql("SELECT to_regclass('sample_packs') IS NOT NULL").scalar())
    if found:
        _known.add(_url(conn))
    return found


def newest_samples(conn: Connection) -> list[tuple[Any, ...]]:
    """Per series, its newest sample, rows or packed, in one statement (alerts, /metrics).

    (source, metric, metric_type, observed_at, value, plan_limit); series without samples
    have None for the last three. Per series one primary-key lookup in the rows and one
    read of its newest pack.
    """
    rows = conn.exec_driver_sql(
        "SELECT s.source, s.metric, s.metric_type, x.observed_at, x.value, x.plan_limit "
        "FROM series s LEFT JOIN LATERAL (SELECT * FROM ("
        "(SELECT observed_at, value, plan_limit FROM samples WHERE series_id = s.id "
        "ORDER BY observed_at DESC LIMIT 1) UNION ALL "
        "(SELECT p.observed_at[cardinality(p.observed_at)], p.value[cardinality(p.value)], "
        "p.plan_limit[cardinality(p.plan_limit)] FROM sample_packs p WHERE p.series_id = s.id "
        "ORDER BY p.day DESC LIMIT 1)) c ORDER BY observed_at DESC LIMIT 1) x ON true")
    return [(*head, None if at is None else at.astimezone(UTC), value, limit)
            for *head, at, value, limit in rows]


# The packs table for SQLAlchemy expressions (not a model: SQLite has no such table).
_PACKS = table(TABLE, column("series_id"), column("day"))


def packed_before(until: datetime) -> ColumnElement[bool]:
    """A condition on `series.id`: the series has a packed sample before `until`."""
    first: ColumnElement[datetime] = literal_column("sample_packs.observed_at[1]")
    return exists().where(and_(_PACKS.c.series_id == Series.id, _PACKS.c.day < until,
                               first < until))


def _lit(at: datetime) -> str:
    # Built from a datetime, never from input: a timestamptz literal.
    return f"'{at.astimezone(UTC).isoformat()}'::timestamptz"


def source_sql(conn: Connection, lo: datetime | None = None, hi: datetime | None = None) -> str:
    """A FROM item named `samples` holding every sample (rows and packs) in [lo, hi).

    `samples` itself on SQLite or without packs. Otherwise the rows and the packs of the
    days reaching into [lo, hi), unpacked, as one UNION ALL: the day bounds are written
    into the packs' branch, so a month's read decodes only that month's packs (the
    caller's own bounds on observed_at apply to both branches). Columns: COLUMNS.
    """
    if not has_packs(conn):
        return "samples"
    where = []
    if lo is not None:
        where.append(f"p.day >= {_lit(day_floor(lo))}")
    if hi is not None:
        where.append(f"p.day < {_lit(hi)}")
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    return ("(SELECT series_id, observed_at, value, plan_limit, status::text AS status, "  # noqa: S608
            "bucket_end, fetched_at, revisions FROM samples UNION ALL "
            "SELECT p.series_id, u.observed_at, u.value, u.plan_limit, u.status, "
            "NULL::timestamptz, NULL::timestamptz, NULL::integer "
            f"FROM sample_packs p CROSS JOIN LATERAL {_UNNEST}{cond}) samples")


def samples_from(conn: Connection, lo: datetime | None = None,
                 hi: datetime | None = None) -> FromClause:
    """`source_sql` as a SQLAlchemy FROM item with Sample's columns and types.

    The samples table itself when nothing is packed (SQLite, or no packs table).
    """
    sql = source_sql(conn, lo, hi)
    if sql == "samples":
        return Sample.__table__
    inner = sql[1:sql.rindex(")")]
    return text(inner).columns(
        series_id=Integer(), observed_at=UtcDateTime(), value=Float(), plan_limit=Float(),
        status=String(), bucket_end=UtcDateTime(), fetched_at=UtcDateTime(),
        revisions=Integer()).subquery("samples")


def latest_packed(conn: Connection, sids: Iterable[int], before: datetime | None = None,
                  most: float | None = None) -> dict[int, tuple[datetime, float, float | None]]:
    """Per series: its newest packed sample (before `before`; |value| <= `most`).

    series id -> (observed_at, value, plan_limit); series with none are left out. Packs
    are read newest day first and stop at the first day holding one (an index scan and an
    incremental sort), so a year of packs costs one or two decoded days.
    """
    ids = [int(s) for s in sids]
    if not ids or not has_packs(conn):
        return {}
    conds = ["p.series_id = s.id"]
    if before is not None:
        conds += [f"p.day < {_lit(before)}", f"u.observed_at < {_lit(before)}"]
    if most is not None:
        conds.append(f"abs(u.value) <= {float(most)!r}")
    rows = conn.exec_driver_sql(
        "SELECT s.id, x.observed_at, x.value, x.plan_limit FROM unnest(%(ids)s::integer[]) "  # noqa: S608
        "AS s(id) CROSS JOIN LATERAL (SELECT u.observed_at, u.value, u.plan_limit "
        "FROM sample_packs p CROSS JOIN LATERAL unnest(p.observed_at, p.value, p.plan_limit) "
        "WITH ORDINALITY AS u(observed_at, value, plan_limit, i) "
        f"WHERE {' AND '.join(conds)} "
        "ORDER BY p.day DESC, u.i DESC LIMIT 1) x", {"ids": ids})
    return {int(sid): (at.astimezone(UTC), float(v), lim) for sid, at, v, lim in rows}


def oldest_packed(conn: Connection, sids: Iterable[int]) -> datetime | None:
    """The instant of the oldest packed sample of these series (None: none packed)."""
    ids = [int(s) for s in sids]
    if not ids or not has_packs(conn):
        return None
    found = conn.exec_driver_sql(
        "SELECT observed_at[1] FROM sample_packs WHERE series_id = ANY(%(ids)s::integer[]) "
        "ORDER BY day LIMIT 1", {"ids": ids}).scalar()
    return None if found is None else found.astimezone(UTC)  # type: ignore[no-any-return]


def packed_between(conn: Connection, sids: Iterable[int], lo: datetime, hi: datetime) -> bool:
    """Whether these series have a pack of a UTC day reaching into [lo, hi)."""
    ids = [int(s) for s in sids]
    if not ids or not has_packs(conn):
        return False
    return conn.exec_driver_sql(
        "SELECT 1 FROM sample_packs WHERE series_id = ANY(%(ids)s::integer[]) AND day >= %(lo)s "
        "AND day < %(hi)s LIMIT 1", {"ids": ids, "lo": day_floor(lo), "hi": hi}).first() is not None


def retire_before(conn: Connection, sid: int, keep: datetime) -> int:
    """Delete one series' packed samples before `keep` (retirement, etl.store.retire).

    Packs of whole days before go; the pack of `keep`'s day becomes rows again, for the
    caller's delete of rows. Returns the packed samples deleted.
    """
    if not has_packs(conn):
        return 0
    day = day_floor(keep)
    unpack_where(conn, "p.series_id = %(s)s AND p.day = %(d)s", {"s": sid, "d": day})
    gone = conn.exec_driver_sql(
        "DELETE FROM sample_packs WHERE series_id = %(s)s AND day < %(d)s "
        "RETURNING cardinality(observed_at)", {"s": sid, "d": day})
    return sum(int(n) for (n,) in gone)


def first_packed_after(conn: Connection, sids: Iterable[int],
                       after: datetime) -> dict[int, datetime]:
    """Per series: the instant of its oldest packed sample later than `after` (none: left out)."""
    ids = [int(s) for s in sids]
    if not ids or not has_packs(conn):
        return {}
    rows = conn.exec_driver_sql(
        "SELECT s.id, x.observed_at FROM unnest(%(ids)s::integer[]) AS s(id) "  # noqa: S608
        "CROSS JOIN LATERAL (SELECT u.observed_at "
        "FROM sample_packs p CROSS JOIN LATERAL unnest(p.observed_at) WITH ORDINALITY "
        f"AS u(observed_at, i) WHERE p.series_id = s.id AND p.day >= {_lit(day_floor(after))} "
        f"AND u.observed_at > {_lit(after)} ORDER BY p.day, u.i LIMIT 1) x", {"ids": ids})
    return {int(sid): at.astimezone(UTC) for sid, at in rows}


def packed_summary(conn: Connection) -> dict[int, tuple[int, datetime, datetime]]:
    """Per series with packs: (packed samples, first instant, last instant).

    Counts come from the arrays' headers; only each series' first and last packs are read.
    """
    if not has_packs(conn):
        return {}
    rows = conn.exec_driver_sql(
        "SELECT series_id, sum(cardinality(observed_at)), min(day), max(day) FROM sample_packs "
        "GROUP BY series_id").all()
    out: dict[int, tuple[int, datetime, datetime]] = {}
    for sid, n, first_day, last_day in rows:
        first, last = conn.exec_driver_sql(
            "SELECT (SELECT observed_at[1] FROM sample_packs WHERE series_id = %(s)s AND day = %(a)s), "
            "(SELECT observed_at[cardinality(observed_at)] FROM sample_packs "
            "WHERE series_id = %(s)s AND day = %(b)s)",
            {"s": sid, "a": first_day, "b": last_day}).one()
        out[int(sid)] = (int(n), first.astimezone(UTC), last.astimezone(UTC))
    return out


def unpack_spans(conn: Connection, spans: Mapping[int, tuple[datetime, datetime]]) -> int:
    """Turn the packs of the UTC days reaching [lo, hi] of each series back into rows.

    Called by every writer in its own transaction before it looks at or writes samples
    (`series id -> (lo, hi)`, inclusive); returns the samples unpacked. A no-op without
    packs, so on SQLite.
    """
    if not spans or not has_packs(conn):
        return 0
    sids, los, his = [], [], []
    for sid, (lo, hi) in spans.items():
        sids.append(int(sid))
        los.append(day_floor(lo))
        his.append(hi)
    return unpack_where(conn, "(p.series_id, p.day) IN (SELECT k.sid, d.day FROM unnest("
                        "%(sids)s::integer[], %(los)s::timestamptz[], %(his)s::timestamptz[]) "
                        "AS k(sid, lo, hi) CROSS JOIN LATERAL (SELECT day FROM "
                        "sample_packs q WHERE q.series_id = k.sid AND q.day >= k.lo "
                        "AND q.day <= k.hi) d)",
                        {"sids": sids, "los": los, "his": his})


def unpack_where(conn: Connection, where: str, params: dict[str, Any] | None = None) -> int:
    """Unpack the packs `p` matching `where` into rows (one statement); samples unpacked."""
    result = conn.exec_driver_sql(
        f"WITH gone AS (DELETE FROM sample_packs p WHERE {where} RETURNING p.*) "  # noqa: S608
        "INSERT INTO samples (series_id, observed_at, value, plan_limit, status) "
        "SELECT g.series_id, u.observed_at, u.value, u.plan_limit, u.status "
        "FROM gone g CROSS JOIN LATERAL unnest(g.observed_at, g.value, g.plan_limit, "
        "g.status) AS u(observed_at, value, plan_limit, status)", params or {})
    return int(result.rowcount or 0)


def pack(engine: Engine, before: datetime) -> int:
    """Pack the snapshot-style samples of the whole UTC days before `before`; samples packed.

    One series-month per transaction (bounded, and a kill leaves each day rows or a pack);
    days holding a history bucket stay rows. A no-op without packs (SQLite).
    """
    hi = day_floor(before)
    packed = 0
    with engine.connect() as conn:
        if not has_packs(conn):
            return 0
        spans = conn.exec_driver_sql(
            "SELECT s.id, a.observed_at, b.observed_at FROM series s "
            "CROSS JOIN LATERAL (SELECT observed_at FROM samples WHERE series_id = s.id "
            "AND bucket_end IS NULL AND observed_at < %(hi)s ORDER BY observed_at LIMIT 1) a "
            "CROSS JOIN LATERAL (SELECT observed_at FROM samples WHERE series_id = s.id "
            "AND observed_at < %(hi)s ORDER BY observed_at DESC LIMIT 1) b ORDER BY s.id",
            {"hi": hi}).all()
    for sid, first, last in spans:
        month = month_start(first)
        while month <= last:
            end = min(next_month(month), hi)
            with engine.begin() as conn:
                packed += _pack_span(conn, int(sid), max(month, day_floor(first)), end)
            month = next_month(month)
    return packed


def _pack_span(conn: Connection, sid: int, lo: datetime, hi: datetime) -> int:
    """Pack one series' whole days in [lo, hi) (UTC midnights) into one pack per day."""
    result = conn.exec_driver_sql(
        "WITH days AS (SELECT date_trunc('day', observed_at, 'UTC') AS day FROM samples "
        "WHERE series_id = %(s)s AND observed_at >= %(lo)s AND observed_at < %(hi)s "
        "GROUP BY 1 HAVING bool_and(bucket_end IS NULL AND fetched_at IS NULL "
        "AND revisions IS NULL)), "
        "moved AS (DELETE FROM samples x USING days d WHERE x.series_id = %(s)s "
        "AND x.observed_at >= d.day AND x.observed_at < d.day + interval '24 hours' "
        "RETURNING x.observed_at, x.value, x.plan_limit, x.status) "
        "INSERT INTO sample_packs (series_id, day, observed_at, value, plan_limit, status) "
        "SELECT %(s)s, date_trunc('day', observed_at, 'UTC'), "
        "array_agg(observed_at ORDER BY observed_at), array_agg(value ORDER BY observed_at), "
        "array_agg(plan_limit ORDER BY observed_at), "
        "array_agg(status::text ORDER BY observed_at) FROM moved GROUP BY 2 "
        "RETURNING cardinality(observed_at)", {"s": sid, "lo": lo, "hi": hi})
    return sum(int(n) for (n,) in result)


def create(conn: Connection, partitioned: bool) -> None:
    """The packs table (migration 0010): partitioned by month like samples when it is."""
    conn.exec_driver_sql(
        "CREATE TABLE sample_packs (day timestamptz NOT NULL, series_id integer NOT NULL, "
        "observed_at timestamptz[] NOT NULL, value float8[] NOT NULL, "
        "plan_limit float8[] NOT NULL, status text[] NOT NULL, "
        "CONSTRAINT pk_sample_packs PRIMARY KEY (series_id, day) WITH (fillfactor = 100), "
        "CONSTRAINT fk_sample_packs_series_id_series FOREIGN KEY (series_id) REFERENCES series (id))"
        + (" PARTITION BY RANGE (day)" if partitioned else ""))
    if partitioned:
        conn.exec_driver_sql(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF sample_packs DEFAULT")


def drop(conn: Connection) -> int:
    """Unpack every pack back into rows and drop the table (migration 0010's down)."""
    n = unpack_where(conn, "true")
    conn.exec_driver_sql("DROP TABLE sample_packs")
    _known.discard(_url(conn))
    return n
