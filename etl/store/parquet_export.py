"""`export --format parquet` (SPEC 13): samples as a Parquet dataset partitioned by source and month.

Written with pyarrow's Parquet writer, a file per partition, from record batches of
EXPORT_BATCH rows, so memory stays flat whatever the range. Hive partitions `source=NAME/month=YYYY-MM/` (the UTC month of
`observed_at`); inside the files: metric, metric_type, observed_at and bucket_end (UTC
microsecond timestamps), value and limit (float64), status.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from etl.config import Config
from etl.errors import InputError, UsageEtlError
from etl.store.export import EXPORT_FETCH, export_range
from etl.store.models import Series
from etl.store.packs import samples_from

# Rows per record batch handed to the writer (and so at most in memory at once).
EXPORT_BATCH = 50_000
# Rows per Parquet row group: large enough for good compression and fast scans.
ROWS_PER_GROUP = 128 * 1024
# Rows held in memory over all partitions before the largest is written as a smaller group.
MAX_HELD_ROWS = 4 * ROWS_PER_GROUP


class ParquetUnavailableError(UsageEtlError):
    """pyarrow is not installed (the optional extra `usage-etl[parquet]`)."""

    exit_code = 2


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.dataset as ds
    except ImportError:
        raise ParquetUnavailableError(
            "--format parquet needs pyarrow: pip install 'usage-etl[parquet]'") from None
    return pa, ds


def schema() -> Any:
    """The dataset's schema: the file columns, then the two hive partition keys."""
    pa, _ = _pyarrow()
    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([
        ("metric", pa.string()), ("metric_type", pa.string()), ("observed_at", ts),
        ("bucket_end", ts), ("value", pa.float64()), ("limit", pa.float64()),
        ("status", pa.string()), ("source", pa.string()), ("month", pa.string()),
    ])


def export_parquet(engine: Engine, config: Config, start: date, end: date, out: Path) -> int:
    """Write the samples of days start..end (config timezone) as a dataset in `out`; rows.

    The dataset is written beside `out` and renamed into place: an interrupted export
    leaves no half dataset. Raises InputError if `out` exists and is not an empty folder,
    ParquetUnavailableError without pyarrow.
    """
    pa, _ = _pyarrow()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out}: exists and is not an empty folder")
    lo, hi = export_range(config, start, end)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        count = _write_partitions(pa, _column_batches(engine, lo, hi), tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


class _Partition:
    """One `source=/month=` folder's file: its writer and the rows not yet written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: Any = None
        self.pending: list[Any] = []  # record batches
        self.rows = 0

    def flush(self, pa: Any, pq: Any, file_schema: Any) -> None:
        if not self.pending:
            return
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, file_schema)
        # One row group for what was held: at most ROWS_PER_GROUP rows.
        self.writer.write_table(pa.Table.from_batches(self.pending, schema=file_schema),
                                row_group_size=ROWS_PER_GROUP)
        self.pending, self.rows = [], 0

    def close(self, pa: Any, pq: Any, file_schema: Any) -> None:
        self.flush(pa, pq, file_schema)
        if self.writer is not None:
            self.writer.close()


def _write_partitions(pa: Any, batches: Iterator[dict[str, list[Any]]], folder: Path) -> int:
    """Write time-ordered column batches into `folder/source=S/month=M/part-0.parquet`; rows.

    Memory stays bounded whatever the range (SPEC 13): a partition's rows are held until
    they fill a row group, at most MAX_HELD_ROWS rows are held over all partitions (the
    largest is written early when they are more), and because the batches come in time
    order, a month's files are finished and closed as soon as a later month begins.
    (pyarrow's dataset writer keeps every partition's file open, with up to a row group of
    rows staged in each, until the very end: hundreds of MB on a year of history.)
    """
    import pyarrow.parquet as pq

    file_schema = pa.schema([f for f in schema() if f.name not in ("source", "month")])
    open_parts: dict[tuple[str, str], _Partition] = {}
    held = count = 0
    try:
        for cols in batches:
            months = cols.pop("month")
            sources = cols.pop("source")
            count += len(months)
            whole = pa.RecordBatch.from_pydict(cols, schema=file_schema)
            # Every partition of a month before this batch's first row is complete.
            for key in [k for k in open_parts if k[1] < months[0]]:
                held -= open_parts[key].rows
                open_parts.pop(key).close(pa, pq, file_schema)
            rows_of: dict[tuple[str, str], list[int]] = {}
            for i, key in enumerate(zip(sources, months, strict=True)):
                rows_of.setdefault(key, []).append(i)
            for key, rows in rows_of.items():
                part = open_parts.get(key)
                if part is None:
                    part = open_parts[key] = _Partition(
                        folder / f"source={key[0]}" / f"month={key[1]}" / "part-0.parquet")
                part.pending.append(whole.take(pa.array(rows, type=pa.int64())))
                part.rows += len(rows)
                held += len(rows)
                if part.rows >= ROWS_PER_GROUP:
                    held -= part.rows
                    part.flush(pa, pq, file_schema)
            while held > MAX_HELD_ROWS:
                largest = max(open_parts.values(), key=lambda p: p.rows)
                held -= largest.rows
                largest.flush(pa, pq, file_schema)
    finally:
        for part in open_parts.values():
            part.close(pa, pq, file_schema)
    return count


def _column_batches(engine: Engine, lo: datetime | None,
                    hi: datetime | None) -> Iterator[dict[str, list[Any]]]:
    """The samples in [lo, hi) as columns, EXPORT_BATCH rows at a time, in time order."""
    names = ("metric", "metric_type", "observed_at", "bucket_end", "value", "limit",
             "status", "source", "month")
    cols: dict[str, list[Any]] = {n: [] for n in names}
    with engine.connect() as conn:
        s = samples_from(conn, lo, hi).c  # rows and packed days (etl.store.packs)
        stmt = (
            select(Series.metric, Series.metric_type, s.observed_at, s.bucket_end,
                   s.value, s.plan_limit, s.status, Series.source)
            .join(Series, Series.id == s.series_id)
            .order_by(s.observed_at, Series.source, Series.metric)
        )
        if lo is not None:
            stmt = stmt.where(s.observed_at >= lo)
        if hi is not None:
            stmt = stmt.where(s.observed_at < hi)
        for row in conn.execution_options(yield_per=EXPORT_FETCH).execute(stmt):
            for name, value in zip(names, row, strict=False):
                cols[name].append(value)
            cols["month"].append(f"{row[2]:%Y-%m}")
            if len(cols["metric"]) >= EXPORT_BATCH:
                yield cols
                cols = {n: [] for n in names}
    if cols["metric"]:
        yield cols
