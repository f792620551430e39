"""Export stored history between two dates: archive lines (JSONL) or one CSV row per sample."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import IO, Any, assert_never

from sqlalchemy import Engine, select

from etl.config import Config
from etl.errors import InputError
from etl.store.models import Series, Snapshot
from etl.store.packs import samples_from
from etl.textutil import formula_safe, number_text
from etl.timefmt import utc_z

# Rows fetched per round trip when exporting.
EXPORT_FETCH = 2000
CSV_COLUMNS = ("observed_at", "source", "metric", "value", "limit", "status",
               "bucket_start", "bucket_end", "revisions")  # the last three: SPEC 10


def export_range(config: Config, start: date,
                 end: date) -> tuple[datetime | None, datetime | None]:
    """[start 00:00, the day after end 00:00) in the config timezone, as UTC instants.

    None: an end past what a datetime holds (0001-01-01 east of UTC, the day after
    9999-12-31), so no bound on that side.
    """
    if end < start:
        raise InputError(f"--end {end} is before --start {start}")
    tz = config.tz
    try:
        lo: datetime | None = datetime.combine(start, time(0), tzinfo=tz).astimezone(UTC)
    except OverflowError:
        lo = None
    try:
        hi: datetime | None = datetime.combine(end + timedelta(days=1), time(0),
                                               tzinfo=tz).astimezone(UTC)
    except OverflowError:
        hi = None
    return lo, hi


def _between(column: Any, lo: datetime | None, hi: datetime | None) -> list[Any]:
    return ([] if lo is None else [column >= lo]) + ([] if hi is None else [column < hi])


def iter_archive_lines(engine: Engine, lo: datetime | None,
                       hi: datetime | None) -> Iterator[str]:
    """Archive lines for every snapshot with lo <= observed_at < hi, in time order, streamed.

    None for `lo` or `hi`: no bound on that side.
    """
    stmt = (
        select(Snapshot.source, Snapshot.observed_at, Snapshot.payload, Snapshot.window_start,
               Snapshot.window_end)
        .where(*_between(Snapshot.observed_at, lo, hi))
        .order_by(Snapshot.observed_at, Snapshot.source)
    )
    with engine.connect() as conn:
        for source, at, payload, w_start, w_end in conn.execution_options(
                yield_per=EXPORT_FETCH).execute(stmt):
            yield archive_line(source, at, payload, w_start, w_end)


def archive_line(source: str, at: datetime, payload: str, w_start: datetime | None = None,
                 w_end: datetime | None = None) -> str:
    """One stored snapshot as an archive line (SPEC 4; export and compaction write these)."""
    line: dict[str, Any] = {"source": source, "observed_at": utc_z(at)}
    if w_start is not None and w_end is not None:  # a history source's page (SPEC 10)
        line["window"] = {"start": utc_z(w_start), "end": utc_z(w_end)}
    line["body"] = json.loads(payload)
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def iter_csv_rows(engine: Engine, lo: datetime | None,
                  hi: datetime | None) -> Iterator[tuple[str, ...]]:
    """One row per sample (CSV_COLUMNS), in time order, streamed; formula cells escaped."""
    with engine.connect() as conn:
        s = samples_from(conn, lo, hi).c  # rows and packed days (etl.store.packs)
        stmt = (
            select(s.observed_at, Series.source, Series.metric, s.value,
                   s.plan_limit, s.status, s.bucket_end, s.fetched_at, s.revisions)
            .join(Series, Series.id == s.series_id)
            .where(*_between(s.observed_at, lo, hi))
            .order_by(s.observed_at, Series.source, Series.metric)
        )
        for at, source, metric, value, limit, status, end, fetched, revisions in (
                conn.execution_options(yield_per=EXPORT_FETCH).execute(stmt)):
            # A bucket's row (SPEC 10) is observed when it was fetched, over its bucket.
            bucket = (utc_z(at), utc_z(end), str(revisions or 0)) if end is not None else ("",) * 3
            yield (utc_z(fetched or at), formula_safe(source), formula_safe(metric),
                   number_text(value), "" if limit is None else number_text(limit),
                   formula_safe(status or ""), *bucket)


class ExportFormat(StrEnum):
    """What `export` writes (SPEC 3, 13): archive lines, CSV rows, or a Parquet dataset folder.

    The dataset is written by etl.store.parquet_export, not by export_archive.
    """

    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


def export_archive(
    engine: Engine, config: Config, start: date, end: date, out: IO[str],
    fmt: ExportFormat = ExportFormat.JSONL,
) -> int:
    """Write history between two dates (config timezone, both included); return rows written."""
    lo, hi = export_range(config, start, end)
    count = 0
    match fmt:
        case ExportFormat.JSONL:
            for line in iter_archive_lines(engine, lo, hi):
                out.write(line + "\n")
                count += 1
        case ExportFormat.CSV:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for row in iter_csv_rows(engine, lo, hi):
                writer.writerow(row)
                count += 1
        case ExportFormat.PARQUET:  # a folder of files, not a stream
            raise InputError("--format parquet writes a folder: see "
                             "etl.store.parquet_export.export_parquet")
        case _:
            assert_never(fmt)
    return count
