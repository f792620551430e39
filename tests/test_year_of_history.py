"""A year of history compacts, retires and exports to Parquet with nothing lost (SPEC 13).

Issue 25's "Done when": ten series over the twelve months of 2026, imported, compacted,
exported as Parquet, retired, and every raw line and every sample accounted for by count
and an order-free checksum. The suite runs it at one sample an hour (the same twelve
months, 87,600 samples); `USAGE_ETL_YEAR_FULL=1` runs it at one a minute (5,256,000
samples, 3,153,600 raw lines: minutes per engine, see docs/performance.md).
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from sqlalchemy import Engine, select

from etl.config import load_config
from etl.store.archive import import_archives
from etl.store.compact import compact
from etl.store.models import Series, Snapshot
from etl.store.packs import samples_from
from etl.store.parquet_export import export_parquet
from etl.store.retire import retire
from etl.timefmt import to_micros
from tests.factories import (
    Tally,
    at,
    checksum,
    line_record,
    reference_engine,
    sample_record,
    write_config,
    write_year_archive,
    year_settings,
)

FULL = os.environ.get("USAGE_ETL_YEAR_FULL", "") not in ("", "0")
# USAGE_ETL_YEAR_STEP_MINUTES picks a size in between (5: about a million samples).
STEP_MINUTES = int(os.environ.get("USAGE_ETL_YEAR_STEP_MINUTES") or (1 if FULL else 60))
# Raw responses before November are compacted; samples before December are due to retire,
# but only where their raw responses are archived: so up to November.
COMPACT_BEFORE = at("2026-11-01T00:00:00")
RETIRE_BEFORE = at("2026-12-01T00:00:00")
ARCHIVED = [f"2026-{m:02d}" for m in range(1, 11)]
KEPT = ["2026-11", "2026-12"]
SERIES = 10


def resident_mib() -> str:
    """This process's resident memory now and its peak so far, "NOW/PEAK" in MiB (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            kib = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in fh)
                   if k in ("VmRSS", "VmHWM")}
    except OSError:
        return "?"
    return f"{kib.get('VmRSS', 0) // 1024}/{kib.get('VmHWM', 0) // 1024}"


def db_samples(engine: Engine, since: datetime | None = None) -> Tally:
    """Count and checksum of the stored samples (observed at or after `since`)."""
    tally = Tally()
    with engine.connect() as conn:
        s = samples_from(conn).c  # rows and, on PostgreSQL, packed days
        stmt = (select(Series.source, Series.metric, s.observed_at, s.value, s.plan_limit,
                       s.status).join(Series, Series.id == s.series_id))
        if since is not None:
            stmt = stmt.where(s.observed_at >= since)
        for source, metric, when, value, limit, status in conn.execution_options(
                yield_per=20_000).execute(stmt):
            tally.add(checksum(sample_record(source, metric, to_micros(when), value, limit,
                                             status)))
    return tally


def db_snapshots(engine: Engine) -> Tally:
    """Count and checksum of the raw responses still in the database."""
    tally = Tally()
    with engine.connect() as conn:
        for source, when, payload in conn.execution_options(yield_per=20_000).execute(
                select(Snapshot.source, Snapshot.observed_at, Snapshot.payload)):
            tally.add(checksum(line_record(source, to_micros(when), json.loads(payload))))
    return tally


def archive_lines(folder: Path) -> Iterator[tuple[Path, Tally]]:
    """Each archive file with the count and checksum of its raw lines."""
    for path in sorted(folder.glob("*/*.jsonl.gz")):
        tally = Tally()
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)
                when = datetime.fromisoformat(doc["observed_at"].replace("Z", "+00:00"))
                tally.add(checksum(line_record(doc["source"], to_micros(when), doc["body"])))
        yield path, tally


def parquet_samples(folder: Path) -> Tally:
    """Count and checksum of the samples in the Parquet dataset, read with pyarrow."""
    dataset = ds.dataset(folder, format="parquet", partitioning="hive")
    tally = Tally()
    columns = ["source", "metric", "observed_at", "value", "limit", "status"]
    for batch in dataset.to_batches(columns=columns, batch_size=50_000):
        micros = pc.cast(batch.column("observed_at"), pa.int64()).to_pylist()
        for source, metric, us, value, limit, status in zip(
                batch.column("source").to_pylist(), batch.column("metric").to_pylist(), micros,
                batch.column("value").to_pylist(), batch.column("limit").to_pylist(),
                batch.column("status").to_pylist(), strict=True):
            tally.add(checksum(sample_record(source, metric, us, value, limit, status)))
    return tally


