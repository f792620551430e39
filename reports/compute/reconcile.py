"""Metered against invoiced (SPEC 6): compare the billing table with the invoice, per series."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import pandas as pd

from etl.config.billing import BillingRule
from etl.errors import InputError
from reports.compute.pricing import plain
from reports.read.focus_invoice import FocusCharges, Sums
from reports.read.invoice import InvoiceLine, check_invoice_month

RECONCILE_COLUMNS = [
    "source", "month", "metric", "metered_quantity", "invoiced_quantity", "quantity_diff",
    "metered_amount", "invoiced_amount", "amount_diff", "status",
    # extras
    "reason", "currency", "coverage_pct", "resets",
]


class ReconcileStatus(StrEnum):
    """How a billing rule's metered figures compare with the invoice (SPEC 6)."""

    MATCH = "match"
    MISMATCH = "mismatch"
    MISSING_INVOICE = "missing_invoice"  # a rule the invoice has no line for
    MISSING_METERED = "missing_metered"  # an invoice line with nothing metered for it


RECONCILE_STATUSES = [s.value for s in ReconcileStatus]


def check_tolerance(tolerance_pct: float, name: str = "--tolerance-pct") -> Decimal:
    """The tolerance as a Decimal; anything but a finite number of 0 or more is an InputError.

    Every entry point (CLI, jobs, API) calls this, so `inf` or `nan` is one clear line
    rather than a decimal.InvalidOperation from deep in the comparison.
    """
    try:
        tol = Decimal(str(tolerance_pct))
    except (InvalidOperation, ValueError, TypeError):
        raise InputError(f"{name}: {tolerance_pct!r} is not a number") from None
    if not tol.is_finite() or tol < 0:
        raise InputError(f"{name}: {tolerance_pct} must be a finite number, 0 or more")
    return tol


def _within(metered: Decimal, invoiced: Decimal, tolerance_pct: Decimal) -> bool:
    return abs(metered - invoiced) <= abs(invoiced) * tolerance_pct / 100


def _reasons(cov: float, resets: int, samples: int) -> list[str]:
    found = []
    if samples == 0:
        found.append("no samples stored for the month")
    elif cov < 100:
        found.append(f"coverage {cov:g} % < 100 %: part of the month was not observed, "
                     "so metered figures are a lower bound")
    if resets:
        found.append(f"{resets} counter reset(s) in the month: check whether the vendor's "
                     "billing cycle restarted the counter")
    return found


def reconcile_table(billed: pd.DataFrame, invoice: Sequence[InvoiceLine], month: str,
                    *, tolerance_pct: float = 1.0) -> pd.DataFrame:
    """Compare billing_table() rows with the invoice lines of `month` (pure).

    An invoice with rows for other months only, or a tolerance that is not a finite number
    of 0 or more, is an InputError.
    """
    tol = check_tolerance(tolerance_pct, "tolerance_pct")
    check_invoice_month(invoice, month)
    by_key = {(ln.source, ln.metric): ln for ln in invoice if ln.month == month}
    records = []
    for rule in billed.to_dict("records"):
        key = (rule["source"], rule["metric"])
        line = by_key.pop(key, None)
        samples = int(rule["samples"])
        cov, resets = float(rule["coverage_pct"]), int(rule["resets"])
        rec: dict[str, object] = {
            "source": key[0], "month": month, "metric": key[1],
            "metered_quantity": rule["quantity"], "invoiced_quantity": None,
            "quantity_diff": None, "metered_amount": rule["amount"], "invoiced_amount": None,
            "amount_diff": None, "currency": rule["currency"], "coverage_pct": cov,
            "resets": resets,
        }
        reasons = _reasons(cov, resets, samples)
        if line is None:
            rec["status"] = ReconcileStatus.MISSING_INVOICE.value
            reasons.insert(0, "no invoice line for this billing rule")
        elif samples == 0:
            rec.update(metered_quantity=None, metered_amount=None,
                       invoiced_quantity=line.quantity, invoiced_amount=line.amount,
                       status=ReconcileStatus.MISSING_METERED.value)
        else:
            q, a = rule["quantity"], rule["amount"]
            rec.update(invoiced_quantity=line.quantity, invoiced_amount=line.amount,
                       quantity_diff=q - line.quantity, amount_diff=a - line.amount)
            ok = _within(q, line.quantity, tol) and _within(a, line.amount, tol)
            rec["status"] = (ReconcileStatus.MATCH if ok else ReconcileStatus.MISMATCH).value
            if ok:
                reasons = []
            elif not reasons:
                reasons.append("fully observed and no resets: check the plan's included "
                               "units and unit price against the invoice")
        rec["reason"] = "; ".join(reasons) or None
        records.append(rec)
    for line in by_key.values():
        records.append({
            "source": line.source, "month": month, "metric": line.metric,
            "metered_quantity": None, "invoiced_quantity": line.quantity,
            "quantity_diff": None, "metered_amount": None, "invoiced_amount": line.amount,
            "amount_diff": None, "status": ReconcileStatus.MISSING_METERED.value,
            "reason": ("no [[billing]] rule's focus_match selects these FOCUS rows"
                       if not line.source else "no [[billing]] rule for this source and metric"),
            "currency": None, "coverage_pct": None, "resets": None,
        })
    return pd.DataFrame.from_records(records, columns=RECONCILE_COLUMNS)


