"""Daily rollups: warm reports (configured zone, from rollups) equal cold ones (raw samples)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, update

from etl.config import BillingRule, Config, SourceConfig
from etl.store.bulk import bulk_store
from etl.store.models import RollupDay, RollupDirty, Series
from etl.store.writer import store_observations
from etl.vendors.types import Observation
from reports.frames import billing_frame, daily_frame
from tests import factories
from tests.factories import copy_sqlite_template, examples, migrated_engine

TZ = "Europe/Berlin"  # 2026-10-25 has 25 hours there
START, END = date(2026, 10, 23), date(2026, 10, 27)
T0 = datetime(2026, 10, 22, 20, 0, tzinfo=UTC)
OTHER_TZ = "America/New_York"  # not the configured zone; its own DST change is a week later


def config(timezone: str = TZ) -> Config:
    from decimal import Decimal

    return Config(
        database_url="sqlite://", timezone=timezone,
        sources=(
            SourceConfig(name="rules", kind="nected", interval_seconds=3600, secret_env="X"),
            SourceConfig(name="ws", kind="wiresocket", interval_seconds=1800, secret_env="Y",
                         staleness_seconds=5400),
        ),
        billing=(
            BillingRule("rules", "invocations", "increase", Decimal(100), Decimal("0.01"), "USD"),
            BillingRule("ws", "connections", "peak", Decimal(5), Decimal("0.5"), "USD"),
        ),
    )


def nected(at: datetime, value: float) -> Observation:
    return factories.nected(at, value)


def wiresocket(at: datetime, conns: float) -> Observation:
    return factories.wiresocket(at, conns, conns / 2, source="ws", limit=10.0,
                                status="healthy", docs_status="healthy")


def reports(engine: Engine, cold: bool, tz: str | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Daily and billing frames; cold = from raw samples, without rollups."""
    cfg = config()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return (daily_frame(engine, cfg, START, END, tz, rollups=not cold),
            billing_frame(engine, cfg, "2026-10", tz, now=now, rollups=not cold))


def assert_warm_equals_cold(engine: Engine) -> None:
    # The configured zone and another one asked for with --tz: each keeps its own rollups.
    for tz in (None, OTHER_TZ):
        warm_daily, warm_bill = reports(engine, cold=False, tz=tz)
        cold_daily, cold_bill = reports(engine, cold=True, tz=tz)
        pd.testing.assert_frame_equal(warm_daily, cold_daily)
        pd.testing.assert_frame_equal(warm_bill, cold_bill)


def store(engine: Engine, batch: list[Observation], bulk: bool) -> None:
    if bulk:
        bulk_store(engine, batch)
    else:
        with engine.begin() as conn:
            store_observations(conn, batch)


def rollup_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(RollupDay)) or 0)


def history() -> list[Observation]:
    out = []
    for h in range(0, 24 * 6, 1):
        at = T0 + timedelta(hours=h)
        out.append(nected(at, 1000 + 10 * h if h != 50 else 3))  # one reset
        if h % 7:  # some gaps
            out.append(wiresocket(at, float(h % 11)))
    return out


def doctor_stored_row(engine: Engine, figure: str, value: float) -> None:
    """Change one figure of the stored rollup of ws/connections on 2026-10-24."""
    with engine.begin() as conn:
        ws_id = conn.scalar(select(Series.id).where(Series.source == "ws",
                                                    Series.metric == "connections"))
        where = (RollupDay.series_id == ws_id, RollupDay.day == "2026-10-24")
        data = json.loads(conn.scalar(select(RollupDay.data).where(*where)) or "{}")
        data[figure] = value
        conn.execute(update(RollupDay).where(*where).values(data=json.dumps(data)))


