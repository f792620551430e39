"""Every billing quantity and pricing model end to end: docs/examples/billing-all-models.toml.

The history is imported as a JSONL archive, then the billing report, reconciliation and the
DataFrame API are run on SQLite and PostgreSQL, cold (from samples) and warm (from the stored
day rollups), and every amount is the one worked out by hand in the config's comments.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import reports
from etl.cli import cli
from tests.factories import REPO

EXAMPLE = REPO / "docs" / "examples" / "billing-all-models.toml"
MONTH = "2026-10"

# (source, metric): aggregation, pricing, quantity, overage, unit_price, amount, currency
EXPECTED = {
    ("api", "invocations"): ("increase", "graduated", "7501", "6501", "", "103.51", "USD"),
    ("batch", "invocations"): ("increase", "package", "25001", "25001", "", "100.00", "EUR"),
    ("ws-eu", "connections"): ("p95", "volume", "95", "95", "", "7600", "JPY"),
    ("ws-eu", "documents"): ("last", "per_unit", "20", "18", "0.12525", "2.255", "KWD"),
    ("ws-us", "connections"): ("unit_hours", "per_unit", "795", "295", "0.02", "15.90", "USD"),
    ("ws-us", "documents"): ("twa", "graduated", "4.2353", "4.2353", "", "3.12", "USD"),
    ("ws-ap", "connections"): ("peak", "per_unit", "130", "30", "0.50", "15.00", "EUR"),
}


def z(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def nected(source: str, when: datetime, value: int) -> dict[str, Any]:
    return {"source": source, "observed_at": z(when),
            "body": {"data": {"invocations": value}, "code": "success", "message": "Success."}}


def wiresocket(source: str, when: datetime, conns: float, docs: float) -> dict[str, Any]:
    return {"source": source, "body": {
        "tenantId": "t-1", "appId": "a-1", "timestamp": z(when),
        "usage": {"connections": {"current": conns, "limit": 1000},
                  "documents": {"current": docs, "limit": 100}}}}


def october_history() -> list[dict[str, Any]]:
    """The readings the comments of billing-all-models.toml describe (October 2026, UTC)."""
    day = datetime(2026, 10, 1, tzinfo=UTC)
    lines = [
        nected("api", day, 0), nected("api", day + timedelta(days=9), 7000),
        nected("api", day + timedelta(days=19), 7501),
        nected("batch", day, 0), nected("batch", day + timedelta(days=14), 25001),
        # Next month: counted in November, not here.
        nected("api", day + timedelta(days=31), 9000),
    ]
    # ws-eu: one reading a day at noon on days 1-20: connections 5, 10, ..., 100; documents d.
    lines += [wiresocket("ws-eu", day + timedelta(days=d - 1, hours=12), 5 * d, d)
              for d in range(20, 0, -1)]
    # ws-us (staleness 1 h): 30 connections / 4 documents every hour of Oct 2, then a gap, then
    # 50 / 8 at 00:00 and 00:30 on Oct 5 (the second holds 1 h: stale at 01:30).
    oct2, oct5 = day + timedelta(days=1), day + timedelta(days=4)
    lines += [wiresocket("ws-us", oct2 + timedelta(hours=h), 30, 4) for h in range(24)]
    lines += [wiresocket("ws-us", oct5, 50, 8), wiresocket("ws-us", oct5 + timedelta(minutes=30), 50, 8)]
    lines += [wiresocket("ws-ap", day + timedelta(days=d), c, 1)
              for d, c in ((3, 90), (12, 130), (25, 110))]
    return lines


@pytest.fixture
def history(empty_db_url: str, tmp_path: Path) -> tuple[str, Path]:
    archive = tmp_path / "october.jsonl"
    archive.write_text("".join(json.dumps(line) + "\n" for line in october_history()))
    result = run(empty_db_url, "import", str(archive))
    assert result.exit_code == 0, result.output
    return empty_db_url, tmp_path


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(EXAMPLE), "--database-url", db_url, *args])


def read_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {(r["source"], r["metric"]): r for r in csv.DictReader(fh)}


def billing_csv(db_url: str, out: Path) -> dict[tuple[str, str], dict[str, str]]:
    result = run(db_url, "report", "billing", "--month", MONTH, "--format", "both",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    return read_rows(out / f"billing-{MONTH}.csv")


def test_every_model_bills_the_worked_amounts_cold_and_warm(history: tuple[str, Path]) -> None:
    db_url, tmp = history
    cold = billing_csv(db_url, tmp / "cold")  # computes the day rows and stores them
    warm = billing_csv(db_url, tmp / "warm")  # reads them back (p95 reads its samples)
    for rows in (cold, warm):
        got = {key: (r["aggregation"], r["pricing"], r["quantity"], r["overage"],
                     r["unit_price"], r["amount"], r["currency"]) for key, r in rows.items()}
        assert got == EXPECTED
    assert (tmp / "cold" / f"billing-{MONTH}.csv").read_text() == \
        (tmp / "warm" / f"billing-{MONTH}.csv").read_text()
    assert cold[("batch", "invocations")]["minimum_applied"] == "true"
    assert cold[("ws-us", "connections")]["minimum_applied"] == "false"


def test_the_html_report_shows_the_tiers_each_tiered_rule_reached(
        history: tuple[str, Path]) -> None:
    db_url, tmp = history
    billing_csv(db_url, tmp)
    html = (tmp / f"billing-{MONTH}.html").read_text()
    # api: 6,501 billable units in three graduated tiers (the second with its flat price 5).
    start = html.index("Tiers reached: api / invocations")
    api_tiers = html[start:html.index("</table>", start)]
    cells = [c.split("</td>")[0] for c in api_tiers.split('num">')[1:]]
    assert cells == ["1,000", "0.01", "0", "10.00",
                     "4,000", "0.008", "5", "37.000",
                     "1,501", "0.005", "0", "7.505"]
    assert "Tiers reached: ws-eu / connections" in html  # volume: one tier
    assert "Tiers reached: ws-eu / documents" not in html  # per unit: no tiers


def test_reconciliation_prices_the_metered_quantity_with_the_same_function(
        history: tuple[str, Path]) -> None:
    db_url, tmp = history
    invoice = tmp / "invoice.csv"
    rows = [f"{s},{MONTH},{m},{q},{a}" for (s, m), (_, _, q, _, _, a, _) in EXPECTED.items()]
    rows[0] = f"api,{MONTH},invocations,7501,103.50"  # the vendor rounded the half cent down
    invoice.write_text("source,month,metric,quantity,amount\n" + "\n".join(rows) + "\n")
    result = run(db_url, "reconcile", "--month", MONTH, "--invoice", str(invoice),
                 "--tolerance-pct", "0", "--format", "csv", "--out", str(tmp))
    assert result.exit_code == 0, result.output
    got = read_rows(tmp / f"reconcile-{MONTH}.csv")
    assert {k: r["status"] for k, r in got.items()} == {
        k: "mismatch" if k == ("api", "invocations") else "match" for k in EXPECTED}
    api = got[("api", "invocations")]
    assert (api["metered_amount"], api["invoiced_amount"], api["amount_diff"]) == (
        "103.51", "103.50", "0.01")


@pytest.mark.parametrize("rollups", [False, True])
def test_the_dataframe_api_gives_the_report_amounts(history: tuple[str, Path],
                                                    rollups: bool) -> None:
    db_url, _ = history
    for _ in range(2):  # with rollups: the second run is warm
        df = reports.billing(db_url, MONTH, config=str(EXAMPLE), decimal=True, rollups=rollups,
                             now=datetime(2027, 1, 1, tzinfo=UTC))
        got = {(r.source, r.metric): (str(r.pricing), r.amount) for r in df.itertuples()}
        assert got == {k: (v[1], Decimal(v[5])) for k, v in EXPECTED.items()}


def test_the_month_end_projection_is_priced_by_the_same_rules(history: tuple[str, Path]) -> None:
    db_url, _ = history
    # 15 of October's 31 days have passed; the 16th has begun and counts whole.
    now = datetime(2026, 10, 16, tzinfo=UTC)
    df = reports.billing(db_url, MONTH, config=str(EXAMPLE), decimal=True, now=now)
    got = {(r.source, r.metric): (r.mtd_quantity, r.projected_quantity, r.projected_amount)
           for r in df.itertuples()}
    # api: 7,000 so far x 31 / 15 = 14,466.6667; 13,466.6667 billable:
    # 10 + 37 + (13,466.6667 - 5,000) x 0.005 + 49 = 138.3333335 -> 138.33
    assert got[("api", "invocations")] == (Decimal(7000), Decimal("14466.6667"), Decimal("138.33"))
    # batch: 25,001 x 31 / 15 = 51,668.7333 -> 6 packages of 25 = 150.00 (above the minimum)
    assert got[("batch", "invocations")] == (
        Decimal(25001), Decimal("51668.7333"), Decimal("150.00"))
    # ws-us connection-hours: 795 x 31 / 15 = 1,643; (1,643 - 500) x 0.02 + 10 = 32.86
    assert got[("ws-us", "connections")] == (Decimal(795), Decimal(1643), Decimal("32.86"))
    # Levels are not extrapolated: p95 of the readings of days 1-16 (5..80): rank 16 is 80.
    assert got[("ws-eu", "connections")] == (Decimal(80), Decimal(80), Decimal(6400))
    assert got[("ws-ap", "connections")] == (Decimal(130), Decimal(130), Decimal("15.00"))