def focus_selector(rule: BillingRule) -> tuple[tuple[str, str], ...]:
    """The FOCUS columns and values that select `rule`'s charges (SPEC 12).

    Its `focus_match`; without one, the SkuId usage-etl's own FOCUS report gives the rule
    (`source/metric`), so a file written by `report focus` reconciles as it is.
    """
    return rule.focus_match or (("SkuId", f"{rule.source}/{rule.metric}"),)


def focus_invoice_lines(charges: FocusCharges, rules: Sequence[BillingRule],
                        label: str, month_window: int) -> list[InvoiceLine]:
    """A FOCUS file's sums as invoice lines of the period labelled `label` (pure; SPEC 12).

    `rules[k]` was summed into window `k` (its period); `month_window` is the window of the
    calendar month. Per rule: Σ ConsumedQuantity and Σ BilledCost of the rows its selector
    picks in its period (no line when none), Credit rows left out unless its focus_match
    names ChargeCategory (they pay charges; the comparison is with the rule's `amount`). The rows of the month no rule picks, Credit rows
    left out: one line per ServiceName/SkuId with source "" and metric `ServiceName/SkuId`. Quantities are
    written without trailing zeros (a Parquet float column's 10000.0 is 10000).
    """
    where = {col: n for n, col in enumerate(charges.columns)}
    picks = [focus_selector(rule) for rule in rules]
    category = where["ChargeCategory"]
    lines: list[InvoiceLine] = []
    for k, (rule, pick) in enumerate(zip(rules, picks, strict=True)):
        # Credits pay charges, they are not usage: left out unless focus_match asks for them.
        credits_too = any(c == "ChargeCategory" for c, _ in pick)
        chosen = [s for (key, w), s in charges.sums.items()
                  if w == k and all(key[where[c]] == v for c, v in pick)
                  and (credits_too or key[category] != "Credit")]
        if chosen:
            lines.append(InvoiceLine(
                rule.source, label, rule.metric, plain(sum((s.quantity for s in chosen),
                                                           Decimal(0))),
                sum((s.amount for s in chosen), Decimal(0)), min(s.line for s in chosen),
                str(charges.path)))
    unpicked: dict[str, list[Sums]] = {}
    for (key, w), s in charges.sums.items():
        # Credit rows stay out here too: netted with the charges of their SKU they turned
        # a 26.33 charge no rule selects into an unmatched 0.00.
        if w == month_window and key[category] != "Credit" and not any(
                all(key[where[c]] == v for c, v in pick) for pick in picks):
            name = f"{key[where['ServiceName']] or ''}/{key[where['SkuId']] or ''}"
            unpicked.setdefault(name, []).append(s)
    for name, found in sorted(unpicked.items()):
        lines.append(InvoiceLine("", label, name, plain(sum((s.quantity for s in found),
                                                            Decimal(0))),
                                 sum((s.amount for s in found), Decimal(0)),
                                 min(s.line for s in found), str(charges.path)))
    return lines
