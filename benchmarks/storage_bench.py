"""Bytes per sample before and after compaction (SPEC 13), both engines, databases vacuumed.

The raw archive files compaction writes are measured apart: they live on disk, not in the
database.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from etl.store.compact import compact

# Past every sample of the workload: compaction moves every raw response.
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def database_bytes(engine: Engine, target: Any) -> tuple[int, int]:
    """(bytes the vacuumed database takes, samples stored)."""
    if engine.dialect.name == "sqlite":
        con = sqlite3.connect(Path(str(target)))
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("VACUUM")
        samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        con.close()
        return Path(str(target)).stat().st_size, samples
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("VACUUM FULL")
        size = conn.exec_driver_sql(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')").scalar_one()
        samples = conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one()
    return int(size), int(samples)


def run(engine: Engine, target: Any, archive_dir: Path) -> dict[str, Any]:
    """Bytes per sample as imported, then after compacting every raw response, vacuumed."""
    before, samples = database_bytes(engine, target)
    t = time.perf_counter()
    moved = compact(engine, archive_dir, FAR_FUTURE).moved
    seconds = time.perf_counter() - t
    after, _ = database_bytes(engine, target)
    archive = sum(p.stat().st_size for p in archive_dir.rglob("*.jsonl.gz"))
    n = max(samples, 1)
    return {"samples": samples, "bytes_per_sample": before / n,
            "compacted_bytes_per_sample": after / n,
            "archive_bytes_per_sample": archive / n, "compacted_responses": moved,
            "compact_s": seconds, "compact_responses_per_s": moved / max(seconds, 1e-9)}
