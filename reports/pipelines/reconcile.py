"""The reconciliation (SPEC 6): billing vs invoice (`reconcile`), then files (`write_reconcile`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine

from etl.config import Config
from etl.errors import InputError
from etl.timefmt import from_micros
from reports.compute.reconcile import (
    RECONCILE_STATUSES,
    check_tolerance,
    focus_invoice_lines,
    focus_selector,
    reconcile_table,
)
from reports.names import ReportFormat, output_dir, reconcile_name, report_formats
from reports.periods import month_period, resolve_tz, rule_periods
from reports.pipelines.billing import BillingResult, billing
from reports.read.focus_invoice import FocusKind, focus_kind, read_focus_charges
from reports.read.invoice import InvoiceLine, read_invoice
from reports.read.samples import source_snapshots
from reports.render.csv import write_csv
from reports.render.html import render_report, table_from_frame, write_html


@dataclass(frozen=True)
class ReconcileInput:
    """What a reconciliation compares with: the invoice file's lines for `month`, checked.

    For a FOCUS file (`focus` is its kind) `lines` is empty: the file is streamed by
    reconcile(), which knows the rules' periods and `focus_match` (SPEC 12).
    """

    month: date
    invoice: Path
    lines: list[InvoiceLine]
    tolerance_pct: float
    focus: FocusKind | None = None


def reconcile_input(month: date, invoice: Path, tolerance_pct: float, *,
                    tolerance_name: str = "--tolerance-pct") -> ReconcileInput:
    """Check the tolerance and read the invoice for `month`: done before any database work.

    Raises InputError for a tolerance that is not a finite number of 0 or more (naming
    `tolerance_name`), and for a bad invoice file or one without rows for `month` (FILE:LINE).
    """
    check_tolerance(tolerance_pct, tolerance_name)
    first = month.replace(day=1)
    kind = focus_kind(invoice)
    if kind is not None:
        return ReconcileInput(first, invoice, [], tolerance_pct, kind)
    return ReconcileInput(first, invoice, read_invoice(invoice, first.strftime("%Y-%m")),
                          tolerance_pct)


@dataclass(frozen=True)
class ReconcileResult:
    """Metered against invoiced for a month: the table (RECONCILE_COLUMNS) and its inputs."""

    billing: BillingResult
    given: ReconcileInput
    table: pd.DataFrame


def reconcile(engine: Engine, config: Config, given: ReconcileInput, tz: str | None = None,
              *, now: datetime | None = None, rollups: bool = True) -> ReconcileResult:
    """The month's billing report (reports.pipelines.billing.billing) against the invoice.

    `tz` (default: config's), `now` and `rollups` as in billing().
    """
    label = given.month.strftime("%Y-%m")
    lines = given.lines
    if given.focus is not None:
        lines = focus_lines(config, given, resolve_tz(tz or config.timezone))
    billed = billing(engine, config, given.month, tz, now=now, rollups=rollups)
    table = reconcile_table(billed.table, lines, label, tolerance_pct=given.tolerance_pct)
    return ReconcileResult(billed, given, table)


def focus_lines(config: Config, given: ReconcileInput, zone: ZoneInfo) -> list[InvoiceLine]:
    """The FOCUS file of `given` streamed into invoice lines of its month (SPEC 12).

    Each rule's rows are those its focus_match selects with ChargePeriodStart in its period
    (reports.periods.rule_periods); the month's rows no rule selects become missing_metered
    lines. A file with rows but none in those periods is an InputError (the wrong file).
    """
    assert given.focus is not None
    priced = rule_periods(config.billing, given.month, zone)
    month = month_period(given.month, zone)
    windows = [(rp.period.start_us, rp.period.end_us) for rp in priced]
    windows.append((month.start_us, month.end_us))
    columns = [c for rp in priced for c, _ in focus_selector(rp.rule)]
    charges = read_focus_charges(given.invoice, given.focus, columns, windows)
    label = given.month.strftime("%Y-%m")
    if charges.rows and not charges.sums:
        raise InputError(f"{given.invoice}: no FOCUS row has a ChargePeriodStart in {label} "
                         f"or the billing periods labelled {label} ({charges.rows} rows read)")
    return focus_invoice_lines(charges, [rp.rule for rp in priced], label, len(priced))


def write_reconcile(result: ReconcileResult, formats: Sequence[str],
                    out_dir: Path) -> list[Path]:
    """reconcile-YYYY-MM.{csv,html} in `out_dir`; the paths written."""
    wanted = report_formats(formats)
    billed, table = result.billing, result.table
    base = output_dir(out_dir) / reconcile_name(billed.month)
    paths: list[Path] = []
    if ReportFormat.CSV in wanted:
        paths.append(write_csv(table, base.with_suffix(".csv")))
    if ReportFormat.HTML in wanted:
        counts = table["status"].value_counts()
        summary: list[tuple[str, Any]] = [
            ("month", billed.month.strftime("%Y-%m")),
            ("tolerance", f"{result.given.tolerance_pct:g} %")]
        summary += [(s, int(counts.get(s, 0))) for s in RECONCILE_STATUSES]
        html = render_report(
            title=f"Reconciliation {billed.month.strftime('%Y-%m')}",
            subtitle=(f"metered vs invoice {result.given.invoice.name}; "
                      "diff = metered − invoiced"),
            tz=billed.tz, summary=summary,
            sources=source_snapshots(billed.engine, billed.config,
                                     from_micros(billed.period.end_us)),
            tables=[table_from_frame("Per series", table, row_css="status")])
        paths.append(write_html(html, base.with_suffix(".html")))
    return paths
