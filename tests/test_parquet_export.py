"""`export --format parquet` (SPEC 13): a hive-partitioned dataset holding every sample."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from etl.cli import cli
from etl.store import parquet_export
from etl.timefmt import utc_z
from tests.factories import (
    at,
    history_page,
    reports_settings,
    seed_month,
    store,
    stored_history_config,
    write_config,
)

Row = tuple[str, str, str, str | None, float, float | None, str | None]


def seeded_config(engine: Engine, tmp_path: Path) -> Path:
    """seed_month's history plus one history-source page (an interval bucket), and its config."""
    seed_month(engine)
    t0 = at("2026-05-03T00:00:00")
    hour = timedelta(hours=1)
    store(engine, [history_page(t0 + hour, (t0, t0 + hour), [(t0, t0 + hour, {"gpt-4o": 3})])])
    return stored_history_config(engine, tmp_path / "c.toml")


def export(cfg: Path, fmt: str, out: Path | None = None) -> str:
    args = ["--config", str(cfg), "export", "--start", "2026-04-01", "--end", "2026-06-30",
            "--format", fmt]
    done = CliRunner().invoke(cli, [*args, "--out", str(out)] if out else args)
    assert done.exit_code == 0, done.output
    return done.stdout


def csv_samples(text: str) -> list[Row]:
    """(source, metric, observed_at, bucket_end, value, limit, status) of each CSV row."""
    out = []
    for r in csv.DictReader(io.StringIO(text)):
        bucket = bool(r["bucket_end"])
        out.append((r["source"], r["metric"], r["bucket_start"] if bucket else r["observed_at"],
                    r["bucket_end"] or None, float(r["value"]),
                    float(r["limit"]) if r["limit"] else None, r["status"] or None))
    return sorted(out)


def micros_text(us: int | None) -> str | None:
    return None if us is None else utc_z(datetime(1970, 1, 1, tzinfo=UTC)
                                         + timedelta(microseconds=us))


@pytest.mark.parametrize("batch, group, held", [
    (5, parquet_export.ROWS_PER_GROUP, parquet_export.MAX_HELD_ROWS),
    # Row groups fill and the held rows overflow, as on a year of history.
    (3, 2, 3)])
def test_parquet_dataset_holds_every_sample_of_the_csv_export(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int, group: int,
        held: int) -> None:
    monkeypatch.setattr(parquet_export, "EXPORT_BATCH", batch)  # several batches, as at scale
    monkeypatch.setattr(parquet_export, "ROWS_PER_GROUP", group)
    monkeypatch.setattr(parquet_export, "MAX_HELD_ROWS", held)
    cfg = seeded_config(engine, tmp_path)
    lake = tmp_path / "lake"
    export(cfg, "parquet", lake)
    expected = csv_samples(export(cfg, "csv"))
    assert len(expected) == 12  # 5 rules, 3 x 2 ws-prod, 1 bucket

    assert sorted(p.relative_to(lake).parent.as_posix() for p in lake.rglob("*.parquet")) == [
        "source=openai/month=2026-05", "source=rules/month=2026-04",
        "source=rules/month=2026-05", "source=rules/month=2026-06",
        "source=ws-prod/month=2026-05", "source=ws-prod/month=2026-06"]
    # Partition keys are folders, not columns inside the files; the file columns' types.
    one = next(lake.rglob("*.parquet"))
    ts = pa.timestamp("us", tz="UTC")
    assert pq.read_schema(one) == pa.schema([
        ("metric", pa.string()), ("metric_type", pa.string()), ("observed_at", ts),
        ("bucket_end", ts), ("value", pa.float64()), ("limit", pa.float64()),
        ("status", pa.string())])

    # Each file in time order, in row groups of at most ROWS_PER_GROUP rows.
    for path in lake.rglob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        assert all(meta.row_group(i).num_rows <= group for i in range(meta.num_row_groups))
        times = pq.read_table(path).column("observed_at").to_pylist()
        assert times == sorted(times)

    # pyarrow's dataset API.
    table = ds.dataset(lake, format="parquet", partitioning="hive").to_table()
    got = sorted(
        (r["source"], r["metric"], utc_z(r["observed_at"]),
         utc_z(r["bucket_end"]) if r["bucket_end"] else None, r["value"], r["limit"],
         r["status"]) for r in table.to_pylist())
    assert got == expected
    assert {(r["metric"], r["metric_type"]) for r in table.to_pylist()} == {
        ("invocations", "counter"), ("connections", "gauge"), ("documents", "gauge"),
        ("tokens:gpt-4o", "interval")}

    # DuckDB, as the notebooks read it.
    rows = duckdb.connect().execute(
        "SELECT source, metric, epoch_us(observed_at), epoch_us(bucket_end), value, \"limit\","
        " status, month FROM read_parquet(?, hive_partitioning = true)",
        [f"{lake}/**/*.parquet"]).fetchall()
    assert sorted((s, m, micros_text(t), micros_text(e), v, lim, st)
                  for s, m, t, e, v, lim, st, _month in rows) == expected
    assert all(month == micros_text(t)[:7] for _s, _m, t, *_r, month in rows)  # type: ignore[index]


def test_parquet_export_refuses_a_folder_that_is_not_empty_and_needs_out(
        sqlite_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", reports_settings(database_url=sqlite_url))
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "mine.txt").write_text("keep me")
    args = ["--config", str(cfg), "export", "--start", "2026-05-01", "--end", "2026-05-31",
            "--format", "parquet"]
    done = CliRunner().invoke(cli, [*args, "--out", str(lake)])
    assert done.exit_code == 2
    assert f"--out {lake}: exists and is not an empty folder" in done.output
    assert (lake / "mine.txt").read_text() == "keep me"
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2
    assert "--format parquet needs --out FOLDER" in done.output


def test_an_empty_range_is_an_empty_dataset(sqlite_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", reports_settings(database_url=sqlite_url))
    lake = tmp_path / "lake"
    done = CliRunner().invoke(cli, ["--config", str(cfg), "export", "--start", "2026-05-01",
                                    "--end", "2026-05-31", "--format", "parquet", "--out",
                                    str(lake)])
    assert done.exit_code == 0, done.output
    assert lake.is_dir() and not list(lake.iterdir())
    assert "exported 0 rows" in done.output
