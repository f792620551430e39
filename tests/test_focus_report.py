"""`report focus` (SPEC 12): docs/examples/focus-month.toml's November as a FOCUS 1.2 file.

The history (docs/examples/focus-history.jsonl) is imported on SQLite and PostgreSQL, and the
CSV, the Parquet file and the DataFrame API are checked against the amounts worked out in the
example's comments: usage, a flat fee as a Purchase, a minimum's shortfall, tiers.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import reports
from etl.cli import cli
from tests.factories import REPO

EXAMPLE = REPO / "docs" / "examples" / "focus-month.toml"
HISTORY = REPO / "docs" / "examples" / "focus-history.jsonl"
MONTH = "2026-11"
# FOCUS 1.2's Mandatory columns (FOCUS 1.2 Column Definitions; the validator's
# CostAndUsage-D-*-M rules).
MANDATORY = {
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
}
WRITTEN_TOO = {
    # Recommended
    "ChargeFrequency", "InvoiceId", "ServiceSubcategory",
    # Conditional: usage is measured, SKUs are priced
    "ConsumedQuantity", "ConsumedUnit", "SkuId", "SkuMeter", "SkuPriceId", "SkuPriceDetails",
    # FOCUS 1.3
    "ServiceProviderName", "HostProviderName",
}
DECIMALS = {"BilledCost", "ConsumedQuantity", "ContractedCost", "EffectiveCost", "ListCost",
            "PricingQuantity"}
INSTANTS = {"BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"}
# (SkuId, ChargeCategory, ChargeFrequency): BilledCost, EffectiveCost, ConsumedQuantity,
# PricingQuantity, PricingUnit, BillingCurrency: from the example's comments.
EXPECTED = {
    ("api/invocations", "Usage", "Usage-Based"):
        ("300.00", "300.00", "250000.0", "150000.0", "Requests", "USD"),
    ("api/invocations", "Credit", "Usage-Based"):
        ("-100.00", "-100.00", "", "", "", "USD"),
    ("batch/invocations", "Usage", "Usage-Based"):
        ("20.00", "20.00", "3000.0", "3000.0", "Invocations", "EUR"),
    ("batch/invocations", "Purchase", "Recurring"):
        ("20.00", "0.0", "", "1.0", "Month", "EUR"),
    ("ws/connections", "Usage", "Usage-Based"):
        ("0.00", "0.00", "90.0", "0.0", "Connections", "USD"),
    ("ws/connections", "Usage", "Recurring"):
        ("25.00", "25.00", "0.0", "1.0", "Month", "USD"),
}
# The ws rule's period starts on its cycle_day, the 15th (SPEC 11).
PERIODS = {"ws": ("2026-11-15T00:00:00Z", "2026-12-15T00:00:00Z")}
MONTH_PERIOD = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(EXAMPLE), "--database-url", db_url, *args])


@pytest.fixture
def month(empty_db_url: str) -> str:
    result = run(empty_db_url, "import", str(HISTORY))
    assert result.exit_code == 0, result.output
    return empty_db_url


def focus_file(db_url: str, out: Path, fmt: str = "csv") -> Path:
    result = run(db_url, "report", "focus", "--month", MONTH, "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    path = out / f"focus-{MONTH}.{fmt}"
    assert result.output.strip() == str(path)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_focus_csv_has_every_mandatory_column_and_a_row_per_charge_as_worked_out(
        month: str, tmp_path: Path) -> None:
    rows = read_csv(focus_file(month, tmp_path))
    assert set(rows[0]) == MANDATORY | WRITTEN_TOO
    got = {(r["SkuId"], r["ChargeCategory"], r["ChargeFrequency"]):
           (r["BilledCost"], r["EffectiveCost"], r["ConsumedQuantity"], r["PricingQuantity"],
            r["PricingUnit"], r["BillingCurrency"]) for r in rows}
    assert got == EXPECTED
    assert len(rows) == len(EXPECTED)
    for r in rows:
        assert r["ChargeClass"] == ""
        assert r["ContractedCost"] == r["ListCost"] == r["BilledCost"]
        assert r["ServiceCategory"] == "Other" and r["ServiceSubcategory"] == "Other (Other)"
        start, end = PERIODS.get(r["ServiceName"], MONTH_PERIOD)
        assert r["ChargePeriodStart"] == r["BillingPeriodStart"] == start
        assert r["ChargePeriodEnd"] == r["BillingPeriodEnd"] == end
        # Decimals are written as decimals: a point, never an exponent.
        for col in DECIMALS:
            assert r[col] == "" or ("." in r[col] and "e" not in r[col].lower()), (col, r[col])
    api = {r["ServiceName"]: r for r in rows if r["ChargeCategory"] == "Usage"}["api"]
    # vendor_name and account_id on the source; the others default to kind and name.
    assert (api["ProviderName"], api["PublisherName"], api["InvoiceIssuerName"],
            api["ServiceProviderName"], api["HostProviderName"]) == ("Nected",) * 5
    assert (api["BillingAccountId"], api["BillingAccountName"]) == ("acct-1001", "api")
    assert api["InvoiceId"] == "acct-1001/2026-11"
    ws = next(r for r in rows if r["ServiceName"] == "ws")
    assert (ws["ProviderName"], ws["BillingAccountId"]) == ("wiresocket", "ws")
    assert ws["SkuMeter"] == "connections" and ws["ConsumedUnit"] == "Connections"
    # The credit: negative, EffectiveCost as billed, no quantities, naming the credit.
    credit = next(r for r in rows if r["ChargeCategory"] == "Credit")
    assert (credit["SkuPriceId"], credit["SkuPriceDetails"], credit["PricingUnit"]) == ("",) * 3
    assert credit["ChargeDescription"].endswith("paid from the prepaid credit api-prepaid")


def test_billed_cost_adds_up_to_the_billing_reports_amount_per_currency(
        month: str, tmp_path: Path) -> None:
    rows = read_csv(focus_file(month, tmp_path))
    billed: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        billed[r["BillingCurrency"]] += Decimal(r["BilledCost"])
    result = run(month, "report", "billing", "--month", MONTH, "--format", "csv",
                 "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    due: dict[str, Decimal] = defaultdict(Decimal)
    for r in read_csv(tmp_path / f"billing-{MONTH}.csv"):
        due[r["currency"]] += Decimal(r.get("amount_due") or r["amount"])
    # 300.00 - 100.00 (the credit) + 25.00 USD; 40.00 EUR.
    assert billed == due == {"USD": Decimal("225.00"), "EUR": Decimal("40.00")}
    # Each rule's rows add up to its amount_due.
    per_rule: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        per_rule[r["SkuId"]] += Decimal(r["BilledCost"])
    assert per_rule == {"api/invocations": Decimal("200.00"),
                        "batch/invocations": Decimal("40.00"),
                        "ws/connections": Decimal("25.00")}


def test_tiers_and_the_price_are_in_sku_price_details_as_provider_properties(
        month: str, tmp_path: Path) -> None:
    rows = read_csv(focus_file(month, tmp_path))
    details = {r["SkuId"]: json.loads(r["SkuPriceDetails"], parse_float=Decimal)
               for r in rows if r["SkuPriceDetails"]}
    assert details["batch/invocations"] == {
        "x_Pricing": "graduated", "x_IncludedUnits": 0,
        "x_Tier1UpTo": 1000, "x_Tier1UnitPrice": Decimal("0.01"), "x_Tier1FlatPrice": 0,
        "x_Tier2UnitPrice": Decimal("0.005"), "x_Tier2FlatPrice": 0, "x_FlatFee": 20}
    assert details["ws/connections"] == {"x_Pricing": "per_unit", "x_IncludedUnits": 100,
                                         "x_UnitPrice": Decimal("0.5"), "x_Minimum": 25}


def test_the_parquet_file_holds_exact_decimals_utc_instants_and_the_same_rows(
        month: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    table = pq.read_table(focus_file(month, tmp_path, "parquet"))
    types = {f.name: f.type for f in table.schema}
    assert set(types) == MANDATORY | WRITTEN_TOO
    for col, kind in types.items():
        if col in DECIMALS:
            assert pa.types.is_decimal(kind), col
        elif col in INSTANTS:
            assert kind == pa.timestamp("us", tz="UTC"), col
        else:
            assert kind == pa.string(), col
    rows = table.to_pylist()
    usd = sum((r["BilledCost"] for r in rows if r["BillingCurrency"] == "USD"), Decimal(0))
    assert usd == Decimal("225.00")
    purchase = next(r for r in rows if r["ChargeCategory"] == "Purchase")
    assert purchase["BilledCost"] == Decimal("20.00") and purchase["EffectiveCost"] == 0
    assert purchase["ConsumedQuantity"] is None and purchase["ChargeClass"] is None
    assert purchase["ChargePeriodStart"].isoformat() == "2026-11-01T00:00:00+00:00"


def test_the_dataframe_api_gives_the_same_rows_typed(month: str) -> None:
    df = reports.focus(month, MONTH, config=str(EXAMPLE), decimal=True)
    assert set(df.columns) == MANDATORY | WRITTEN_TOO
    assert sorted(df["BilledCost"]) == sorted(Decimal(e[0]) for e in EXPECTED.values())
    assert str(getattr(df["ChargePeriodStart"].dtype, "tz", None)) == "UTC"
    assert df["ChargePeriodStart"].iloc[0].isoformat() == "2026-11-01T00:00:00+00:00"
    assert df["ChargeClass"].isna().all()
    floats = reports.focus(month, MONTH, config=str(EXAMPLE))
    assert str(floats["BilledCost"].dtype) == "Float64"
    assert floats.groupby("BillingCurrency")["BilledCost"].sum().to_dict() == {
        "EUR": 40.0, "USD": 225.0}


def test_parquet_without_pyarrow_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    # pyarrow made unimportable in a fresh interpreter (an import blocker in sitecustomize).
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pyarrow' or name.startswith('pyarrow.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    db = f"sqlite:///{tmp_path / 'usage.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "etl", "--config", str(EXAMPLE), "--database-url", db,
         "report", "focus", "--month", MONTH, "--format", "parquet", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "usage-etl: error: --format parquet needs pyarrow, which is not installed: "
        "pip install 'usage-etl[parquet]'"]
    assert not list(tmp_path.glob("focus-*"))


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("focus_match", '{ "Service Name" = "x" }', "billing[0].focus_match.Service Name: not a "
                                                 "FOCUS column name"),
    ("focus_match", '{ SkuId = 5 }', "billing[0].focus_match.SkuId: must be a string"),
    ("unit", '""', "billing[0].unit: must be a non-empty string"),
])
def test_bad_focus_keys_on_a_billing_rule_are_a_config_error_naming_the_key(
        tmp_path: Path, key: str, value: str, problem: str) -> None:
    text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}".replace("\\", "\\\\"),
                  EXAMPLE.read_text(), count=1)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "report", "focus",
                                      "--month", MONTH])
    assert result.exit_code == 2
    assert problem in result.output


def test_a_source_s_vendor_name_must_be_text(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(EXAMPLE.read_text().replace('vendor_name = "Nected"', "vendor_name = 7"))
    result = CliRunner().invoke(cli, ["--config", str(cfg), "report", "focus",
                                      "--month", MONTH])
    assert result.exit_code == 2
    assert "sources.api.vendor_name: must be a non-empty string" in result.output