def test_warm_reports_read_rollups_and_late_samples_refresh_only_their_days(engine: Engine) -> None:
    store(engine, history(), bulk=True)
    assert_warm_equals_cold(engine)  # the first warm run computes and stores the rollups
    stored = rollup_rows(engine)
    assert stored > 0
    # Reports read the stored rows: a doctored row shows up in the warm report only.
    warm_daily, _ = reports(engine, cold=False)
    doctor_stored_row(engine, "samples", 9999)
    doctored, _ = reports(engine, cold=False)
    assert (doctored["samples"] != warm_daily["samples"]).sum() == 1
    assert 9999 in doctored["samples"].tolist()

    # A late counter reading in the middle of history: only its series is recomputed, so the
    # doctored gauge row is still served as stored while the counter's figures change.
    store(engine, [nected(T0 + timedelta(hours=60, minutes=30), 1605)], bulk=False)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(RollupDirty)) == 1
    warm_daily, _ = reports(engine, cold=False)
    cold_daily, _ = reports(engine, cold=True)
    differs = warm_daily.compare(cold_daily)
    assert list(differs.index) == [int(doctored["samples"].tolist().index(9999))]
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(RollupDirty)) == 0

    # A late gauge sample in a gap (its staleness spills into the next day): recomputed too.
    store(engine, [wiresocket(T0 + timedelta(hours=49), 9.0)], bulk=True)
    assert_warm_equals_cold(engine)


def test_a_report_in_another_zone_keeps_and_serves_rollups_of_that_zone(engine: Engine) -> None:
    store(engine, history(), bulk=True)
    first_daily, _ = reports(engine, cold=False, tz=OTHER_TZ)
    with engine.connect() as conn:
        zones = set(conn.scalars(select(RollupDay.tz).distinct()))
    assert zones == {OTHER_TZ}  # the configured zone was not asked for, so not rolled up
    # A second run in that zone reads the stored rows (a doctored one shows up)...
    with engine.begin() as conn:
        ws_id = conn.scalar(select(Series.id).where(Series.source == "ws",
                                                    Series.metric == "connections"))
        where = (RollupDay.series_id == ws_id, RollupDay.tz == OTHER_TZ,
                 RollupDay.day == "2026-10-24")
        data = json.loads(conn.scalar(select(RollupDay.data).where(*where)) or "{}")
        data["samples"] = 9999
        conn.execute(update(RollupDay).where(*where).values(data=json.dumps(data)))
    again, _ = reports(engine, cold=False, tz=OTHER_TZ)
    assert 9999 in again["samples"].tolist()
    # ...until a write touches that day: then it is recomputed from the samples.
    store(engine, [wiresocket(datetime(2026, 10, 24, 15, 10, tzinfo=UTC), 7.0)], bulk=False)
    after, _ = reports(engine, cold=False, tz=OTHER_TZ)
    assert 9999 not in after["samples"].tolist()
    cold, _ = reports(engine, cold=True, tz=OTHER_TZ)
    pd.testing.assert_frame_equal(after, cold)
    assert not after.equals(first_daily)  # the new sample counts


_times = st.integers(min_value=0, max_value=6 * 24 * 4 - 1)  # quarter hours from T0
_batches = st.lists(
    st.tuples(_times, st.integers(min_value=0, max_value=50), st.booleans()),
    min_size=0, max_size=40,
)


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=_batches, later=st.lists(_batches, min_size=1, max_size=3), bulk=st.booleans())
def test_warm_equals_cold_after_any_late_out_of_order_writes(
    first: list[tuple[int, int, bool]], later: list[list[tuple[int, int, bool]]], bulk: bool
) -> None:
    def batch(items: list[tuple[int, int, bool]]) -> list[Observation]:
        return [
            (nected if is_counter else wiresocket)(T0 + timedelta(minutes=15 * q), float(v))
            for q, v, is_counter in items
        ]

    with tempfile.TemporaryDirectory() as tmp:
        copy_sqlite_template(Path(tmp) / "r.db")  # a migrated database, without migrating
        with migrated_engine(f"sqlite:///{Path(tmp) / 'r.db'}") as engine:
            store(engine, batch(first), bulk)
            assert_warm_equals_cold(engine)
            for items in later:
                store(engine, batch(items), not bulk)
                assert_warm_equals_cold(engine)


def test_changed_staleness_is_not_served_from_old_rollups(engine: Engine) -> None:
    store(engine, history(), bulk=True)
    reports(engine, cold=False)
    cfg = config()
    longer = dataclasses.replace(cfg, sources=(
        cfg.sources[0], dataclasses.replace(cfg.sources[1], staleness_seconds=7200)))
    warm = daily_frame(engine, longer, START, END)
    cold = daily_frame(engine, longer, START, END, rollups=False)
    pd.testing.assert_frame_equal(warm, cold)


