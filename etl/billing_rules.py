"""The typed `[[billing]]` rule and the checks of its quantity and pricing keys (SPEC 5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any


class Aggregation(StrEnum):
    """How a month's samples become the billed quantity (SPEC 5 Billing)."""

    INCREASE = "increase"
    PEAK = "peak"
    P95 = "p95"
    TWA = "twa"
    UNIT_HOURS = "unit_hours"
    LAST = "last"


class Pricing(StrEnum):
    """How billable units become an amount (SPEC 5 Billing)."""

    PER_UNIT = "per_unit"
    PACKAGE = "package"
    GRADUATED = "graduated"
    VOLUME = "volume"


# The keys only one pricing takes; every rule may also set flat_fee and minimum.
PRICING_KEYS: dict[Pricing, frozenset[str]] = {
    Pricing.PER_UNIT: frozenset({"unit_price"}),
    Pricing.PACKAGE: frozenset({"package_size", "package_price"}),
    Pricing.GRADUATED: frozenset({"tiers"}),
    Pricing.VOLUME: frozenset({"tiers"}),
}
COMMON_KEYS = frozenset({"source", "metric", "aggregation", "included", "currency", "pricing",
                         "flat_fee", "minimum"})
BILLING_KEYS = COMMON_KEYS | frozenset().union(*PRICING_KEYS.values())
TIER_KEYS = frozenset({"up_to", "unit_price", "flat_price"})

# What is too large to bill (issue 12): every config amount, price and count is at most 10^15
# with at most 12 decimal places. Within these, every amount is exact in
# reports.compute.pricing's decimal context whatever finite reading the database holds;
# `unit_price = "1e999999999"` is refused here rather than failing a report.
MAX_CONFIG_DECIMAL = Decimal(10**15)
MAX_CONFIG_DECIMAL_PLACES = 12
DECIMAL_RANGE = f"from 0 to 10^15 with at most {MAX_CONFIG_DECIMAL_PLACES} decimal places"
# Longer number text is refused unread: no amount needs it, and Decimal() of a huge literal
# is slow.
_MAX_NUMBER_TEXT = 100


@dataclass(frozen=True)
class Tier:
    """One step of a graduated or volume rule: units up to `up_to` (None: no end)."""

    up_to: Decimal | None
    unit_price: Decimal
    flat_price: Decimal = Decimal(0)


@dataclass(frozen=True)
class BillingRule:
    """One `[[billing]]` entry: which series, how its quantity is taken, how it is priced.

    `unit_price` is set for `per_unit` pricing only; `package_size` and `package_price` for
    `package`; `tiers` (last one without `up_to`) for `graduated` and `volume`.
    """

    source: str
    metric: str
    aggregation: Aggregation
    included: Decimal
    unit_price: Decimal | None
    currency: str
    pricing: Pricing = Pricing.PER_UNIT
    package_size: int | None = None
    package_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    flat_fee: Decimal = Decimal(0)
    minimum: Decimal = Decimal(0)
    cycle_day: int = 1
    valid_from: date | None = None
    valid_until: date | None = None

    def valid_on(self, day: date) -> bool:
        """Whether the rule prices a period whose first local day is `day` (SPEC 11)."""
        return ((self.valid_from is None or self.valid_from <= day)
                and (self.valid_until is None or day < self.valid_until))


@dataclass(frozen=True)
class Credit:
    """One `[[credits]]` entry (SPEC 11): prepaid money that pays a source's amounts.

    It pays periods starting on or after the local date `granted` and before `expires`
    (None: no expiry), in `currency` only; `amount` has at most the currency's minor-unit
    decimals.
    """

    name: str
    source: str
    amount: Decimal
    currency: str
    granted: date
    expires: date | None = None

    def applies_to(self, source: str, currency: str, period_start: date) -> bool:
        """Whether this credit pays a period of `source` in `currency` starting that day."""
        return (source == self.source and currency == self.currency
                and self.granted <= period_start
                and (self.expires is None or period_start < self.expires))


