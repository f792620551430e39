"""The `[[billing]]` table (SPEC 5): the typed rule, its vocabularies and the checks of its keys."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from etl.config.fields import MAX_CONFIG_DECIMAL, TopLevel, bounded_decimal, local_date, what
from etl.config.focus import BILLING_FOCUS_KEYS, focus_match, focus_text
from etl.vendors import VendorKind
from etl.vendors.types import MetricType


class Aggregation(StrEnum):
    """How a month's samples become the billed quantity (SPEC 5 Billing)."""

    INCREASE = "increase"
    PEAK = "peak"
    P95 = "p95"
    TWA = "twa"
    UNIT_HOURS = "unit_hours"
    LAST = "last"
    # Interval metrics (SPEC 10): Σ value × overlap with the period / bucket length.
    SUM = "sum"


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
                         "flat_fee", "minimum", "cycle_day", "valid_from", "valid_until"}
                        ) | BILLING_FOCUS_KEYS
# A period starts on this day of a month at the latest: every month has it (SPEC 11).
MAX_CYCLE_DAY = 28
BILLING_KEYS = COMMON_KEYS | frozenset().union(*PRICING_KEYS.values())
TIER_KEYS = frozenset({"up_to", "unit_price", "flat_price"})
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


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
    # FOCUS (SPEC 12): the unit of its quantity (None: the metric's name), and the columns
    # and values that select its charges in a FOCUS invoice.
    unit: str | None = None
    focus_match: tuple[tuple[str, str], ...] = ()

    def valid_on(self, day: date) -> bool:
        """Whether the rule prices a period whose first local day is `day` (SPEC 11)."""
        return ((self.valid_from is None or self.valid_from <= day)
                and (self.valid_until is None or day < self.valid_until))

    def first_period(self, start: date, end: date | None) -> date | None:
        """The first day in [start, end) on which a period of the rule starts and it prices it."""
        return first_period(self.cycle_day, self.valid_from, self.valid_until, start, end)


