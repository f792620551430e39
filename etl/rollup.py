"""Daily rollups: per-(series, timezone, day) report rows kept fresh as samples arrive.

Every write marks the UTC span it touched per series as dirty (cheap, in the writer's
transaction). Before reports read rollups, `invalidate_dirty` drops the rollup rows whose
figures those spans can change; the reports then recompute only the missing days.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from etl.models import RollupDirty, from_micros


def mark_dirty(conn: Connection, spans: Mapping[int, tuple[datetime, datetime]]) -> None:
    """Record that samples of each series id were written between the two instants."""
    if spans:
        conn.execute(
            insert(RollupDirty),
            [{"series_id": sid, "start_at": lo, "end_at": hi} for sid, (lo, hi) in spans.items()],
        )


def mark_dirty_raw(conn: Connection, spans: Mapping[int, tuple[Any, Any]]) -> None:
    """`mark_dirty` for spans in the database's own representation (used by etl.bulk)."""
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