def test_fractional_counter_is_the_same_from_rollups_as_from_samples(engine: Engine) -> None:
    from decimal import Decimal

    # Readings as parsed from the vendor's decimal text: 1000000000.0, .1, .2, ... then a
    # reset to 0.35 at h=50 (Berlin midnight of the 25-hour day) and +0.1 an hour again.
    def reading(h: int) -> float:
        if h < 50:
            return float(Decimal(1_000_000_000) + Decimal(h) / 10)
        return float(Decimal("0.35") + Decimal(h - 50) / 10)

    store(engine, [nected(T0 + timedelta(hours=h), reading(h)) for h in range(24 * 6)],
          bulk=True)
    assert_warm_equals_cold(engine)  # computes and stores the rollups (JSON)
    assert rollup_rows(engine) > 0
    assert_warm_equals_cold(engine)  # now read back from them
    daily, bill = reports(engine, cold=False)
    inc = daily[daily["metric"] == "invocations"].set_index("date")["increase"]
    # 2026-10-24 (h 26..49): 24 x 0.1; 2026-10-25 (h 50..74): 0.35 (reset) + 24 x 0.1.
    assert (inc[date(2026, 10, 24)], inc[date(2026, 10, 25)]) == (2.4, 2.75)
    # October: 49 x 0.1 + 0.35 + 93 x 0.1, exactly.
    quantity = bill.set_index("metric").loc["invocations", "quantity"]
    assert quantity == Decimal("14.55") and str(quantity) == "14.55"


def test_a_report_finds_its_rollups_and_dirty_days_through_indexes_not_the_whole_history(
        tmp_path: Path) -> None:
    """SPEC 13: reports cost the period asked for, not the history kept. On SQLite, every
    statement a report sends to rollup_days is planned as an index search, never a scan."""
    from sqlalchemy import event

    with migrated_engine(f"sqlite:///{tmp_path / 'u.db'}") as engine:
        # A year of daily history, rolled up, then a late write marks a span dirty.
        store(engine, [nected(T0 - timedelta(days=d), 1000.0 - d) for d in range(365, 0, -1)]
              + [wiresocket(T0 - timedelta(days=d), 3.0) for d in range(365, 0, -1)], bulk=True)
        reports(engine, cold=False)
        store(engine, [nected(T0 + timedelta(hours=30), 1500.0)], bulk=True)
        sent: list[tuple[str, object]] = []

        def keep(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if "rollup_days" in statement and not executemany:
                sent.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", keep)
        reports(engine, cold=False)
        event.remove(engine, "before_cursor_execute", keep)
        reads = [(s, p) for s, p in sent if s.lstrip().upper().startswith(("SELECT", "DELETE"))]
        assert any("series_id IN" in s.replace("\n", " ") for s, _ in reads)  # the stored days
        assert any("max(rollup_days.staleness)" in s for s, _ in reads)  # the dirty marks
        with engine.connect() as conn:
            for statement, parameters in reads:
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                            parameters).all()  # type: ignore[arg-type]
                details = " | ".join(str(row[-1]) for row in plan)
                assert "SCAN rollup_days" not in details, (statement, details)


def test_a_billing_report_serves_the_stored_rows_of_its_billed_series_named_or_not(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The billing report reads only the rollups of the series it bills (2 of 3 here), by
    # their ids; beyond RollupStore.MOST_NAMED ids it reads every series' rows instead.
    from etl.store.rollups import RollupStore

    store(engine, history(), bulk=True)
    _, cold_bill = reports(engine, cold=True)
    reports(engine, cold=False)  # stores the rollups
    doctor_stored_row(engine, "max", 77.0)
    for most in (RollupStore.MOST_NAMED, 1):
        monkeypatch.setattr(RollupStore, "MOST_NAMED", most)
        _, warm_bill = reports(engine, cold=False)
        by_metric = warm_bill.set_index("metric")
        assert str(by_metric.loc["connections", "quantity"]) == "77"  # the stored row
        pd.testing.assert_series_equal(by_metric.loc["invocations"],
                                       cold_bill.set_index("metric").loc["invocations"])
