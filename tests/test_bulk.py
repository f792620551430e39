"""The bulk writer stores exactly what store_observations would, on both engines."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from etl.store.bulk import bulk_store
from etl.store.models import Sample, Series, Snapshot
from etl.store.rows import StoreResult
from etl.store.writer import store_observations
from etl.vendors.types import Observation, Origin
from tests.factories import nected, reference_engine, wiresocket

T0 = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)


def imported_nected(source: str, at: datetime, value: float) -> Observation:
    return nected(at, value, source=source, origin=Origin.IMPORT)


def imported_wiresocket(source: str, at: datetime, conns: float, docs: float) -> Observation:
    # Statuses differ by metric, and the body arrived a second later, so both are compared.
    return wiresocket(at, conns, docs, source=source, status="healthy", docs_status="warning",
                      origin=Origin.IMPORT, received_at=at + timedelta(seconds=1))


def random_batch(rng: random.Random, n: int) -> list[Observation]:
    """Observations with repeats (same and other values), any order, several sources."""
    out: list[Observation] = []
    for _ in range(n):
        at = T0 + timedelta(minutes=rng.randrange(60))
        v = float(rng.randrange(3))
        if rng.random() < 0.5:
            out.append(imported_nected(rng.choice(["n1", "n2"]), at, v))
        else:
            out.append(imported_wiresocket("ws", at, v, float(rng.randrange(2))))
    return out


def content(engine: Engine) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Stored samples and snapshots, keyed by names not ids, with each sample's snapshot payload.

    A sample's snapshot is its source's at its instant.
    """
    with engine.connect() as conn:
        snaps = {
            (src, at): (src, at, payload)
            for src, at, payload in conn.execute(
                select(Snapshot.source, Snapshot.observed_at, Snapshot.payload)
            )
        }
        samples = sorted(
            (src, metric, at, value, limit, status, snaps[(src, at)][2])
            for src, metric, at, value, limit, status in conn.execute(
                select(Series.source, Series.metric, Sample.observed_at, Sample.value,
                       Sample.plan_limit, Sample.status)
                .join(Series, Series.id == Sample.series_id)
            )
        )
    return samples, sorted(snaps.values())


def one_at_a_time(engine: Engine, batch: list[Observation]) -> StoreResult:
    """The definition bulk_store must meet: each observation meets what is stored before it."""
    want = StoreResult()
    for obs in batch:
        with engine.begin() as conn:
            want.add(store_observations(conn, [obs]))
    return want


def summary(res: StoreResult) -> tuple[int, int, int, list[tuple[object, ...]]]:
    conflicts = sorted((c.source, c.metric, c.observed_at, c.stored, c.offered) for c in res.conflicts)
    return res.snapshots, res.samples, res.duplicates, conflicts


