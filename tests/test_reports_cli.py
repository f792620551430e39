"""`usage-etl report daily | report billing | reconcile` end to end on a SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from etl.cli import cli
from tests.factories import (
    assert_subsecond_reports,
    billing_rules,
    migrated_engine,
    seed_month,
    write_reports_config,
    write_subsecond_archive,
)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "usage.db"
    out = tmp_path / "out"
    cfg = write_reports_config(tmp_path / "usage-etl.toml", f"sqlite:///{db}",
                               billing=billing_rules()[:1], reports_dir=str(out))
    with migrated_engine(f"sqlite:///{db}") as eng:
        seed_month(eng)
    return cfg, out


def run(cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(cfg), *args])


def test_report_daily_range_writes_one_file_per_day_and_prints_paths(setup: tuple[Path, Path]) -> None:
    cfg, out = setup
    result = run(cfg, "report", "daily", "--start", "2026-05-01", "--end", "2026-05-03",
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    names = [Path(line).name for line in result.stdout.splitlines()]
    assert names == ["daily-2026-05-01.csv", "daily-2026-05-02.csv", "daily-2026-05-03.csv"]
    text = (out / "daily-2026-05-02.csv").read_text().splitlines()
    assert len(text) == 4  # header + 3 configured series
    assert "2026-05-02,rules,invocations,1,1050,1050,1050,,,50,0," in text[3]


def test_report_billing_and_reconcile_both_formats(setup: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, out = setup
    result = run(cfg, "report", "billing", "--month", "2026-05", "--out", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert [Path(p).name for p in result.stdout.split()] == ["billing-2026-05.csv",
                                                           "billing-2026-05.html"]
    billing = (tmp_path / "b" / "billing-2026-05.csv").read_text().splitlines()
    assert billing[1].startswith("2026-05,rules,invocations,increase,105,100,5,0.001,0.01,USD,")
    invoice = tmp_path / "inv.csv"
    invoice.write_text("source,month,metric,quantity,amount\nrules,2026-05,invocations,105,0.01\n")
    result = run(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice),
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = (out / "reconcile-2026-05.csv").read_text().splitlines()
    assert rows[0].startswith("source,month,metric,metered_quantity,invoiced_quantity,"
                              "quantity_diff,metered_amount,invoiced_amount,amount_diff,status")
    assert rows[1].startswith("rules,2026-05,invocations,105,105,0,0.01,0.01,0.00,match")


@pytest.mark.parametrize("args,message", [
    (["report", "daily", "--date", "2026-02-30"], "--date: '2026-02-30' is not a date"),
    (["report", "daily", "--date", "2026-05-01", "--tz", "Mars/Base"], "Mars/Base"),
    (["report", "daily", "--start", "2026-05-03", "--end", "2026-05-01"], "before --start"),
    (["report", "daily", "--date", "2026-05-01", "--start", "2026-05-01"], "not both"),
    (["report", "daily"], "give --date"),
    (["report", "billing", "--month", "2026-13"], "--month: '2026-13' is not a month"),
    (["reconcile", "--month", "2026-05", "--invoice", "nope.csv"], "nope.csv: invoice file not found"),
    # The days of export and backfill are read by the same rule as report's.
    (["export", "--start", "2026-11-31", "--end", "2026-12-01"],
     "--start: '2026-11-31' is not a date (expected YYYY-MM-DD)"),
    (["export", "--start", "2026-11-01", "--end", "tomorrow"], "--end: 'tomorrow' is not a date"),
    (["backfill", "--source", "rules", "--start", "2026-02-30"],
     "--start: '2026-02-30' is not a date"),
])
def test_bad_input_exits_2_with_one_line(setup: tuple[Path, Path], args: list[str],
                                         message: str) -> None:
    cfg, _ = setup
    result = run(cfg, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_bad_invoice_line_exits_2_naming_file_line_and_column(setup: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, _ = setup
    invoice = tmp_path / "inv.csv"
    invoice.write_text("source,month,metric,quantity,amount\nrules,2026-05,invocations,1,abc\n")
    result = run(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice))
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"usage-etl: error: {invoice}:2: column amount: 'abc' "
                                     "is not a number")


@pytest.mark.parametrize("tolerance", ["inf", "-inf", "nan", "1e400", "-1"])
def test_reconcile_refuses_a_tolerance_that_is_not_a_finite_number_of_0_or_more(
        setup: tuple[Path, Path], tmp_path: Path, tolerance: str) -> None:
    cfg, out = setup
    invoice = tmp_path / "inv.csv"
    # Invoiced 0: an infinite tolerance used to crash with decimal.InvalidOperation.
    invoice.write_text("source,month,metric,quantity,amount\nrules,2026-05,invocations,0,0\n")
    result = run(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice),
                 "--tolerance-pct", tolerance)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tolerance-pct:" in lines[0]
    assert "must be a finite number, 0 or more" in lines[0]
    assert "Traceback" not in result.output
    assert not (out / "reconcile-2026-05.csv").exists()


def test_reconcile_refuses_an_invoice_without_rows_for_the_month(setup: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    cfg, out = setup
    invoice = tmp_path / "inv.csv"
    invoice.write_text("source,month,metric,quantity,amount\n"
                       "rules,2026-06,invocations,105,0.01\n"
                       "rules,2026-04,invocations,80,0.00\n"
                       "ws-prod,2026-06,connections,3,1.50\n")
    result = run(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice))
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"usage-etl: error: {invoice}: no rows for 2026-05 "
                                     "(it has 2026-04, 2026-06)")
    assert not (out / "reconcile-2026-05.csv").exists()
    # With the month's own row present, the other months' rows are still just ignored.
    with invoice.open("a") as fh:
        fh.write("rules,2026-05,invocations,105,0.01\n")
    result = run(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice),
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = (out / "reconcile-2026-05.csv").read_text().splitlines()
    assert len(rows) == 2
    assert rows[1].startswith("rules,2026-05,invocations,105,105,0,0.01,0.01,0.00,match")


def test_reports_of_history_loaded_with_usage_etl_import(tmp_path: Path) -> None:
    import csv

    out = tmp_path / "out"
    cfg = write_reports_config(tmp_path / "usage-etl.toml", f"sqlite:///{tmp_path / 'usage.db'}",
                               billing=billing_rules()[:1], reports_dir=str(out))
    archive = write_subsecond_archive(tmp_path / "history.jsonl")
    result = run(cfg, "import", str(archive))
    assert result.exit_code == 0, result.output
    result = run(cfg, "report", "daily", "--start", "2026-05-02", "--end", "2026-05-04",
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    result = run(cfg, "report", "billing", "--month", "2026-05", "--format", "csv")
    assert result.exit_code == 0, result.output

    def rows(name: str) -> list[dict[str, str]]:
        with (out / name).open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    assert_subsecond_reports({d: rows(f"daily-{d}.csv")
                              for d in ("2026-05-02", "2026-05-03", "2026-05-04")},
                             rows("billing-2026-05.csv"))


HEADER = "source,month,metric,quantity,amount"


@pytest.mark.parametrize(("body", "line", "reason"), [
    # An unquoted grouping comma splits the number into more cells than the header has.
    (f"{HEADER}\nrules,2026-05,invocations,1,234,567,2467.13\n", 2,
     "7 cells, the header has 5"),
    (f"{HEADER}\nrules,2026-05,invocations,105\n", 2, "4 cells, the header has 5"),
    (f"{HEADER}\nrules,2026-05,invocations,105,0.01,\n", 2, "6 cells, the header has 5"),
    # Line numbers are the file's, blank lines and a line break inside quotes included.
    (f'{HEADER}\n\n"rules",2026-05,"invo\ncations",105\n', 3, "4 cells, the header has 5"),
    (f'{HEADER}\r\nrules,2026-05,invocations,"1,234.50",0.01\r\n', 2,
     "column quantity: '1,234.50' has a ','"),
    (f"{HEADER}\nrules,2026-05,invocations,105,$0.01\n", 2,
     "column amount: '$0.01' has a currency sign ($)"),
    (f"{HEADER}\nrules,2026-05,invocations,105,0.01 €\n", 2,
     "column amount: '0.01 €' has a currency sign (€)"),
    (f"{HEADER}\nrules,2026-05,invocations,1 050,0.01\n", 2,
     "column quantity: '1 050' has a space as a grouping separator"),
    (f"{HEADER}\nrules,2026-05,invocations,1e2,0.01\n", 2,
     "column quantity: '1e2' is not a number"),
    ("source;month;metric;quantity;amount\nrules;2026-05;invocations;1.050;0,01\n", 2,
     "column quantity: '1.050' has a '.' that reads as a grouping separator"),
    ("source;month;metric;quantity;amount\nrules;2026-05;invocations;1.050,5;0,01\n", 2,
     "column quantity: '1.050,5' has a grouping separator"),
    ("source;month;metric;quantity;amount\nrules;2026-05;invocations;105;0,01;x\n", 2,
     "6 cells, the header has 5"),
])
def test_an_invoice_row_that_is_not_plain_is_refused_naming_file_line_and_cell(
        setup: tuple[Path, Path], tmp_path: Path, body: str, line: int, reason: str) -> None:
    cfg, out = setup
    invoice = tmp_path / "inv.csv"
    invoice.write_bytes(body.encode())
    result = run(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"usage-etl: error: {invoice}:{line}: {reason}")
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize("raw", [
    # Excel in a decimal-comma locale: BOM, semicolons, CRLF, decimal commas.
    b"\xef\xbb\xbfsource;month;metric;quantity;amount\r\nrules;2026-05;invocations;105;0,01\r\n",
    b"\xef\xbb\xbfSource;Month;Metric;Quantity;Amount;Note\r\n"
    b'rules;2026-05;invocations;105;"0,01";"a; b"\r\n;;;;;;\r\n',
    # Old Mac line endings, comma file, quoted cells.
    b'source,month,metric,quantity,amount\r"rules","2026-05","invocations","105","0.01"\r',
])
def test_an_invoice_saved_by_a_spreadsheet_is_read(setup: tuple[Path, Path], tmp_path: Path,
                                                   raw: bytes) -> None:
    cfg, out = setup
    invoice = tmp_path / "inv.csv"
    invoice.write_bytes(raw)
    result = run(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice),
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = (out / "reconcile-2026-05.csv").read_text().splitlines()
    assert rows[1].startswith("rules,2026-05,invocations,105,105,0,0.01,0.01,0.00,match")


@pytest.mark.parametrize(("header", "reason"), [
    ("source\tmonth\tmetric\tquantity\tamount",
     "the header line is one cell 'source\\tmonth\\tmetric\\tquantity\\tamount': expected "
     "the columns source, month, metric, quantity, amount separated by commas or semicolons"),
    ("source;month;metric;qty;amount",
     "missing column(s): quantity (the header has: source, month, metric, qty, amount)"),
])
def test_an_invoice_header_message_says_what_the_header_has(
        setup: tuple[Path, Path], tmp_path: Path, header: str, reason: str) -> None:
    cfg, _ = setup
    invoice = tmp_path / "inv.csv"
    invoice.write_text(f"{header}\nrules;2026-05;invocations;105;0,01\n")
    result = run(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"usage-etl: error: {invoice}:1: {reason}"
