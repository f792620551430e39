"""PostgreSQL monthly partitions of samples (SPEC 13): converted in place, made ahead."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from etl.config import load_config
from etl.runtime.retention import daemon_pass
from etl.store import partitions
from etl.store.archive import import_archives
from etl.store.compact import compact
from etl.store.engine import downgrade, make_engine, upgrade
from etl.store.retire import retire
from etl.store.rows import forget_series_cache
from tests.factories import at, nected, seed_month, store, stored_history_config

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    try:
        yield engine
    finally:
        partitions.forget(engine)
        forget_series_cache(engine)
        engine.dispose()


def rows(engine: Engine, table: str = "samples") -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.exec_driver_sql(
            f"SELECT series_id, observed_at, value, plan_limit, status FROM {table}"))  # noqa: S608


def names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return partitions.existing(conn)


def month_names(now: datetime, ahead: int = 2) -> set[str]:
    out, month = set(), partitions.month_start(now)
    for _ in range(ahead + 1):
        out.add(partitions.partition_name(month))
        month = partitions.next_month(month)
    return out


def test_db_upgrade_partitions_an_existing_database_in_place_keeping_every_sample(
        pg_engine: Engine) -> None:
    upgrade(pg_engine, "0007_samples_clustered")  # a database made at the previous revision
    seed_month(pg_engine)
    before = rows(pg_engine)
    assert len(before) == 11
    upgrade(pg_engine)
    assert rows(pg_engine) == before
    assert names(pg_engine) == {"samples_default", "samples_p2026_04", "samples_p2026_05",
                                "samples_p2026_06"} | month_names(datetime.now(UTC))
    assert rows(pg_engine, "samples_default") == []
    assert [r[1].month for r in rows(pg_engine, "samples_p2026_05")] == [5] * 7
    with pg_engine.connect() as conn:
        assert partitions.is_partitioned(conn)
    downgrade(pg_engine, "0007_samples_clustered")
    assert rows(pg_engine) == before
    with pg_engine.connect() as conn:
        assert not partitions.is_partitioned(conn)
    partitions.forget(pg_engine)
    upgrade(pg_engine)
    assert rows(pg_engine) == before


def test_import_makes_the_partitions_of_the_months_it_writes(pg_engine: Engine,
                                                             tmp_path: Path) -> None:
    upgrade(pg_engine)
    cfg = stored_history_config(pg_engine, tmp_path / "c.toml")
    archive = tmp_path / "a.jsonl"
    archive.write_text("".join(json.dumps({
        "source": "rules", "observed_at": f"2031-{m:02d}-10T00:00:00Z",
        "body": {"data": {"invocations": m}, "code": "success", "message": "Success."}}) + "\n"
        for m in (3, 4)))
    assert import_archives(pg_engine, load_config(str(cfg)), [str(archive)]).ok
    assert {"samples_p2031_03", "samples_p2031_04"} <= names(pg_engine)
    assert rows(pg_engine, "samples_default") == []
    assert [r[2] for r in rows(pg_engine, "samples_p2031_04")] == [4.0]


def test_a_sample_of_a_month_without_partition_waits_in_the_default_until_the_daemon_makes_it(
        pg_engine: Engine, tmp_path: Path) -> None:
    upgrade(pg_engine)
    store(pg_engine, [nected(at("2032-01-15T00:00:00"), 7)])  # a live poll's write path
    assert [r[2] for r in rows(pg_engine, "samples_default")] == [7.0]
    cfg = load_config(str(stored_history_config(pg_engine, tmp_path / "c.toml")))
    daemon_pass(pg_engine, cfg, lambda: at("2031-12-20T00:00:00"))  # makes Dec, Jan, Feb
    assert {"samples_p2031_12", "samples_p2032_01", "samples_p2032_02"} <= names(pg_engine)
    assert rows(pg_engine, "samples_default") == []
    assert [r[2] for r in rows(pg_engine, "samples_p2032_01")] == [7.0]
    assert [r[2] for r in rows(pg_engine)] == [7.0]


def test_retirement_drops_whole_months_and_deletes_in_the_month_it_cuts(
        pg_engine: Engine, tmp_path: Path) -> None:
    upgrade(pg_engine)
    seed_month(pg_engine)
    partitions.ensure(pg_engine, [at("2026-04-15T00:00:00"), at("2026-05-15T00:00:00"),
                                  at("2026-06-15T00:00:00")])
    assert rows(pg_engine, "samples_default") == []
    before = rows(pg_engine)
    folder = tmp_path / "archive"
    compact(pg_engine, folder, at("2026-06-01T12:00:00"))
    done = retire(pg_engine, folder, at("2026-06-01T07:00:00"))
    # April (rules' 1000) is dropped as a partition; in May, rules' May 2 and May 15 and
    # ws-prod's May 10 (two metrics) are deleted; May 31 and May 20 stay as predecessors.
    assert (done.samples, done.series) == (5, 3)
    assert "samples_p2026_04" not in names(pg_engine)
    assert {"samples_p2026_05", "samples_p2026_06"} <= names(pg_engine)
    assert len(rows(pg_engine)) == len(before) - 5
    assert [r[2] for r in rows(pg_engine, "samples_p2026_05")] == [55.0, 103.5, 1.0]
