"""Reports over stored samples, on SQLite and PostgreSQL: daily rows, billing, reconciliation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlalchemy import Engine

from etl.config import Config, parse_config
from etl.errors import InputError
from etl.store import Observation, SampleValue, store_observations
from reports.frames import billing_frame, daily_frame, reconcile_frame
from reports.periods import local_midnight

NOW = datetime(2027, 1, 1, tzinfo=UTC)  # every test month is over


def make_config(tz: str = "UTC", billing: Iterable[dict[str, Any]] = (),
                ws_name: str = "ws-prod") -> Config:
    return parse_config({
        "timezone": tz,
        "sources": [
            {"name": ws_name, "kind": "wiresocket", "region": "eu", "token_env": "WS_T",
             "interval_seconds": 300},
            {"name": "rules", "kind": "nected", "api_key_env": "NE_K",
             "interval_seconds": 300},
        ],
        "billing": list(billing),
    })


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def nected(when: datetime, value: int) -> Observation:
    body = {"data": {"invocations": value}, "code": "success", "message": "Success."}
    return Observation("rules", "nected", when, json.dumps(body),
                       (SampleValue("invocations", float(value)),), origin="import")


def wiresocket(when: datetime, conns: float, docs: float = 1, limit: float = 100,
               tenant: str = "t-1", source: str = "ws-prod") -> Observation:
    body = {"tenantId": tenant, "appId": "app-1",
            "usage": {"connections": {"current": conns, "limit": limit},
                      "documents": {"current": docs, "limit": 20}},
            "timestamp": when.isoformat()}
    return Observation(source, "wiresocket", when, json.dumps(body),
                       (SampleValue("connections", conns, limit),
                        SampleValue("documents", docs, 20.0)), origin="import")


def store(engine: Engine, observations: Iterable[Observation]) -> None:
    with engine.begin() as conn:
        store_observations(conn, list(observations))


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
def test_berlin_dst_days(engine: Engine, day: date, hours: int) -> None:
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


def billing_rules(included_inv: int = 100, price_inv: str = "0.001",
                  included_peak: int = 100, price_peak: str = "0.50") -> list[dict[str, Any]]:
    return [
        {"source": "rules", "metric": "invocations", "aggregation": "increase",
         "included": included_inv, "unit_price": price_inv, "currency": "USD"},
        {"source": "ws-prod", "metric": "connections", "aggregation": "peak",
         "included": included_peak, "unit_price": price_peak, "currency": "EUR"},
    ]


def seed_month(engine: Engine) -> None:
    """May 2026: invocations +105 over the month (one reset), connections peak 103.5."""
    store(engine, [
        nected(at("2026-04-30T23:00:00"), 1_000),  # before the month: the predecessor
        nected(at("2026-05-02T12:00:00"), 1_050),  # +50
        nected(at("2026-05-15T12:00:00"), 25),  # reset: +25
        nected(at("2026-05-31T22:30:00"), 55),  # +30
        nected(at("2026-06-01T01:00:00"), 80),  # June
        wiresocket(at("2026-05-10T08:00:00"), 90),
        wiresocket(at("2026-05-20T08:00:00"), 103.5),
        wiresocket(at("2026-06-02T08:00:00"), 500),
    ])


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
    from etl.models import to_micros
    from reports.load import read_samples, series_ids

    t0 = at("2026-05-03T10:00:00")
    limits = [100.0, None, float("-inf"), 250.0]
    obs = [Observation("ws", "wiresocket", t0 + timedelta(minutes=k), "{}",
                       (SampleValue("connections", 10.0 + k, lim),
                        SampleValue("documents", 1.0, None)))
           for k, lim in enumerate(limits)]
    with engine.begin() as conn:
        store_observations(conn, obs)
    sid = series_ids(engine)[("ws", "connections")]
    with engine.connect() as conn:
        arr = read_samples(conn, sid, to_micros(t0), to_micros(t0 + timedelta(hours=1)))
        tail = read_samples(conn, sid, to_micros(t0 + timedelta(minutes=3)),
                            to_micros(t0 + timedelta(hours=1)))
    assert arr.t.tolist() == [to_micros(t0) + k * 60_000_000 for k in range(4)]
    assert arr.value.tolist() == [10.0, 11.0, 12.0, 13.0]
    assert arr.limit[0] == 100.0 and pd.isna(arr.limit[1]) and arr.limit[2] == float("-inf")
    assert tail.limit.tolist() == [250.0] and len(tail) == 1
