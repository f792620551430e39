"""The billing month as FOCUS 1.2 cost and usage rows (SPEC 12): pure, from the billing table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pandas as pd

from etl.config.billing import BillingRule, Pricing
from reports.compute.billing import exact_decimals
from reports.compute.pricing import charge, plain, round_money

# Every FOCUS 1.2 Mandatory column (FOCUS 1.2 section 3, Column Definitions), the
# Recommended ChargeFrequency, InvoiceId and ServiceSubcategory, the Conditional columns
# this data can fill (usage measured: ConsumedQuantity/ConsumedUnit; SKUs: SkuId,
# SkuMeter, SkuPriceId, SkuPriceDetails) and FOCUS 1.3's ServiceProviderName and
# HostProviderName. docs/focus.md says why each conditional column is or is not here.
FOCUS_COLUMNS = [
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "EffectiveCost", "HostProviderName",
    "InvoiceId", "InvoiceIssuerName", "ListCost", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "ServiceCategory", "ServiceName", "ServiceProviderName",
    "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId",
]
# The columns holding decimals (money and quantities), and UTC instants.
FOCUS_DECIMALS = ["BilledCost", "ConsumedQuantity", "ContractedCost", "EffectiveCost",
                  "ListCost", "PricingQuantity"]
FOCUS_INSTANTS = ["BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd",
                  "ChargePeriodStart"]
# What a SaaS vendor's metered service is when nothing more is known (FOCUS 1.2
# ServiceCategory and ServiceSubcategory allowed values).
SERVICE_CATEGORY = "Other"
SERVICE_SUBCATEGORY = "Other (Other)"
# The pricing unit of a row that is one charge per billing period (flat fee, minimum).
PERIOD_UNIT = "Month"


class ChargeCategory(StrEnum):
    """FOCUS ChargeCategory values usage-etl writes (FOCUS 1.2 ChargeCategory)."""

    USAGE = "Usage"
    PURCHASE = "Purchase"
    CREDIT = "Credit"


class ChargeFrequency(StrEnum):
    """FOCUS ChargeFrequency values (FOCUS 1.2 ChargeFrequency)."""

    USAGE_BASED = "Usage-Based"
    RECURRING = "Recurring"
    ONE_TIME = "One-Time"


@dataclass(frozen=True)
class Provider:
    """Who bills a source (SPEC 12): its `vendor_name` and the account it bills, `account_id`."""

    vendor_name: str
    account_id: str
    account_name: str


@dataclass(frozen=True)
class ChargePeriod:
    """A billing rule's period: its label (YYYY-MM) and its UTC bounds, end exclusive."""

    label: str
    start: datetime
    end: datetime


def rule_unit(rule: BillingRule) -> str:
    """The rule's unit (SPEC 12: the rule's `unit`, default the metric's name)."""
    return rule.unit or rule.metric


def _number(d: Decimal) -> str:
    """A Decimal as JSON number text, plain (never an exponent)."""
    return format(plain(d), "f")


def sku_price_details(rule: BillingRule) -> str:
    """The rule's price as FOCUS SkuPriceDetails: a JSON object of provider (x_) properties.

    FOCUS 1.2 defines no property for included units or tiers, so every key is `x_`-prefixed
    (SkuPriceDetails: "Property key MUST begin with x_ unless FOCUS-defined"); numbers are
    per pricing unit, as decimals. Tiers are `x_Tier<N>UpTo` (absent for the last),
    `x_Tier<N>UnitPrice`, `x_Tier<N>FlatPrice`, in order.
    """
    props: list[tuple[str, str]] = [("x_Pricing", f'"{rule.pricing}"'),
                                    ("x_IncludedUnits", _number(rule.included))]
    pricing = Pricing(rule.pricing)
    if pricing is Pricing.PER_UNIT:
        assert rule.unit_price is not None
        props.append(("x_UnitPrice", _number(rule.unit_price)))
    elif pricing is Pricing.PACKAGE:
        assert rule.package_size is not None and rule.package_price is not None
        props += [("x_PackageSize", str(rule.package_size)),
                  ("x_PackagePrice", _number(rule.package_price))]
    elif pricing is Pricing.GRADUATED or pricing is Pricing.VOLUME:
        for n, tier in enumerate(rule.tiers, start=1):
            if tier.up_to is not None:
                props.append((f"x_Tier{n}UpTo", _number(tier.up_to)))
            props += [(f"x_Tier{n}UnitPrice", _number(tier.unit_price)),
                      (f"x_Tier{n}FlatPrice", _number(tier.flat_price))]
    else:  # pragma: no cover - exhaustive
        from typing import assert_never
        assert_never(pricing)
    if rule.flat_fee:
        props.append(("x_FlatFee", _number(rule.flat_fee)))
    if rule.minimum:
        props.append(("x_Minimum", _number(rule.minimum)))
    return "{" + ", ".join(f'"{k}": {v}' for k, v in props) + "}"


@dataclass(frozen=True)
class RuleCharges:
    """A rule's amount cut into its FOCUS rows; the three add up to `amount` exactly.

    `fee`: the flat fee rounded to the minor unit; `shortfall`: what the minimum adds over
    usage and fee, rounded; `usage`: the rest (SPEC 12: the usage row holds what the others
    do not).
    """

    usage: Decimal
    fee: Decimal
    shortfall: Decimal


