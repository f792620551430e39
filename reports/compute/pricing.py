"""The one pricing function: a billed quantity and a `[[billing]]` rule to an amount (SPEC 5)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

from etl.config import BillingRule, Pricing, Tier
from etl.config.currencies import minor_unit

# Wide enough that every step below is exact: a quantity up to the largest double (309
# digits, 4 places) times a price within etl.config.fields' bounds (15 + 12 digits) fits
# with room to spare, so the only rounding is the one at the end. Anything that would
# still overflow raises rather than rounding silently.
PRICING_CONTEXT = Context(prec=400, rounding=ROUND_HALF_UP, Emax=10_000, Emin=-10_000,
                          traps=[InvalidOperation, DivisionByZero, Overflow])


@dataclass(frozen=True)
class TierReached:
    """One tier a graduated or volume rule reached: billable units in it, at `unit_price`.

    `amount` is units × unit_price + flat_price, exact (the rule's amount is rounded once,
    at the end, not per tier).
    """

    units: Decimal
    unit_price: Decimal
    flat_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Charge:
    """What a rule charges for a quantity.

    `overage`: billable units, max(0, quantity − included). `priced`: the pricing's own
    amount before `flat_fee` and `minimum`, exact. `amount`: max(priced + flat_fee,
    minimum) rounded half-up to the currency's minor unit. `tiers`: the tiers reached
    (graduated and volume only; none for zero billable units). `packages`: packages
    billed (package pricing only). `minimum_applied`: the minimum, not usage, set the amount.
    """

    overage: Decimal
    priced: Decimal
    amount: Decimal
    tiers: tuple[TierReached, ...] = ()
    packages: int | None = None
    minimum_applied: bool = False


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up to the minor unit of `currency` (SPEC 5)."""
    with localcontext(PRICING_CONTEXT):
        return amount.quantize(Decimal(1).scaleb(-minor_unit(currency)), rounding=ROUND_HALF_UP)


def charge(quantity: Decimal, rule: BillingRule) -> Charge:
    """Price `quantity` (already rounded to 4 places, see quantities.round_quantity) by `rule`.

    Every model of SPEC 5: per_unit, package (whole packages, rounded up), graduated (units
    cut into the tiers in order; each reached tier adds its flat_price) and volume (every
    unit at the price of the tier the billable units fall in). Then `flat_fee` is added and
    `minimum` is a floor; the result is rounded once, half-up, to the currency's minor unit.
    Raises decimal.InvalidOperation only for a non-finite quantity, which the store refuses.
    """
    pricing = Pricing(rule.pricing)
    with localcontext(PRICING_CONTEXT):
        overage = max(Decimal(0), quantity - rule.included)
        tiers: tuple[TierReached, ...] = ()
        packages: int | None = None
        if pricing is Pricing.PACKAGE:
            assert rule.package_size is not None and rule.package_price is not None
            whole, rest = divmod(overage, Decimal(rule.package_size))
            packages = int(whole) + (1 if rest else 0)
            priced = packages * rule.package_price
        elif pricing is Pricing.GRADUATED:
            tiers = graduated_tiers(overage, rule.tiers)
            priced = sum((t.amount for t in tiers), Decimal(0))
        elif pricing is Pricing.VOLUME:
            tiers = volume_tier(overage, rule.tiers)
            priced = sum((t.amount for t in tiers), Decimal(0))
        else:
            assert rule.unit_price is not None
            priced = overage * rule.unit_price
        before_minimum = priced + rule.flat_fee
        amount = max(before_minimum, rule.minimum)
        return Charge(plain(overage), priced, round_money(amount, rule.currency), tiers,
                      packages, minimum_applied=rule.minimum > before_minimum)


def graduated_tiers(units: Decimal, tiers: tuple[Tier, ...]) -> tuple[TierReached, ...]:
    """The billable units cut into the tiers in order: tier k takes (up_to[k-1], up_to[k]]."""
    reached = []
    lower = Decimal(0)
    for tier in tiers:
        if units <= lower:
            break
        upper = units if tier.up_to is None else min(units, tier.up_to)
        in_tier = upper - lower
        reached.append(TierReached(plain(in_tier), tier.unit_price, tier.flat_price,
                                   in_tier * tier.unit_price + tier.flat_price))
        if tier.up_to is None:
            break
        lower = tier.up_to
    return tuple(reached)


def volume_tier(units: Decimal, tiers: tuple[Tier, ...]) -> tuple[TierReached, ...]:
    """The one tier whose `up_to` is the first at least `units` (else the last); none at 0."""
    if units <= 0:
        return ()
    tier = next((t for t in tiers if t.up_to is not None and units <= t.up_to), tiers[-1])
    return (TierReached(plain(units), tier.unit_price, tier.flat_price,
                        units * tier.unit_price + tier.flat_price),)


def plain(d: Decimal) -> Decimal:
    """The same value without trailing zeros or exponent (100.0000 prints as 100)."""
    return Decimal(int(d)) if d == d.to_integral_value() else d.normalize(PRICING_CONTEXT)