def test_bulk_agrees_with_store_observations_on_random_batches(engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    with reference_engine(engine, tmp_path) as ref_engine:
        for round_no in range(4):
            batch = random_batch(rng, 150)
            # Small chunks so that repeats and stored keys cross chunk boundaries too.
            got = bulk_store(engine, batch, chunk=40 if round_no % 2 else 1000)
            want = one_at_a_time(ref_engine, batch)
            assert summary(got) == summary(want)
            assert content(engine) == content(ref_engine)


def test_a_chunk_of_new_and_already_stored_keys_is_stored_like_one_at_a_time(
    engine: Engine, tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    # An import whose chunk mostly extends the history but repeats a few stored keys (a
    # repeated archive line, a late one): the new part is written directly, the rest staged.
    rng = random.Random(11)
    minute = timedelta(minutes=1)
    first = [imported_nected("n1", T0 + k * minute, float(k)) for k in range(20)]
    first += [imported_wiresocket("ws", T0 + k * minute, float(k), 1.0) for k in range(0, 20, 2)]
    second = [imported_nected("n1", T0 + k * minute, float(k)) for k in range(20, 40)]
    second += [imported_wiresocket("ws", T0 + k * minute, float(k), 1.0) for k in range(20, 40)]
    second += [imported_nected("n2", T0 + k * minute, 5.0) for k in range(10)]  # a new source
    second += [imported_nected("n1", T0 + 3 * minute, 3.0),            # duplicate of a stored key
               imported_nected("n1", T0 + 4 * minute, 99.0),           # conflict with a stored key
               imported_wiresocket("ws", T0 + 5 * minute, 7.0, 1.0),   # late: a gap in the history
               imported_nected("n1", T0 + 30 * minute, 31.0)]          # conflict inside the chunk
    rng.shuffle(second)
    with reference_engine(engine, tmp_path) as ref_engine:
        for batch in (first, second):
            got = bulk_store(engine, batch)
            want = one_at_a_time(ref_engine, batch)
            assert summary(got) == summary(want)
            assert content(engine) == content(ref_engine)
        assert summary(got)[:3] == (51, 72, 1) and len(got.conflicts) == 2


def test_reimport_changes_nothing_and_counts_duplicates(engine: Engine) -> None:
    batch = [imported_nected("rules", T0 + timedelta(minutes=i), float(i)) for i in range(500)]
    first = bulk_store(engine, reversed(batch))
    again = bulk_store(engine, batch, chunk=77)
    assert (first.snapshots, first.samples, first.duplicates) == (500, 500, 0)
    assert (again.snapshots, again.samples, again.duplicates, again.conflicts) == (0, 0, 500, [])


def test_late_conflicting_value_is_reported_and_not_stored(engine: Engine) -> None:
    bulk_store(engine, [imported_wiresocket("ws", T0, 5, 1), imported_wiresocket("ws", T0 + timedelta(minutes=2), 6, 1)])
    res = bulk_store(engine, [imported_wiresocket("ws", T0 + timedelta(minutes=1), 9, 1),
                              imported_wiresocket("ws", T0, 7, 1)])
    assert res.samples == 2 and res.duplicates == 1
    assert [(c.metric, c.stored, c.offered) for c in res.conflicts] == [("connections", 5, 7)]
    samples, _ = content(engine)
    assert [s[3] for s in samples if s[1] == "connections"] == [5, 9, 6]


def test_received_times_limits_and_statuses_are_stored_and_missing_ones_left_null(
    engine: Engine,
) -> None:
    # Rows without a received time, limit or status go in through statements that leave
    # those columns NULL: the values that are there must still all arrive.
    bulk_store(engine, [imported_wiresocket("ws", T0, 5, 1), imported_nected("n1", T0, 7)])
    with engine.connect() as conn:
        received = dict(conn.execute(select(Snapshot.source, Snapshot.received_at)).all())
    assert received == {"ws": T0 + timedelta(seconds=1), "n1": None}
    samples, _ = content(engine)
    assert [s[1:6] for s in samples] == [
        ("invocations", T0, 7.0, None, None),
        ("connections", T0, 5.0, 100.0, "healthy"),
        ("documents", T0, 1.0, 20.0, "warning"),
    ]


def test_a_sample_of_a_missing_series_is_still_refused_after_a_bulk_store(
    engine: Engine,
) -> None:
    # SQLite's per-row foreign key check is off while a chunk is written directly; it must
    # be back on for every other write made through the engine.
    bulk_store(engine, [imported_nected("n1", T0, 7)])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(Sample).values(series_id=999_999, observed_at=T0, value=1.0))


def test_a_pooled_sqlite_connection_gets_its_own_settings_back_after_a_bulk_store(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    # The writer enlarges SQLite's page cache and turns the per-row foreign key check off
    # while it writes a chunk: a connection the engine pools and hands out again must come
    # back with its own cache and with the check on.
    from sqlalchemy.pool import StaticPool

    from etl.store.engine import make_engine, upgrade
    from etl.store.rows import forget_series_cache

    eng = make_engine(f"sqlite:///{tmp_path / 'pooled.db'}", poolclass=StaticPool)
    upgrade(eng)
    try:
        with eng.connect() as conn:
            before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
        bulk_store(eng, [imported_nected("n1", T0, 7), imported_wiresocket("ws", T0, 1, 2)])
        bulk_store(eng, [imported_nected("n1", T0, 7), imported_nected("n1", T0, 8)])  # staged
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == before
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one() == 3
    finally:
        forget_series_cache(eng)
        eng.dispose()
