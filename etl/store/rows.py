"""The row-level parts every writer shares: series ids (cached per engine), insert-or-ignore, results."""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select

from etl.store.identity import generation
from etl.store.models import Series
from etl.vendors import KINDS
from etl.vendors.types import SampleValue


@dataclass(frozen=True)
class Conflict:
    """A sample whose key is stored already with another value; the stored one wins."""

    source: str
    metric: str
    observed_at: datetime
    stored: float
    offered: float


@dataclass
class StoreResult:
    """What storing did: new snapshots and samples, duplicates, conflicts, retired (left out)."""
    snapshots: int = 0
    samples: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    retired: Counter[str] = field(default_factory=Counter)  # per source (SPEC 13)

    def add(self, other: StoreResult) -> None:
        """Add another result's counts and conflicts to this one."""
        self.snapshots += other.snapshots
        self.samples += other.samples
        self.duplicates += other.duplicates
        self.conflicts.extend(other.conflicts)
        self.retired.update(other.retired)


_series_cache: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str], int]] = (
    weakref.WeakKeyDictionary()
)
# The database file generation (etl.store.identity) each engine's cache was read from.
_series_generation: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()


def insert_ignore(conn: Connection, table: type, conflict_cols: Sequence[str]):  # type: ignore[no-untyped-def]
    """An INSERT that skips rows whose `conflict_cols` are stored already (both engines)."""
    # Each dialect's insert is imported when used: a SQLite process never loads PostgreSQL's.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols))
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=list(conflict_cols))
    return insert(table)


def series_ids(
    conn: Connection, source: str, kind: str, samples: Sequence[SampleValue]
) -> dict[str, int]:
    """Map metric -> series id for each of `samples`, creating missing series rows.

    A series row is made the first time one of its samples is stored, so per-item series
    (http_json `each`, SPEC 7) appear as their items do; its metric type is the sample's
    (set by kinds whose types depend on the source), else the kind's.
    """
    cache = _cached_series(conn.engine)
    missing = [sv for sv in samples if (source, sv.metric) not in cache]
    if missing:
        conn.execute(
            insert_ignore(conn, Series, ("source", "metric")),
            [{"source": source, "metric": sv.metric, "kind": kind,
              "metric_type": str(sv.metric_type or KINDS[kind].metrics[sv.metric])}
             for sv in missing],
        )
        rows = conn.execute(select(Series.metric, Series.id).where(Series.source == source))
        for metric, sid in rows:
            cache[(source, metric)] = sid
    return {sv.metric: cache[(source, sv.metric)] for sv in samples}


def forget_series_cache(engine: Engine) -> None:
    """Drop cached series ids (after the database was dropped or recreated)."""
    _series_cache.pop(engine, None)


def _cached_series(engine: Engine) -> dict[tuple[str, str], int]:
    """The engine's series ids read so far; none once its SQLite file was replaced."""
    gen = generation(engine)
    if _series_generation.get(engine) != gen:
        _series_cache.pop(engine, None)
        _series_generation[engine] = gen
    return _series_cache.setdefault(engine, {})
