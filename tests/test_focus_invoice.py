"""FOCUS files as invoices (SPEC 12): `reconcile --invoice` with a vendor's FOCUS charges.

docs/examples/focus-month.toml's November history is imported on SQLite and PostgreSQL and
reconciled against docs/examples/vercel-focus-2026-11.csv (a Vercel-style FOCUS export:
daily rows, one row of October, a service no rule bills), as CSV, gzip CSV under another
name, and Parquet; then usage-etl's own FOCUS file is reconciled against the same month.
"""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from etl.cli import cli
from tests.factories import GZIP_DAMAGE, REPO, damaged_gzip, load

EXAMPLE = REPO / "docs" / "examples" / "focus-month.toml"
HISTORY = REPO / "docs" / "examples" / "focus-history.jsonl"
VERCEL = REPO / "docs" / "examples" / "vercel-focus-2026-11.csv"
MONTH = "2026-11"
# (source, metric): status, metered amount, invoiced quantity, invoiced amount.
EXPECTED = {
    # 25 daily rows of 10,000 requests at 12.00; the row of October 31 is not counted.
    ("api", "invocations"): ("match", "300.00", "250000", "300.00"),
    # 3 rows of 1,000 at 15.00: 45.00 against 40.00 metered.
    ("batch", "invocations"): ("mismatch", "40.00", "3000", "45.00"),
    # No row has SkuId ws/connections (its default selector).
    ("ws", "connections"): ("missing_invoice", "25.00", "", ""),
    # Rows no rule selects, one line per ServiceName/SkuId: 50.5 + 49.5 GB, 7.50 + 7.42.
    ("", "Bandwidth/fast-data-transfer"): ("missing_metered", "", "100", "14.92"),
}


def run(db_url: str, *args: str, config: Path = EXAMPLE) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "--database-url", db_url, *args])


@pytest.fixture
def month(empty_db_url: str) -> str:
    result = run(empty_db_url, "import", str(HISTORY))
    assert result.exit_code == 0, result.output
    return empty_db_url


def reconciled(db_url: str, invoice: Path, out: Path, config: Path = EXAMPLE
               ) -> dict[tuple[str, str], tuple[str, str, str, str]]:
    result = run(db_url, "reconcile", "--month", MONTH, "--invoice", str(invoice),
                 "--format", "csv", "--out", str(out), config=config)
    assert result.exit_code == 0, result.output
    with (out / f"reconcile-{MONTH}.csv").open(newline="") as fh:
        return {(r["source"], r["metric"]): (r["status"], r["metered_amount"],
                                             r["invoiced_quantity"], r["invoiced_amount"])
                for r in csv.DictReader(fh)}


def test_a_vendors_focus_csv_reconciles_matched_mismatched_missing_and_unmatched_rows(
        month: str, tmp_path: Path) -> None:
    assert reconciled(month, VERCEL, tmp_path) == EXPECTED


def test_gzip_and_parquet_focus_files_are_told_by_content_whatever_their_name(
        month: str, tmp_path: Path) -> None:
    zipped = tmp_path / "charges.txt"
    zipped.write_bytes(gzip.compress(VERCEL.read_bytes()))
    assert reconciled(month, zipped, tmp_path / "gz") == EXPECTED
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    from pyarrow import csv as pacsv

    table = pacsv.read_csv(VERCEL, convert_options=pacsv.ConvertOptions(
        column_types={"BilledCost": pa.decimal128(12, 2), "ConsumedQuantity": pa.float64()}))
    parquet = tmp_path / "charges.csv"  # a Parquet file, whatever its name says
    pq.write_table(table, parquet)
    assert reconciled(month, parquet, tmp_path / "pq") == EXPECTED


def test_usage_etls_own_focus_file_reconciles_every_rule_as_a_match(
        month: str, tmp_path: Path) -> None:
    # Without focus_match a rule selects SkuId `source/metric`, what `report focus` writes.
    plain = tmp_path / "plain.toml"
    plain.write_text("\n".join(line for line in EXAMPLE.read_text().splitlines()
                               if not line.startswith("focus_match")))
    result = run(month, "report", "focus", "--month", MONTH, "--out", str(tmp_path),
                 config=plain)
    assert result.exit_code == 0, result.output
    got = reconciled(month, tmp_path / f"focus-{MONTH}.csv", tmp_path / "r", config=plain)
    assert {k: v[0] for k, v in got.items()} == {
        ("api", "invocations"): "match", ("batch", "invocations"): "match",
        ("ws", "connections"): "match"}
    # With the example's focus_match no rule selects the api rows (Functions is Vercel's
    # name): they are missing_metered at the charge, 300.00, not netted with the Credit
    # row of the same SkuId (-100.00) as they were.
    got = reconciled(month, tmp_path / f"focus-{MONTH}.csv", tmp_path / "m")
    assert got[("", "api/api/invocations")] == ("missing_metered", "", "250000", "300.00")
    assert load(plain).billing[0].focus_match == ()
    assert replace(load(EXAMPLE).billing[0]).focus_match == (
        ("ServiceName", "Functions"), ("SkuId", "fn-invocations"))


