"""One pipeline per report: read → compute, then render to files; every entry point calls these.

The CLI (`usage-etl report`, `reconcile`), the daemon's nightly reports, the demo and the
DataFrame API (`reports.api`, which the notebooks use) all build a report here, so they
agree by construction. Each report is two calls: `daily()` / `billing()` / `reconcile()`
return a result holding the tables (what the DataFrame API returns and the files show), and
`write_daily()` / `write_billing()` / `write_reconcile()` write its CSV and/or HTML files.
`focus()` / `write_focus()` give the billing month as a FOCUS file (SPEC 12).
`days` holds their shared first step (day rows per configured series, from rollups or
samples). May import reports.read, reports.compute, reports.render and the store side.
"""

from __future__ import annotations

from reports.pipelines.billing import BillingResult, billing, write_billing
from reports.pipelines.daily import DailyResult, daily, write_daily
from reports.pipelines.focus import FocusFormat, FocusResult, focus, write_focus
from reports.pipelines.reconcile import (
    ReconcileInput,
    ReconcileResult,
    reconcile,
    reconcile_input,
    write_reconcile,
)

__all__ = [
    "BillingResult",
    "DailyResult",
    "FocusFormat",
    "FocusResult",
    "ReconcileInput",
    "ReconcileResult",
    "billing",
    "daily",
    "focus",
    "reconcile",
    "reconcile_input",
    "write_billing",
    "write_daily",
    "write_focus",
    "write_reconcile",
]