# A year's size of what tests/test_compaction.py and tests/test_parquet_export.py check.
@pytest.mark.scale
def test_a_year_of_history_compacts_exports_and_retires_with_every_line_and_sample_accounted(
        engine: Engine, tmp_path: Path) -> None:
    times: dict[str, float] = {}
    rss: dict[str, str] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        # Seconds and the resident memory (MiB) after each step: the full-size run's log.
        nonlocal clock
        now = time.perf_counter()
        times[name] = round(now - clock, 1)
        rss[name] = resident_mib()
        clock = now

    url = engine.url.render_as_string(hide_password=False)
    cfg = load_config(str(write_config(tmp_path / "c.toml", year_settings(url))))
    source_file = tmp_path / "year.jsonl"
    written = write_year_archive(source_file, STEP_MINUTES)
    lines, samples = written.total("lines"), written.total("samples")
    assert samples.count == SERIES * 365 * 24 * 60 // STEP_MINUTES
    lap("generate")

    # Imported: every sample, every raw line.
    imported = import_archives(engine, cfg, [str(source_file)])
    assert (imported.snapshots, imported.samples) == (lines.count, samples.count)
    lap("import")
    assert db_samples(engine) == samples
    assert db_snapshots(engine) == lines
    lap("check import")

    # Compacted: each raw line before November in exactly one archive file, the rest still
    # in the database; the samples untouched.
    archive_dir = tmp_path / "archive"
    moved = compact(engine, archive_dir, COMPACT_BEFORE)
    archived = written.total("lines", ARCHIVED)
    assert moved.moved == archived.count
    # On PostgreSQL every sample of a compacted day is then packed (one row per series and
    # day); SQLite keeps its rows. The checks below read both through the same reads.
    assert moved.packed == (written.total("samples", ARCHIVED).count
                            if engine.dialect.name == "postgresql" else 0)
    lap("compact")
    files = dict(archive_lines(archive_dir))
    assert sorted(p.relative_to(archive_dir).as_posix() for p in files) == sorted(
        f"{source}/{month}.jsonl.gz" for source in (s.name for s in cfg.sources)
        for month in ARCHIVED)
    assert sum(files.values(), Tally()) == archived
    assert db_snapshots(engine) == written.total("lines", KEPT)
    assert db_samples(engine) == samples
    lap("check compaction")

    # Exported: every sample of the year in the Parquet dataset, one folder per source/month.
    out = tmp_path / "parquet"
    assert export_parquet(engine, cfg, date(2026, 1, 1), date(2026, 12, 31), out) == \
        samples.count
    lap("export parquet")
    assert parquet_samples(out) == samples
    assert len(list(out.glob("source=*/month=*"))) == len(cfg.sources) * 12
    lap("check parquet")

    # Retired: samples only where their raw responses are archived (before November, not
    # December), each series keeping its last sample before that for its next increase.
    retired = retire(engine, archive_dir, RETIRE_BEFORE)
    lap("retire")
    kept = db_samples(engine, since=COMPACT_BEFORE)
    assert kept == written.total("samples", KEPT)
    left = db_samples(engine).count
    assert left == kept.count + SERIES
    assert retired.samples + left == samples.count
    assert retired.series == SERIES
    lap("check retirement")

    # Nothing lost: the archive files re-derive every retired sample (and the predecessors).
    with reference_engine(engine, tmp_path) as again:
        paths = [str(p) for p in sorted(files)]
        assert import_archives(again, cfg, paths).samples == written.total(
            "samples", ARCHIVED).count
        lap("import archives")
        assert db_samples(again) + kept == samples
        lap("check re-import")
    print(f"year of history, {engine.dialect.name}, one sample every {STEP_MINUTES} min: "
          f"{samples.count} samples, {lines.count} raw lines, {retired.samples} retired; "
          f"seconds {times}; resident/peak MiB after each step {rss}")