@pytest.mark.parametrize(("cell", "problem"), [
    ("12,00", "column BilledCost: '12,00' has a ','"),
    ("$12.00", "column BilledCost: '$12.00' has a currency sign ($)"),
    ("nan", "column BilledCost: 'nan' is not a number"),
    ("", "column BilledCost: empty, expected a number"),
])
def test_a_bad_number_is_refused_naming_file_and_line(tmp_path: Path, cell: str,
                                                       problem: str) -> None:
    lines = VERCEL.read_text().splitlines()
    # Line 5 of the file: its fourth data row.
    lines[4] = ('"' + cell + '"' if "," in cell else cell) + lines[4][lines[4].index(","):]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    result = run(f"sqlite:///{tmp_path / 'usage.db'}", "reconcile", "--month", MONTH,
                 "--invoice", str(bad), "--out", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.startswith(f"usage-etl: error: {bad}:5: {problem}")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("damage", GZIP_DAMAGE)
def test_a_damaged_gzip_focus_file_is_one_line_naming_it(tmp_path: Path, damage: str) -> None:
    # A first block that is not deflate data ended in a zlib traceback; data cut off halfway
    # in "usage-etl: error: Truncated compressed stream", naming no file.
    broken = tmp_path / "charges.csv.gz"
    broken.write_bytes(damaged_gzip(VERCEL.read_bytes() * 50, damage))
    result = run(f"sqlite:///{tmp_path / 'usage.db'}", "reconcile", "--month", MONTH,
                 "--invoice", str(broken), "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"usage-etl: error: {broken}: "), line
    assert "gzip" in line or "Compressed file ended" in line, line


def test_a_bad_charge_period_start_and_a_missing_column_are_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'usage.db'}"
    text = VERCEL.read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(text.replace("2026-11-03T00:00:00Z,2026-11-04", "Nov 3,2026-11-04", 1))
    result = run(db, "reconcile", "--month", MONTH, "--invoice", str(bad))
    assert result.exit_code == 2
    assert f"{bad}:5: column ChargePeriodStart: 'Nov 3' is not a date and time" in result.output
    no_sku = tmp_path / "no-sku.csv"
    no_sku.write_text(text.replace(",SkuId,", ",Sku,", 1))
    result = run(db, "reconcile", "--month", MONTH, "--invoice", str(no_sku))
    assert result.exit_code == 2
    assert f"{no_sku}:1: missing FOCUS column(s): SkuId" in result.output


def test_a_focus_file_without_rows_in_the_month_is_refused(tmp_path: Path) -> None:
    result = run(f"sqlite:///{tmp_path / 'usage.db'}", "reconcile", "--month", "2026-09",
                 "--invoice", str(VERCEL))
    assert result.exit_code == 2
    assert "no FOCUS row has a ChargePeriodStart in 2026-09" in result.output


def test_without_pyarrow_a_focus_csv_still_reconciles_and_parquet_names_the_extra(
        month: str, tmp_path: Path) -> None:
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

    def reconcile(invoice: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "etl", "--config", str(EXAMPLE), "--database-url", month,
             "reconcile", "--month", MONTH, "--invoice", str(invoice), "--format", "csv",
             "--out", str(tmp_path / "out")],
            capture_output=True, text=True, env=env, timeout=120)

    proc = reconcile(VERCEL)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "out" / f"reconcile-{MONTH}.csv").open(newline="") as fh:
        statuses = {(r["source"], r["metric"]): r["status"] for r in csv.DictReader(fh)}
    assert statuses == {k: v[0] for k, v in EXPECTED.items()}
    broken = tmp_path / "charges.csv.gz"  # read by the csv module: a zlib error is one line
    broken.write_bytes(damaged_gzip(VERCEL.read_bytes(), "first_block"))
    proc = reconcile(broken)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"usage-etl: error: {broken}: not a FOCUS CSV file: Error -3 ")
    assert len(proc.stderr.strip().splitlines()) == 1
    parquet = tmp_path / "charges.parquet"
    parquet.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    proc = reconcile(parquet)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("usage-etl: error: a Parquet FOCUS invoice needs pyarrow, "
                                   "which is not installed: pip install 'usage-etl[parquet]'")


def test_a_bad_number_in_a_parquet_file_names_its_row(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from pyarrow import csv as pacsv

    table = pacsv.read_csv(VERCEL)  # BilledCost as text below, like a careless export
    costs = [str(v) for v in table.column("BilledCost").to_pylist()]
    costs[3] = "12 000"
    import pyarrow as pa

    table = table.set_column(0, "BilledCost", pa.array(costs, type=pa.string()))
    bad = tmp_path / "bad.parquet"
    pq.write_table(table, bad)
    result = run(f"sqlite:///{tmp_path / 'usage.db'}", "reconcile", "--month", MONTH,
                 "--invoice", str(bad))
    assert result.exit_code == 2
    assert result.output.startswith(f"usage-etl: error: {bad}:4: column BilledCost: '12 000' "
                                    "has a space as a grouping separator")
