"""The bulk writer stores exactly what store_observations would, on both engines."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from etl.store.bulk import bulk_store
from etl.store.models import Sample, Series, Snapshot
from etl.store.writer import StoreResult, store_observations
from etl.vendors.types import Observation, SampleValue

T0 = datetime(2026, 10, 31, 22, 0, tzinfo=UTC)


def nected(source: str, at: datetime, value: float) -> Observation:
    return Observation(
        source=source, kind="nected", observed_at=at, origin="import",
        payload=f'{{"data": {{"invocations": {value}}}, "code": "success"}}',
        samples=(SampleValue("invocations", value),),
    )


def wiresocket(source: str, at: datetime, conns: float, docs: float) -> Observation:
    return Observation(
        source=source, kind="wiresocket", observed_at=at, origin="import",
        received_at=at + timedelta(seconds=1),
        payload=f'{{"usage": {{"connections": {{"current": {conns}}}}}}}',
        samples=(
            SampleValue("connections", conns, 100.0, "healthy"),
            SampleValue("documents", docs, 20.0, "warning"),
        ),
    )


def random_batch(rng: random.Random, n: int) -> list[Observation]:
    """Observations with repeats (same and other values), any order, several sources."""
    out: list[Observation] = []
    for _ in range(n):
        at = T0 + timedelta(minutes=rng.randrange(60))
        v = float(rng.randrange(3))
        if rng.random() < 0.5:
            out.append(nected(rng.choice(["n1", "n2"]), at, v))
        else:
            out.append(wiresocket("ws", at, v, float(rng.randrange(2))))
    return out


def content(engine: Engine) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Stored samples and snapshots, keyed by names not ids, with each sample's snapshot payload."""
    with engine.connect() as conn:
        snaps = {
            sid: (src, at, payload)
            for sid, src, at, payload in conn.execute(
                select(Snapshot.id, Snapshot.source, Snapshot.observed_at, Snapshot.payload)
            )
        }
        samples = sorted(
            (src, metric, at, value, limit, status, snaps[snap][2] if snap else None)
            for src, metric, at, value, limit, status, snap in conn.execute(
                select(Series.source, Series.metric, Sample.observed_at, Sample.value,
                       Sample.plan_limit, Sample.status, Sample.snapshot_id)
                .join(Series, Series.id == Sample.series_id)
            )
        )
    return samples, sorted(snaps.values())


def summary(res: StoreResult) -> tuple[int, int, int, list[tuple[object, ...]]]:
    conflicts = sorted((c.source, c.metric, c.observed_at, c.stored, c.offered) for c in res.conflicts)
    return res.snapshots, res.samples, res.duplicates, conflicts


def test_bulk_agrees_with_store_observations_on_random_batches(engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from etl.store.engine import make_engine, upgrade

    if engine.dialect.name == "sqlite":
        ref_engine = make_engine(f"sqlite:///{tmp_path / 'ref.db'}")
    else:
        from tests.conftest import create_pg_database

        ref_engine = make_engine(create_pg_database())
    upgrade(ref_engine)
    rng = random.Random(7)
    try:
        for round_no in range(4):
            batch = random_batch(rng, 150)
            # Small chunks so that repeats and stored keys cross chunk boundaries too.
            got = bulk_store(engine, batch, chunk=40 if round_no % 2 else 1000)
            want = StoreResult()
            # One at a time is the definition: each observation meets what is stored before it.
            for obs in batch:
                with ref_engine.begin() as conn:
                    want.add(store_observations(conn, [obs]))
            assert summary(got) == summary(want)
            assert content(engine) == content(ref_engine)
    finally:
        from etl.store.writer import forget_series_cache

        forget_series_cache(ref_engine)
        ref_engine.dispose()
        if engine.dialect.name != "sqlite":
            from tests.conftest import drop_pg_database

            drop_pg_database(str(ref_engine.url.render_as_string(hide_password=False)))


def test_a_chunk_of_new_and_already_stored_keys_is_stored_like_one_at_a_time(
    engine: Engine, tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    # An import whose chunk mostly extends the history but repeats a few stored keys (a
    # repeated archive line, a late one): the new part is written directly, the rest staged.
    from etl.store.engine import make_engine, upgrade

    if engine.dialect.name == "sqlite":
        ref_engine = make_engine(f"sqlite:///{tmp_path / 'ref.db'}")
    else:
        from tests.conftest import create_pg_database

        ref_engine = make_engine(create_pg_database())
    upgrade(ref_engine)
    rng = random.Random(11)
    minute = timedelta(minutes=1)
    first = [nected("n1", T0 + k * minute, float(k)) for k in range(20)]
    first += [wiresocket("ws", T0 + k * minute, float(k), 1.0) for k in range(0, 20, 2)]
    second = [nected("n1", T0 + k * minute, float(k)) for k in range(20, 40)]
    second += [wiresocket("ws", T0 + k * minute, float(k), 1.0) for k in range(20, 40)]
    second += [nected("n2", T0 + k * minute, 5.0) for k in range(10)]  # a new source
    second += [nected("n1", T0 + 3 * minute, 3.0),            # duplicate of a stored key
               nected("n1", T0 + 4 * minute, 99.0),           # conflict with a stored key
               wiresocket("ws", T0 + 5 * minute, 7.0, 1.0),   # late: a gap in the history
               nected("n1", T0 + 30 * minute, 31.0)]          # conflict inside the chunk
    rng.shuffle(second)
    try:
        for batch in (first, second):
            got = bulk_store(engine, batch)
            want = StoreResult()
            for obs in batch:
                with ref_engine.begin() as conn:
                    want.add(store_observations(conn, [obs]))
            assert summary(got) == summary(want)
            assert content(engine) == content(ref_engine)
        assert summary(got)[:3] == (51, 72, 1) and len(got.conflicts) == 2
    finally:
        from etl.store.writer import forget_series_cache

        forget_series_cache(ref_engine)
        ref_engine.dispose()
        if engine.dialect.name != "sqlite":
            from tests.conftest import drop_pg_database

            drop_pg_database(str(ref_engine.url.render_as_string(hide_password=False)))


def test_reimport_changes_nothing_and_counts_duplicates(engine: Engine) -> None:
    batch = [nected("rules", T0 + timedelta(minutes=i), float(i)) for i in range(500)]
    first = bulk_store(engine, reversed(batch))
    again = bulk_store(engine, batch, chunk=77)
    assert (first.snapshots, first.samples, first.duplicates) == (500, 500, 0)
    assert (again.snapshots, again.samples, again.duplicates, again.conflicts) == (0, 0, 500, [])


def test_late_conflicting_value_is_reported_and_not_stored(engine: Engine) -> None:
    bulk_store(engine, [wiresocket("ws", T0, 5, 1), wiresocket("ws", T0 + timedelta(minutes=2), 6, 1)])
    res = bulk_store(engine, [wiresocket("ws", T0 + timedelta(minutes=1), 9, 1),
                              wiresocket("ws", T0, 7, 1)])
    assert res.samples == 2 and res.duplicates == 1
    assert [(c.metric, c.stored, c.offered) for c in res.conflicts] == [("connections", 5, 7)]
    samples, _ = content(engine)
    assert [s[3] for s in samples if s[1] == "connections"] == [5, 9, 6]
