"""The worked example of docs/reports.md (SPEC 11): docs/examples/billing-credits.toml.

An annual and a promotional prepaid credit on an OpenAI-like source, and a nected plan billed
from the 15th that is upgraded mid-year. The history is imported, then the billing reports and
the reconciliation against hand-made invoices are run on SQLite and PostgreSQL: every figure
is the one docs/reports.md works out by hand.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from etl.cli import cli
from tests.factories import REPO

EXAMPLE = REPO / "docs" / "examples" / "billing-credits.toml"
HISTORY = REPO / "docs" / "examples" / "billing-credits-history.jsonl"


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(EXAMPLE), "--database-url", db_url, *args])


@pytest.fixture
def db(empty_db_url: str) -> str:
    # The readings docs/reports.md describes: total tokens at each month's end from 1 January,
    # nected invocations from 15 May (the file a reader imports to follow the example).
    result = run(empty_db_url, "import", str(HISTORY))
    assert result.exit_code == 0, result.output
    return empty_db_url


def rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["source"]: r for r in csv.DictReader(fh)}


COLUMNS = ("period_start", "period_end", "quantity", "amount", "credit_applied", "amount_due")
# Per month: the figures docs/reports.md works out, per source.
EXPECTED = {
    "2026-04": {"openai": ("2026-04-01", "2026-05-01", "100000000", "200.00", "200.00", "0.00"),
                # The first nected reading is on 15 May: no usage in the period before it.
                "rules": ("2026-04-15", "2026-05-15", "0", "0.00", "0.00", "0.00")},
    "2026-05": {"openai": ("2026-05-01", "2026-06-01", "150000000", "300.00", "300.00", "0.00"),
                "rules": ("2026-05-15", "2026-06-15", "180000", "160.00", "0.00", "160.00")},
    "2026-06": {"openai": ("2026-06-01", "2026-07-01", "150000000", "300.00", "0.00", "300.00"),
                "rules": ("2026-06-15", "2026-07-15", "620000", "169.00", "0.00", "169.00")},
}


def test_the_worked_example_bills_reconciles_and_shows_credit_balances(
        db: str, tmp_path: Path) -> None:
    for month, expected in EXPECTED.items():
        out = tmp_path / month
        result = run(db, "report", "billing", "--month", month, "--out", str(out))
        assert result.exit_code == 0, result.output
        got = {src: tuple(r[c] for c in COLUMNS)
               for src, r in rows(out / f"billing-{month}.csv").items()}
        assert got == expected, month
    may = (tmp_path / "2026-05" / "billing-2026-05.html").read_text()
    # May: the promotion (expiring first) pays 100.00, the annual credit its last 200.00.
    assert "credit openai-promo: balance 0.00 USD of 100.00, used up" in may
    assert "credit openai-annual: balance 0.00 USD of 1200.00, used up" in may
    june = (tmp_path / "2026-06" / "billing-2026-06.html").read_text()
    assert "priced by the plan valid from 2026-06-15 until further notice" in june
    for month, lines in (("2026-05", ["openai,2026-05,tokens,150000000,300.00",
                                      "rules,2026-05,invocations,180000,160.00"]),
                         ("2026-06", ["openai,2026-06,tokens,150000000,300.00",
                                      "rules,2026-06,invocations,620000,169.00"])):
        invoice = tmp_path / f"invoice-{month}.csv"
        invoice.write_text("source,month,metric,quantity,amount\n" + "\n".join(lines) + "\n")
        out = tmp_path / f"rec-{month}"
        result = run(db, "reconcile", "--month", month, "--invoice", str(invoice),
                     "--tolerance-pct", "0", "--out", str(out))
        assert result.exit_code == 0, result.output
        got = {src: (r["status"], r["amount_diff"])
               for src, r in rows(out / f"reconcile-{month}.csv").items()}
        assert got == {"openai": ("match", "0.00"), "rules": ("match", "0.00")}, month