def first_period(cycle_day: int, valid_from: date | None, valid_until: date | None,
                 start: date, end: date | None) -> date | None:
    """The first day in [start, end) that is a `cycle_day` inside [valid_from, valid_until).

    A rule prices the periods starting on its `cycle_day` from `valid_from` to before
    `valid_until` (SPEC 11); None when no such period starts in [start, end).
    """
    lo = max(start, valid_from) if valid_from is not None else start
    if lo.day > cycle_day:
        if (lo.year, lo.month) == (date.max.year, 12):
            return None
        lo = date(lo.year + lo.month // 12, lo.month % 12 + 1, 1)
    first = lo.replace(day=cycle_day)
    ends = [d for d in (end, valid_until) if d is not None]
    return first if all(first < d for d in ends) else None


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


def parse_billing_rules(
    raw_billing: list[Any], declared: Mapping[str, VendorKind | None], top: TopLevel
) -> list[BillingRule]:
    """The valid rules of `[[billing]]`.

    Several rules may name one series when their `[valid_from, valid_until)` ranges do not
    overlap (SPEC 11); an overlap is refused naming the later rule's `valid_from`.
    """
    billing: list[BillingRule] = []
    placed: dict[tuple[str, str], list[tuple[int, BillingRule]]] = {}
    for i, entry in enumerate(raw_billing):
        found: list[str] = []
        rule = _parse_billing(entry, i, declared, found)
        if rule is not None:
            same = placed.setdefault((rule.source, rule.metric), [])
            clash = next((j for j, other in same if _overlap(rule, other)), None)
            if clash is None:
                same.append((i, rule))
                billing.append(rule)
            else:
                other = dict(same)[clash]
                later, earlier = ((i, rule), (clash, other)) if _starts(rule) >= _starts(other) \
                    else ((clash, other), (i, rule))
                found.append(
                    f"billing[{later[0]}].valid_from: {later[1].valid_from or 'unset'} is inside "
                    f"the validity of billing[{earlier[0]}] for {rule.source}/{rule.metric} "
                    f"(until {earlier[1].valid_until or 'no end'}); rules of one series need "
                    "valid_from/valid_until ranges that do not overlap")
        top.extend(found)
    return billing


def _starts(rule: BillingRule) -> date:
    return rule.valid_from or date.min


def _overlap(a: BillingRule, b: BillingRule) -> bool:
    """Whether the [valid_from, valid_until) ranges of two rules share a day."""
    return (_starts(a) < (b.valid_until or date.max)
            and _starts(b) < (a.valid_until or date.max))


def _parse_validity(entry: Mapping[str, Any], label: str, problems: list[str]
                    ) -> tuple[int, date | None, date | None]:
    """`cycle_day` (default 1), `valid_from` and `valid_until` of a rule (SPEC 11)."""
    cycle_day = entry.get("cycle_day", 1)
    cycle_day_ok = not isinstance(cycle_day, bool) and isinstance(cycle_day, int) \
        and 1 <= cycle_day <= MAX_CYCLE_DAY
    if not cycle_day_ok:
        problems.append(f"{label}.cycle_day: must be a whole number from 1 to {MAX_CYCLE_DAY}, "
                        f"not {cycle_day!r}")
        cycle_day = 1
    valid_from = (local_date(entry["valid_from"], f"{label}.valid_from", problems)
                  if "valid_from" in entry else None)
    valid_until = (local_date(entry["valid_until"], f"{label}.valid_until", problems)
                   if "valid_until" in entry else None)
    if valid_from is not None and valid_until is not None:
        if valid_until <= valid_from:
            problems.append(f"{label}.valid_until: {valid_until} is not after valid_from "
                            f"{valid_from}")
        elif cycle_day_ok and first_period(cycle_day, valid_from, valid_until, valid_from,
                                           None) is None:
            # Its periods start on cycle_day: a range holding none would load, then never
            # price anything (the same kind as a credit that can never pay). A refused
            # cycle_day is not checked against: its stand-in 1 would blame valid_until for
            # the cycle_day's fault.
            problems.append(f"{label}.valid_until: {valid_until}: no period starting on day "
                            f"{cycle_day} (cycle_day) begins from valid_from {valid_from} to "
                            "before it, so the rule would never price anything")
    return cycle_day, valid_from, valid_until


def _parse_billing(
    entry: Any, i: int, declared: Mapping[str, VendorKind | None], problems: list[str]
) -> BillingRule | None:
    """The rule in `entry`, or None once every problem with it is added to `problems`.

    `declared` maps each source name in the config to its kind (None when that is unknown).
    A per-item series is named in full (`tokens:gpt-4o`, SPEC 7).
    """
    label = f"billing[{i}]"
    if not isinstance(entry, dict):
        problems.append(f"{label}: must be a table")
        return None
    before = len(problems)
    for key in sorted(set(entry) - BILLING_KEYS):
        problems.append(f"{label}.{key}: unknown key")
    source, kind = _billing_source(entry.get("source"), label, declared, problems)
    metric = _billing_metric(entry.get("metric"), label, source, kind, problems)
    aggregation = parse_aggregation(entry.get("aggregation"), f"{label}.aggregation", problems)
    if (
        aggregation is Aggregation.INCREASE
        and kind is not None
        and metric is not None
        and kind.metric_type_of(metric) == MetricType.GAUGE
    ):
        problems.append(f"{label}.aggregation: 'increase' needs a counter; {metric!r} is a gauge")
    mtype = (kind.metric_type_of(metric) if kind is not None and metric is not None else None)
    if aggregation is Aggregation.SUM and mtype not in (None, MetricType.INTERVAL):
        problems.append(f"{label}.aggregation: 'sum' needs an interval metric; {metric!r} is a "
                        f"{mtype}")
    elif aggregation is Aggregation.INCREASE and mtype is MetricType.INTERVAL:
        problems.append(f"{label}.aggregation: {metric!r} is an interval metric: use 'sum'")
    # Unset, a rule bills from the first unit in US dollars (documented in docs/configuration.md).
    included = bounded_decimal(entry.get("included", 0), f"{label}.included", problems)
    pricing = parse_pricing(entry, label, problems)
    cycle_day, valid_from, valid_until = _parse_validity(entry, label, problems)
    currency = entry.get("currency", "USD")
    if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency):
        problems.append(f"{label}.currency: must be a three-letter code such as 'USD'")
    unit = focus_text(entry, "unit", label, problems)
    match = focus_match(entry, label, problems)
    if len(problems) > before or kind is None:
        return None
    assert source is not None and metric is not None and aggregation is not None
    assert included is not None and pricing is not None
    return BillingRule(
        source=source,
        metric=metric,
        aggregation=aggregation,
        included=included,
        unit_price=pricing.unit_price,
        currency=currency,
        pricing=pricing.pricing,
        package_size=pricing.package_size,
        package_price=pricing.package_price,
        tiers=pricing.tiers,
        flat_fee=pricing.flat_fee,
        minimum=pricing.minimum,
        cycle_day=cycle_day,
        valid_from=valid_from,
        valid_until=valid_until,
        unit=unit,
        focus_match=match,
    )


def _billing_source(
    source: Any, label: str, declared: Mapping[str, VendorKind | None], problems: list[str]
) -> tuple[str | None, VendorKind | None]:
    """(the source name, its kind) of a rule; the kind is None when it cannot be checked."""
    if source is None:
        problems.append(f"{label}.source: required, the name of a [[sources]] entry")
    elif not isinstance(source, str):
        problems.append(f"{label}.source: must be a string naming a source, not {what(source)}")
    elif source not in declared:
        problems.append(f"{label}.source: {source!r} is not a configured source")
    else:
        return source, declared[source]
    return None, None


def _billing_metric(
    metric: Any, label: str, source: str | None, kind: VendorKind | None, problems: list[str]
) -> str | None:
    if metric is None:
        problems.append(f"{label}.metric: required, the name of one of the source's metrics")
    elif not isinstance(metric, str):
        problems.append(f"{label}.metric: must be a string, not {what(metric)}")
    elif kind is not None and kind.metric_type_of(metric) is None:
        problems.append(
            f"{label}.metric: {metric!r} is not a metric of {kind.name} source {source!r} "
            f"(expected one of: {kind.metric_names()})"
        )
    else:
        return metric
    return None