def _parsed(value: Any) -> Decimal | None:
    """A TOML integer, float or decimal string as an exact Decimal (any size), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    text = str(value).strip()
    if len(text) > _MAX_NUMBER_TEXT:
        return None
    try:
        # str() first so a TOML float such as 0.1 becomes Decimal("0.1"), not its binary value.
        return Decimal(text)
    except InvalidOperation:
        return None


def decimal_value(value: Any) -> Decimal | None:
    """The one check of every config amount, price and quantity.

    `value` as a Decimal from 0 to MAX_CONFIG_DECIMAL with at most MAX_CONFIG_DECIMAL_PLACES
    places, else None.
    """
    result = _parsed(value)
    if result is None or not result.is_finite() or not 0 <= result <= MAX_CONFIG_DECIMAL:
        return None
    if result and int(result.normalize().as_tuple().exponent) < -MAX_CONFIG_DECIMAL_PLACES:
        return None
    return result


def bounded_decimal(value: Any, key: str, problems: list[str], *, required: bool = False,
                    positive: bool = False) -> Decimal | None:
    """`value` by decimal_value (and above 0 if `positive`); else a problem naming `key`."""
    if value is None:
        if required:
            problems.append(f"{key}: required, a decimal string or number {DECIMAL_RANGE}")
        return None
    number = decimal_value(value)
    if number is not None and not (positive and number == 0):
        return number
    parsed = _parsed(value)
    why = (f" ({value} is too large to bill)"
           if parsed is not None and parsed.is_finite() and parsed > MAX_CONFIG_DECIMAL else "")
    span = (f"above 0, up to 10^15 with at most {MAX_CONFIG_DECIMAL_PLACES} decimal places"
            if positive else DECIMAL_RANGE)
    problems.append(f"{key}: must be a number {span}{why}")
    return None


def parse_aggregation(value: Any, key: str, problems: list[str]) -> Aggregation | None:
    """The aggregation named by `value`, or None with a problem naming `key`."""
    if isinstance(value, str) and value in Aggregation.__members__.values():
        return Aggregation(value)
    problems.append(f"{key}: must be one of: {', '.join(Aggregation)}")
    return None


@dataclass(frozen=True)
class PricingKeys:
    """The checked pricing part of a rule (see BillingRule for the meaning of each)."""

    pricing: Pricing
    unit_price: Decimal | None
    package_size: int | None
    package_price: Decimal | None
    tiers: tuple[Tier, ...]
    flat_fee: Decimal
    minimum: Decimal


def parse_pricing(entry: Mapping[str, Any], label: str, problems: list[str]) -> PricingKeys | None:
    """The pricing keys of one `[[billing]]` table, or None once its problems are added.

    Refused (SPEC 5): an unknown `pricing`, keys of another pricing, a `package_size` that is
    not a positive integer, tiers whose `up_to` do not increase, a last tier with `up_to`,
    and any price, fee or count that is not finite, negative or too large to bill.
    """
    before = len(problems)
    raw_pricing = entry.get("pricing", Pricing.PER_UNIT.value)
    if not isinstance(raw_pricing, str) or raw_pricing not in Pricing.__members__.values():
        problems.append(f"{label}.pricing: must be one of: {', '.join(Pricing)}")
        return None
    pricing = Pricing(raw_pricing)
    for other in sorted(set().union(*PRICING_KEYS.values()) - PRICING_KEYS[pricing]):
        if other in entry:
            problems.append(f"{label}.{other}: not a key of {pricing} pricing "
                            f"(it takes {', '.join(sorted(PRICING_KEYS[pricing]))})")
    unit_price = package_price = None
    package_size: int | None = None
    tiers: tuple[Tier, ...] = ()
    if pricing is Pricing.PER_UNIT:
        unit_price = bounded_decimal(entry.get("unit_price"), f"{label}.unit_price", problems, required=True)
    elif pricing is Pricing.PACKAGE:
        size = entry.get("package_size")
        if (isinstance(size, bool) or not isinstance(size, int) or size <= 0
                or size > MAX_CONFIG_DECIMAL):
            problems.append(f"{label}.package_size: required, a positive integer up to 10^15")
        else:
            package_size = size
        package_price = bounded_decimal(entry.get("package_price"), f"{label}.package_price",
                                        problems, required=True)
    else:
        tiers = _parse_tiers(entry.get("tiers"), f"{label}.tiers", problems)
    flat_fee = bounded_decimal(entry.get("flat_fee", 0), f"{label}.flat_fee", problems)
    minimum = bounded_decimal(entry.get("minimum", 0), f"{label}.minimum", problems)
    if len(problems) > before or flat_fee is None or minimum is None:
        return None
    return PricingKeys(pricing, unit_price, package_size, package_price, tiers, flat_fee, minimum)


def _parse_tiers(raw: Any, label: str, problems: list[str]) -> tuple[Tier, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        problems.append(f"{label}: required, an array of tables such as "
                        '[{up_to = 1000, unit_price = "0.01"}, {unit_price = "0.005"}]')
        return ()
    before = len(problems)
    tiers = []
    previous: Decimal | None = None
    for j, entry in enumerate(raw):
        key = f"{label}[{j}]"
        for extra in sorted(set(entry) - TIER_KEYS):
            problems.append(f"{key}.{extra}: unknown key (a tier takes up_to, unit_price, "
                            "flat_price)")
        last = j == len(raw) - 1
        up_to: Decimal | None = None
        if last and "up_to" in entry:
            problems.append(f"{key}.up_to: the last tier must not have up_to "
                            "(it takes every unit above the tier before it)")
        elif not last and "up_to" not in entry:
            problems.append(f"{key}.up_to: required on every tier but the last")
        elif not last:
            up_to = bounded_decimal(entry["up_to"], f"{key}.up_to", problems, positive=True)
            if up_to is not None and previous is not None and up_to <= previous:
                problems.append(f"{key}.up_to: {up_to} does not increase "
                                f"(the tier before ends at {previous})")
            previous = up_to if up_to is not None else previous
        unit_price = bounded_decimal(entry.get("unit_price"), f"{key}.unit_price", problems, required=True)
        flat_price = bounded_decimal(entry.get("flat_price", 0), f"{key}.flat_price", problems)
        if unit_price is not None and flat_price is not None:
            tiers.append(Tier(up_to, unit_price, flat_price))
    return tuple(tiers) if len(problems) == before else ()
