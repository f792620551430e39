"""`export --format parquet` (SPEC 13): samples as a Parquet dataset partitioned by source and month.

Written by pyarrow's dataset writer from record batches of EXPORT_BATCH rows, so memory stays
flat whatever the range. Hive partitions `source=NAME/month=YYYY-MM/` (the UTC month of
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
    pa, ds = _pyarrow()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out}: exists and is not an empty folder")
    lo, hi = export_range(config, start, end)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    count = 0
    sch = schema()

    def batches() -> Iterator[Any]:
        nonlocal count
        for cols in _column_batches(engine, lo, hi):
            count += len(cols["metric"])
            yield pa.RecordBatch.from_pydict(cols, schema=sch)

    try:
        ds.write_dataset(
            batches(), tmp, schema=sch, format="parquet",
            partitioning=ds.partitioning(pa.schema([("source", pa.string()),
                                                    ("month", pa.string())]), flavor="hive"),
            basename_template="part-{i}.parquet", max_rows_per_group=ROWS_PER_GROUP,
            min_rows_per_group=min(ROWS_PER_GROUP, EXPORT_BATCH),
            existing_data_behavior="overwrite_or_ignore")
        if not tmp.exists():
            tmp.mkdir(parents=True)  # no sample in the range: an empty dataset
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