def rule_charges(quantity: Decimal, amount: Decimal, rule: BillingRule) -> RuleCharges:
    """Cut `amount` (the billing table's, from pricing.charge) into usage, fee, shortfall."""
    billed = charge(quantity, rule)
    fee = round_money(rule.flat_fee, rule.currency)
    shortfall = Decimal(0)
    if billed.minimum_applied:
        shortfall = round_money(rule.minimum - billed.priced - rule.flat_fee, rule.currency)
    return RuleCharges(amount - fee - shortfall, fee, shortfall)


@exact_decimals
def focus_table(billed: pd.DataFrame, rules: Sequence[BillingRule],
                periods: Sequence[ChargePeriod], providers: Mapping[str, Provider],
                credits: Sequence[Sequence[tuple[str, Decimal]]]) -> pd.DataFrame:
    """FOCUS 1.2 rows (FOCUS_COLUMNS) for the billing table `billed` (pure; SPEC 12).

    `billed` is reports.compute.billing.billing_table's, one row per rule of `rules` (in
    order) pricing its period in `periods`; `providers` each source's Provider; `credits`
    per row what each credit paid of it ((name, amount), SPEC 11). Per rule: a Usage row
    (Usage-Based; the amount of its pricing), its flat fee as a Purchase row (Recurring,
    EffectiveCost 0), a minimum's shortfall as a Usage row (Recurring), and per credit that
    paid something a Credit row with a negative BilledCost. Σ BilledCost per currency is
    Σ `amount_due`. Decimals stay Decimals; instants are aware UTC datetimes.
    """
    records: list[dict[str, Any]] = []
    for row, rule, period, paid in zip(billed.to_dict("records"), rules, periods, credits,
                                       strict=True):
        provider = providers[rule.source]
        unit = rule_unit(rule)
        sku = f"{rule.source}/{rule.metric}"
        cut = rule_charges(row["quantity"], row["amount"], rule)
        base: dict[str, Any] = {
            "BillingAccountId": provider.account_id,
            "BillingAccountName": provider.account_name,
            "BillingCurrency": rule.currency,
            "BillingPeriodStart": period.start, "BillingPeriodEnd": period.end,
            "ChargePeriodStart": period.start, "ChargePeriodEnd": period.end,
            "ChargeClass": None,
            "HostProviderName": provider.vendor_name,
            "InvoiceId": f"{provider.account_id}/{period.label}",
            "InvoiceIssuerName": provider.vendor_name, "ProviderName": provider.vendor_name,
            "PublisherName": provider.vendor_name, "ServiceProviderName": provider.vendor_name,
            "ServiceCategory": SERVICE_CATEGORY, "ServiceName": rule.source,
            "ServiceSubcategory": SERVICE_SUBCATEGORY,
            "SkuId": sku, "SkuMeter": rule.metric, "SkuPriceId": sku,
            "SkuPriceDetails": sku_price_details(rule),
            "ConsumedQuantity": None, "ConsumedUnit": None,
        }
        what = f"{rule.source} {rule.metric} ({rule.aggregation}, {rule.pricing})"
        records.append(_row(base, ChargeCategory.USAGE, ChargeFrequency.USAGE_BASED,
                            cut.usage, row["overage"], unit,
                            f"{what}: {plain(row['quantity'])} {unit}, "
                            f"{plain(rule.included)} included",
                            consumed=(row["quantity"], unit)))
        if rule.flat_fee:
            records.append(_row(base, ChargeCategory.PURCHASE, ChargeFrequency.RECURRING,
                                cut.fee, Decimal(1), PERIOD_UNIT,
                                f"{what}: flat fee per billing period", effective=Decimal(0)))
        if cut.shortfall:
            records.append(_row(base, ChargeCategory.USAGE, ChargeFrequency.RECURRING,
                                cut.shortfall, Decimal(1), PERIOD_UNIT,
                                f"{what}: minimum charge {plain(rule.minimum)} "
                                f"{rule.currency} (the shortfall of usage and fee below it)",
                                consumed=(Decimal(0), unit)))
        for name, taken in paid:
            if taken:
                records.append(_row(base | {"SkuPriceId": None, "SkuPriceDetails": None},
                                    ChargeCategory.CREDIT, ChargeFrequency.USAGE_BASED,
                                    -taken, None, None,
                                    f"{what}: paid from the prepaid credit {name}"))
    return pd.DataFrame.from_records(records, columns=FOCUS_COLUMNS)


def _row(base: dict[str, Any], category: ChargeCategory, frequency: ChargeFrequency,
         cost: Decimal, pricing_quantity: Decimal | None, pricing_unit: str | None,
         description: str, *, effective: Decimal | None = None,
         consumed: tuple[Decimal, str] | None = None) -> dict[str, Any]:
    row = dict(base)
    row.update({
        "ChargeCategory": str(category), "ChargeFrequency": str(frequency),
        "ChargeDescription": description,
        "BilledCost": cost, "ContractedCost": cost, "ListCost": cost,
        "EffectiveCost": cost if effective is None else effective,
        "PricingQuantity": None if pricing_quantity is None else plain(pricing_quantity),
        "PricingUnit": pricing_unit,
    })
    if consumed is not None:
        row["ConsumedQuantity"], row["ConsumedUnit"] = plain(consumed[0]), consumed[1]
    return row
