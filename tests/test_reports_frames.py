"""Reports over stored samples, on SQLite and PostgreSQL: daily rows, billing, reconciliation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlalchemy import Engine

from etl.errors import InputError
from etl.vendors.types import Observation
from reports.frames import billing_frame, daily_frame, reconcile_frame
from reports.periods import local_midnight
from tests.factories import (
    SUBSECOND_BILLING,
    assert_subsecond_reports,
    at,
    billing_rules,
    make_config,
    migrated_engine,
    nected,
    seed_month,
    store,
    wiresocket,
    write_subsecond_archive,
)

NOW = datetime(2027, 1, 1, tzinfo=UTC)  # every test month is over


def row(df: Any, **match: Any) -> dict[str, Any]:
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"{match}: {len(sel)} rows"
    return sel.iloc[0].to_dict()


def test_every_configured_series_gets_a_row_even_without_samples(engine: Engine) -> None:
    df = daily_frame(engine, make_config(), date(2026, 5, 1), date(2026, 5, 2))
    assert len(df) == 6  # 3 series x 2 days
    r = row(df, date=date(2026, 5, 1), metric="invocations")
    assert r["samples"] == 0 and r["increase"] == 0 and r["coverage_pct"] == 0
    assert pd.isna(r["min"]) and pd.isna(r["mean"]) and pd.isna(r["twa"] if "twa" in r else None)


def test_counter_day_with_reset_gap_duplicates_and_out_of_order_imports(engine: Engine) -> None:
    # Imported in three batches, out of order, with repeated lines.
    store(engine, [nected(at("2026-05-03T10:00:00"), 1_000), nected(at("2026-05-01T23:55:00"), 500)])
    store(engine, [nected(at("2026-05-03T12:00:00"), 40), nected(at("2026-05-03T10:00:00"), 1_000)])
    store(engine, [nected(at("2026-05-03T11:00:00"), 1_200), nected(at("2026-05-01T23:55:00"), 500),
                   nected(at("2026-05-03T13:00:00"), 100)])
    df = daily_frame(engine, make_config(), date(2026, 5, 1), date(2026, 5, 3))
    d1 = row(df, date=date(2026, 5, 1), metric="invocations")
    d2 = row(df, date=date(2026, 5, 2), metric="invocations")
    d3 = row(df, date=date(2026, 5, 3), metric="invocations")
    assert (d1["samples"], d1["increase"], d1["resets"]) == (1, 0, 0)  # first sample ever
    # The 23:55 sample covers 10 minutes: 5 on May 1, 5 on May 2.
    assert d1["coverage_pct"] == round(5 / 1440 * 100, 2)
    assert (d2["samples"], d2["increase"], d2["coverage_pct"]) == (0, 0, round(5 / 1440 * 100, 2))
    # 1000-500 (the whole gap lands here) + 200 + 40 (reset) + 60
    assert (d3["samples"], d3["increase"], d3["resets"]) == (4, 800, 1)
    assert (d3["min"], d3["max"], d3["mean"]) == (40, 1200, 585)
    assert pd.isna(d3["limit"]) and pd.isna(d3["peak_pct"])


@pytest.mark.parametrize("day,hours", [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
def test_gauge_day_on_a_berlin_dst_change_has_its_23_or_25_hours(engine: Engine, day: date, hours: int) -> None:
    # One gauge sample at half past every hour of the day: each covers 10 minutes.
    start = local_midnight(day, ZoneInfo("Europe/Berlin"))
    store(engine, [wiresocket(start + timedelta(hours=h, minutes=30), conns=h)
                   for h in range(hours)]
          + [wiresocket(start - timedelta(minutes=1), conns=99),
             wiresocket(start + timedelta(hours=hours), conns=98)])
    df = daily_frame(engine, make_config("Europe/Berlin"), day, day)
    r = row(df, metric="connections")
    assert r["samples"] == hours
    assert (r["min"], r["max"]) == (0, hours - 1)
    assert r["mean"] == pytest.approx((hours - 1) / 2)
    # 10 minutes per hour, plus 9 minutes carried in from the sample before midnight
    assert r["coverage_pct"] == round((hours * 10 + 9) / (hours * 60) * 100, 2)


def test_billing_increase_and_peak_with_overage_and_half_up_rounding(engine: Engine) -> None:
    seed_month(engine)
    config = make_config(billing=billing_rules())
    df = billing_frame(engine, config, "2026-05", now=NOW)
    inv = row(df, metric="invocations")
    assert inv["quantity"] == 105 and inv["overage"] == 5 and inv["resets"] == 1
    assert inv["amount"] == Decimal("0.01")  # 5 x 0.001 = 0.005 -> 0.01 half-up
    peak = row(df, metric="connections")
    assert peak["quantity"] == Decimal("103.5") and peak["overage"] == Decimal("3.5")
    assert peak["amount"] == Decimal("1.75") and peak["currency"] == "EUR"
    assert peak["included_used_up_on"] == date(2026, 5, 20)
    assert inv["included_used_up_on"] == date(2026, 5, 31)
    # The days of the month add up to the month.
    daily = daily_frame(engine, config, date(2026, 5, 1), date(2026, 5, 31))
    assert int(daily[daily["metric"] == "invocations"]["increase"].sum()) == 105


def test_billing_uses_the_report_timezone_for_the_month(engine: Engine) -> None:
    seed_month(engine)
    # 2026-05-31T22:30Z is June 1st 00:30 in Berlin, so May loses its last +30.
    df = billing_frame(engine, make_config("Europe/Berlin", billing_rules()), "2026-05", now=NOW)
    assert row(df, metric="invocations")["quantity"] == 75


def test_billing_month_in_progress_projects_to_month_end(engine: Engine) -> None:
    store(engine, [nected(at("2026-05-01T00:00:00"), 0), nected(at("2026-05-08T00:00:00"), 70)])
    config = make_config(billing=billing_rules(included_inv=200))
    df = billing_frame(engine, config, "2026-05", now=at("2026-05-08T00:00:00"))
    r = row(df, metric="invocations")
    assert r["mtd_quantity"] == 70 and r["mtd_amount"] == Decimal("0.00")
    assert r["projected_quantity"] == 310  # 70 per 7 days over 31 days
    assert r["projected_amount"] == Decimal("0.11")  # 110 x 0.001 = 0.11
    # 200 units at 10 a day: used up on day 20 (May 21st 00:00 -> the 21st)
    assert r["included_used_up_on"] == date(2026, 5, 21) and r["used_up_projected"]


def write_invoice(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reconciliation_gives_each_status(engine: Engine, tmp_path: Path) -> None:
    seed_month(engine)
    rules = billing_rules(included_inv=0, price_inv="0.10") + [
        {"source": "ws-prod", "metric": "documents", "aggregation": "peak", "included": 0,
         "unit_price": "1", "currency": "USD"},
    ]
    config = make_config(billing=rules)
    # invocations: 105 x 0.10 = 10.50 (invoice within 1 %: match)
    # connections: 3.5 x 0.5 = 1.75 (invoice 2.00: mismatch)
    # documents: no invoice line (missing_invoice); an unknown series (missing_metered)
    invoice = write_invoice(tmp_path / "inv.csv", (
        "source,month,metric,quantity,amount\n"
        "rules,2026-05,invocations,106,10.55\n"
        "ws-prod,2026-05,connections,104,2.00\n"
        "other,2026-05,calls,5,1.00\n"
        "rules,2026-04,invocations,1,1\n"
    ))
    df = reconcile_frame(engine, config, "2026-05", invoice, now=NOW)
    assert list(df["status"]) == ["match", "mismatch", "missing_invoice", "missing_metered"]
    m = row(df, metric="invocations")
    assert m["quantity_diff"] == -1 and m["amount_diff"] == Decimal("-0.05")
    mm = row(df, metric="connections")
    assert mm["amount_diff"] == Decimal("-0.25")
    assert "coverage" in mm["reason"]
    mi = row(df, metric="documents")
    assert mi["invoiced_quantity"] is None and mi["metered_quantity"] == 1
    mt = row(df, source="other")
    assert mt["metered_quantity"] is None and mt["invoiced_quantity"] == 5
    strict = reconcile_frame(engine, config, "2026-05", invoice, tolerance_pct=0.1, now=NOW)
    assert row(strict, metric="invocations")["status"] == "mismatch"
    assert "1 counter reset" in row(strict, metric="invocations")["reason"]


@pytest.mark.parametrize("text,message", [
    ("source,month,metric,quantity\nrules,2026-05,invocations,1\n",
     "inv.csv:1: missing column(s): amount"),
    ("source,month,metric,quantity,amount\nrules,2026-05,invocations,1,2\n"
     "rules,2026-05,invocations,x,2\n", "inv.csv:3: column quantity: 'x' is not a number"),
    ("source,month,metric,quantity,amount\nrules,2026-5,invocations,1,2\n",
     "inv.csv:2: column month: '2026-5' is not a month"),
    ("", "inv.csv:1: empty file"),
])
def test_bad_invoice_names_file_line_and_column(engine: Engine, tmp_path: Path, text: str,
                                                message: str) -> None:
    invoice = write_invoice(tmp_path / "inv.csv", text)
    with pytest.raises(InputError) as info:
        reconcile_frame(engine, make_config(billing=billing_rules()), "2026-05", invoice)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_sample_reads_keep_missing_and_odd_limits_apart(engine: Engine) -> None:
    from etl.timefmt import to_micros
    from reports.read.samples import read_samples, series_ids

    t0 = at("2026-05-03T10:00:00")
    limits = [100.0, None, float("-inf"), 250.0]
    store(engine, [wiresocket(t0 + timedelta(minutes=k), 10.0 + k, source="ws", limit=lim,
                              docs_limit=None)
                   for k, lim in enumerate(limits)])
    sid = series_ids(engine)[("ws", "connections")]
    with engine.connect() as conn:
        arr = read_samples(conn, sid, to_micros(t0), to_micros(t0 + timedelta(hours=1)))
        tail = read_samples(conn, sid, to_micros(t0 + timedelta(minutes=3)),
                            to_micros(t0 + timedelta(hours=1)))
    assert arr.t.tolist() == [to_micros(t0) + k * 60_000_000 for k in range(4)]
    assert arr.value.tolist() == [10.0, 11.0, 12.0, 13.0]
    assert arr.limit[0] == 100.0 and pd.isna(arr.limit[1]) and arr.limit[2] == float("-inf")
    assert tail.limit.tolist() == [250.0] and len(tail) == 1


def test_limit_zero_or_missing_gives_no_peak_pct(engine: Engine, tmp_path: Path) -> None:
    from reports.jobs import build_daily

    def gauge(when: datetime, conns: float, limit: float | None) -> Observation:
        return wiresocket(when, conns, limit=limit)

    store(engine, [
        gauge(at("2026-05-03T10:00:00"), 5, 0), gauge(at("2026-05-03T11:00:00"), 7, 0),
        gauge(at("2026-05-04T10:00:00"), 5, None), gauge(at("2026-05-04T11:00:00"), 7, None),
        # 40 of limit 0 has no percentage; 10 of 50 is 20 %; the last limit seen is 50.
        gauge(at("2026-05-05T10:00:00"), 40, 0), gauge(at("2026-05-05T11:00:00"), 10, 50),
        gauge(at("2026-05-05T12:00:00"), 20, None),
    ])
    config = make_config()
    df = daily_frame(engine, config, date(2026, 5, 3), date(2026, 5, 5))
    zero = row(df, date=date(2026, 5, 3), metric="connections")
    assert (zero["max"], zero["limit"]) == (7, 0) and pd.isna(zero["peak_pct"])
    assert zero["warning_minutes"] == 0 and zero["critical_minutes"] == 0
    missing = row(df, date=date(2026, 5, 4), metric="connections")
    assert missing["max"] == 7 and pd.isna(missing["limit"]) and pd.isna(missing["peak_pct"])
    mixed = row(df, date=date(2026, 5, 5), metric="connections")
    assert (mixed["max"], mixed["limit"], mixed["peak_pct"]) == (40, 50, 20.0)
    paths = build_daily(engine, config, date(2026, 5, 3), date(2026, 5, 4), formats=["csv"],
                        out_dir=tmp_path)
    cells = [p.read_text().splitlines()[1].split(",") for p in paths]
    # date, source, metric, samples, min, max, mean, limit, peak_pct, increase, resets, ...
    assert cells[0][:11] == ["2026-05-03", "ws-prod", "connections", "2", "5", "7", "6", "0",
                             "", "", ""]
    assert cells[1][:11] == ["2026-05-04", "ws-prod", "connections", "2", "5", "7", "6", "",
                             "", "", ""]


def test_invoice_with_bom_and_extra_columns_in_any_order(engine: Engine, tmp_path: Path) -> None:
    seed_month(engine)
    config = make_config(billing=billing_rules())
    # Metered: invocations 105 -> 5 over, 0.01; connections peak 103.5 -> 3.5 x 0.50 = 1.75.
    invoice = tmp_path / "inv.csv"
    invoice.write_bytes(
        "\ufeffNotes,Source,metric,amount,MONTH,quantity,currency\n"
        "plan A,rules,invocations,0.01,2026-05,105,USD\n"
        "plan B,ws-prod,connections,1.80,2026-05,103.5,EUR\n".encode())
    df = reconcile_frame(engine, config, "2026-05", invoice, now=NOW)
    inv = row(df, metric="invocations")
    assert inv["status"] == "match"
    assert (inv["invoiced_quantity"], inv["invoiced_amount"]) == (105, Decimal("0.01"))
    assert (inv["quantity_diff"], inv["amount_diff"]) == (0, Decimal("0.00"))
    conns = row(df, metric="connections")
    # 1.75 - 1.80 = -0.05, 2.8 % of the invoiced amount: beyond the default 1 %.
    assert conns["status"] == "mismatch" and conns["amount_diff"] == Decimal("-0.05")
    assert conns["quantity_diff"] == 0


def test_tolerance_of_an_invoiced_zero(engine: Engine, tmp_path: Path) -> None:
    store(engine, [nected(at("2026-05-02T00:00:00"), 500), nected(at("2026-05-20T00:00:00"), 500),
                   wiresocket(at("2026-05-10T00:00:00"), 3)])
    config = make_config(billing=billing_rules(included_inv=0, included_peak=0))
    invoice = write_invoice(tmp_path / "inv.csv", (
        "source,month,metric,quantity,amount\n"
        "rules,2026-05,invocations,0,0\n"
        "ws-prod,2026-05,connections,0,0.00\n"
    ))
    for tolerance in (1.0, 0.0, 1e6):
        df = reconcile_frame(engine, config, "2026-05", invoice, tolerance_pct=tolerance,
                             now=NOW)
        # A flat counter meters 0: equal to the invoiced 0 at any tolerance.
        flat = row(df, metric="invocations")
        assert (flat["metered_quantity"], flat["metered_amount"]) == (0, Decimal("0.00"))
        assert flat["status"] == "match"
        # Peak 3 at 0.50 meters 1.50: no percentage of 0 covers it.
        peak = row(df, metric="connections")
        assert (peak["quantity_diff"], peak["amount_diff"]) == (3, Decimal("1.50"))
        assert peak["status"] == "mismatch"


@pytest.mark.parametrize("day,hours", [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
def test_counter_with_a_reset_on_berlin_dst_days(engine: Engine, day: date, hours: int) -> None:
    start = local_midnight(day, ZoneInfo("Europe/Berlin"))
    # One reading at half past every hour of the day, +10 each, reset to 5 at hour 12; the
    # reading one minute before midnight is the predecessor and covers 9 minutes of the day.
    values = [1000 + 10 * (h + 1) if h < 12 else 5 + 10 * (h - 12) for h in range(hours)]
    store(engine, [nected(start - timedelta(minutes=1), 1000)]
          + [nected(start + timedelta(hours=h, minutes=30), v) for h, v in enumerate(values)]
          + [nected(start + timedelta(hours=hours, minutes=5), 10_000)])  # the next day
    config = make_config("Europe/Berlin")
    df = daily_frame(engine, config, day, day)
    r = row(df, metric="invocations")
    # 12 x 10 up to the reset, +5 at it, then 10 for each of the hours - 13 after it.
    expected = 12 * 10 + 5 + 10 * (hours - 13)
    assert expected == {23: 225, 25: 245}[hours]
    assert (r["samples"], r["increase"], r["resets"]) == (hours, expected, 1)
    assert (r["min"], r["max"]) == (5, 1120)
    # 10 minutes (2 x 300 s staleness) per reading, plus 9 from the one before midnight.
    assert r["coverage_pct"] == round((hours * 10 + 9) / (hours * 60) * 100, 2)
    assert r["coverage_pct"] == {23: 17.32, 25: 17.27}[hours]  # 239/1380, 259/1500


def test_sqlite_and_postgresql_agree_on_imported_subsecond_fractional_history(
        sqlite_url: str, pg_url: str, tmp_path: Path) -> None:
    import csv

    from etl.store.archive import import_archives
    from reports.jobs import build_billing, build_daily

    archive = write_subsecond_archive(tmp_path / "history.jsonl")
    config = make_config(billing=SUBSECOND_BILLING)
    texts = []
    for name, url in (("sqlite", sqlite_url), ("pg", pg_url)):
        with migrated_engine(url) as eng:
            assert import_archives(eng, config, [str(archive)]).ok
            out = tmp_path / name
            paths = build_daily(eng, config, date(2026, 5, 2), date(2026, 5, 4),
                                formats=["csv"], out_dir=out)
            paths += build_billing(eng, config, "2026-05", formats=["csv"], out_dir=out,
                                   now=NOW)
            texts.append([p.read_text() for p in paths])
    assert texts[0] == texts[1]
    rows = [list(csv.DictReader(t.splitlines())) for t in texts[0]]
    assert_subsecond_reports({"2026-05-02": rows[0], "2026-05-03": rows[1],
                              "2026-05-04": rows[2]}, rows[3])


def test_many_series_read_at_once_are_the_samples_each_series_reads_alone(engine: Engine
                                                                           ) -> None:
    # SQLite reads integral series packed, one row per series (a query each for a few series,
    # one grouped query for many), and any other series one row per sample: every kind of
    # reading and limit must come back as the one-series read has it.
    import numpy as np
    from sqlalchemy import insert

    from etl.store.models import Sample
    from etl.timefmt import to_micros
    from reports.read.samples import read_samples, read_samples_many, read_snapshot, series_ids

    t0 = at("2026-05-03T10:00:00")
    obs: list[Observation] = []
    for k in range(6):
        when = t0 + timedelta(minutes=k, microseconds=k)
        for i in range(14):  # 112 series: more than are read a query each
            obs += [wiresocket(when, 10 + k, 2, source=f"whole{i}", limit=100, docs_limit=None),
                    wiresocket(when, 10.5 + k, 3, source=f"halves{i}",
                               limit=[100, None, 2.5][k % 3], docs_limit=[20, float("-inf")][k % 2]),
                    wiresocket(when, 2**52 + k, 4, source=f"big{i}", limit=2.0**60,
                               docs_limit=[2**53, -(2.0**63)][k % 2]),
                    nected(when, 1_000 * k, source=f"rules{i}"),
                    nected(when, -7 - k, source=f"negative{i}")]
    store(engine, obs)
    ids = series_ids(engine)
    with engine.begin() as conn:  # a reading too large to bill, stored before that check
        conn.execute(insert(Sample).values(series_id=ids[("rules0", "invocations")],
                                           observed_at=t0 + timedelta(minutes=9), value=2e15))
    lo, hi = to_micros(t0), to_micros(t0 + timedelta(hours=1))
    with read_snapshot(engine) as conn:
        for sids in (sorted(ids.values()), sorted(ids.values())[:8]):
            many = read_samples_many(conn, sids, lo, hi)
            alone = {sid: read_samples(conn, sid, lo, hi) for sid in sids}
            assert many.sid.tolist() == [sid for sid in sids for _ in range(len(alone[sid]))]
            for sid in sids:
                mine = many.sid == sid
                for name in ("t", "value", "limit"):
                    got, want = getattr(many, name)[mine], getattr(alone[sid], name)
                    assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True), (
                        sid, name, got, want)
        rules = read_samples(conn, ids[("rules0", "invocations")], lo, hi)
    assert rules.value.tolist() == [1_000.0 * k for k in range(6)]


def test_series_too_long_for_one_sqlite_string_are_read_row_by_row(tmp_path: Path) -> None:
    # A month of one series is packed into one string; SQLite refuses strings beyond its
    # length limit (1 GB by default: 50 M samples), and then the rows are read instead.
    import sqlite3

    from etl.timefmt import to_micros
    from reports.read.samples import read_samples, read_samples_many, read_snapshot, series_ids

    t0 = at("2026-05-03T10:00:00")
    with migrated_engine(f"sqlite:///{tmp_path / 'long.db'}") as engine:
        store(engine, [wiresocket(t0 + timedelta(minutes=k), 10 + k) for k in range(60)])
        sids = sorted(series_ids(engine).values())
        lo, hi = to_micros(t0), to_micros(t0 + timedelta(hours=1))
        with read_snapshot(engine) as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200)  # 60 times take 1,019 characters
            many = read_samples_many(conn, sids, lo, hi)
            alone = [read_samples(conn, sid, lo, hi) for sid in sids]
    assert many.t.tolist() == [t for one in alone for t in one.t.tolist()]
    assert many.value.tolist() == [v for one in alone for v in one.value.tolist()]
    assert many.value.tolist()[:3] == [10.0, 11.0, 12.0] and len(many.t) == 120
