"""Billing arithmetic of SPEC 5 by hand: every pricing model, currencies, and the quantities."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.config import Aggregation, BillingRule, Pricing, Tier
from reports.compute.daily import aggregate_days
from reports.compute.pricing import charge, minor_unit
from reports.compute.quantities import cumulative_quantities, month_quantity, nearest_rank_p95
from tests.factories import examples

D = Decimal
MIN = 60_000_000  # one minute in microseconds
DAY = 86_400_000_000
# The SPEC's example tiers: units 0-1000 at 0.01, 1000-5000 at 0.008, the rest at 0.005.
TIERS = (Tier(D(1000), D("0.01")), Tier(D(5000), D("0.008")), Tier(None, D("0.005")))


def rule(pricing: Pricing = Pricing.PER_UNIT, *, included: str = "0", currency: str = "USD",
         **keys: object) -> BillingRule:
    return BillingRule("rules", "invocations", Aggregation.INCREASE, D(included),
                       keys.pop("unit_price", None), currency, pricing, **keys)  # type: ignore[arg-type]


# ---- graduated -------------------------------------------------------------------------

def test_graduated_exactly_at_a_tier_end_bills_that_tier_only() -> None:
    billed = charge(D(1000), rule(Pricing.GRADUATED, tiers=TIERS))
    assert billed.amount == D("10.00")
    assert [(t.units, t.unit_price, t.amount) for t in billed.tiers] == [
        (D(1000), D("0.01"), D("10.00"))]


def test_graduated_one_unit_past_a_tier_end_bills_it_at_the_next_price() -> None:
    billed = charge(D(1001), rule(Pricing.GRADUATED, tiers=TIERS))
    # 1000 x 0.01 + 1 x 0.008 = 10.008 -> 10.01
    assert billed.priced == D("10.008") and billed.amount == D("10.01")
    assert [t.units for t in billed.tiers] == [D(1000), D(1)]


def test_graduated_over_every_tier_adds_each_tier_and_each_reached_flat_price() -> None:
    tiers = (Tier(D(1000), D("0.01")), Tier(D(5000), D("0.008"), D(5)), Tier(None, D("0.005"), D(7)))
    billed = charge(D(6500), rule(Pricing.GRADUATED, included="500", tiers=tiers))
    # 6000 billable: 1000 x 0.01 + (4000 x 0.008 + 5) + (1000 x 0.005 + 7) = 10 + 37 + 12
    assert billed.overage == D(6000) and billed.amount == D("59.00")
    assert [(t.units, t.amount) for t in billed.tiers] == [
        (D(1000), D("10.00")), (D(4000), D("37.000")), (D(1000), D("12.000"))]


def test_zero_billable_units_reach_no_tier_so_no_flat_price() -> None:
    tiers = (Tier(D(10), D(1), D(50)), Tier(None, D(1), D(50)))
    for pricing in (Pricing.GRADUATED, Pricing.VOLUME):
        billed = charge(D(80), rule(pricing, included="100", tiers=tiers))
        assert (billed.overage, billed.amount, billed.tiers) == (D(0), D("0.00"), ())


# ---- volume ----------------------------------------------------------------------------

def test_volume_at_a_tier_end_bills_every_unit_at_that_tier() -> None:
    billed = charge(D(1000), rule(Pricing.VOLUME, tiers=TIERS))
    assert billed.amount == D("10.00")


def test_volume_crossing_a_tier_bills_every_unit_at_the_lower_price_so_the_amount_drops() -> None:
    at_end = charge(D(1000), rule(Pricing.VOLUME, tiers=TIERS)).amount
    past = charge(D(1001), rule(Pricing.VOLUME, tiers=TIERS))
    # 1001 x 0.008 = 8.008 -> 8.01: less than 1000 units cost (documented in docs/reports.md).
    assert past.amount == D("8.01") and past.amount < at_end
    assert [(t.units, t.unit_price) for t in past.tiers] == [(D(1001), D("0.008"))]
    assert charge(D(6000), rule(Pricing.VOLUME, tiers=TIERS)).amount == D("30.00")


def test_volume_adds_the_flat_price_of_its_tier() -> None:
    tiers = (Tier(D(100), D(0), D(20)), Tier(None, D("0.1"), D(50)))
    assert charge(D(100), rule(Pricing.VOLUME, tiers=tiers)).amount == D("20.00")
    assert charge(D(101), rule(Pricing.VOLUME, tiers=tiers)).amount == D("60.10")


# ---- package ---------------------------------------------------------------------------

def test_a_started_package_is_billed_whole() -> None:
    r = rule(Pricing.PACKAGE, included="100", package_size=1000, package_price=D(5))
    # 2101 - 100 = 2001 billable units: 3 packages of 1000
    billed = charge(D(2101), r)
    assert (billed.packages, billed.amount) == (3, D("5.00") * 3)
    assert charge(D(1100), r).packages == 1  # 1000 billable: exactly one package
    assert charge(D(100), r).amount == D("0.00")
    assert charge(D("100.5"), r).packages == 1  # half a unit starts a package


# ---- per unit, fees, minimums, currencies -----------------------------------------------

def test_per_unit_is_overage_times_unit_price() -> None:
    billed = charge(D(101_000), rule(included="100000", unit_price=D("0.002")))
    assert (billed.overage, billed.amount, billed.tiers) == (D(1000), D("2.00"), ())


def test_a_half_cent_rounds_up_once_at_the_end() -> None:
    assert charge(D(1), rule(unit_price=D("0.005"))).amount == D("0.01")  # half-even: 0.00
    assert charge(D(25), rule(unit_price=D("0.005"))).amount == D("0.13")  # 0.125
    # Rounded once: two tiers of 0.004 each add to 0.008 -> 0.01, not 0.00 + 0.00.
    tiers = (Tier(D(1), D("0.004")), Tier(None, D("0.004")))
    assert charge(D(2), rule(Pricing.GRADUATED, tiers=tiers)).amount == D("0.01")


def test_flat_fee_is_added_and_a_minimum_that_is_higher_applies() -> None:
    base = {"unit_price": D("0.002"), "flat_fee": D(10)}
    higher = charge(D(1000), rule(minimum=D(20), **base))  # 2 + 10 = 12 < 20
    assert (higher.amount, higher.minimum_applied) == (D("20.00"), True)
    lower = charge(D(1000), rule(minimum=D(5), **base))  # 12 > 5
    assert (lower.amount, lower.minimum_applied) == (D("12.00"), False)
    assert charge(D(0), rule(minimum=D(20), **base)).amount == D("20.00")


def test_yen_round_to_whole_yen_and_dinar_to_three_places() -> None:
    assert charge(D(3), rule(unit_price=D("0.5"), currency="JPY")).amount == D(2)  # 1.5
    assert charge(D(5), rule(unit_price=D("0.5"), currency="JPY")).amount == D(3)  # 2.5
    assert str(charge(D(1234), rule(unit_price=D("0.1"), currency="JPY")).amount) == "123"
    assert charge(D(1), rule(unit_price=D("0.0005"), currency="KWD")).amount == D("0.001")
    assert str(charge(D(2469), rule(unit_price=D("0.0005"), currency="KWD")).amount) == "1.235"


@pytest.mark.parametrize(("code", "places"), [
    ("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3), ("CLF", 4), ("IQD", 3),
    ("XAU", 2), ("ZZZ", 2)])
def test_minor_units_follow_iso_4217_and_an_unknown_code_has_two(code: str, places: int) -> None:
    assert minor_unit(code) == places


def test_every_currency_has_the_minor_unit_iso4217_gives_it() -> None:
    # The package's own exponent for each of its codes, in either case; 2 where it has none.
    from iso4217 import Currency

    for currency in Currency:
        places = 2 if currency.exponent is None else currency.exponent
        assert (minor_unit(currency.code), minor_unit(currency.code.lower())) == (places, places)


def test_the_largest_stored_reading_is_priced_exactly_without_an_error() -> None:
    q = D(repr(1.7976931348623157e308))
    billed = charge(q, rule(unit_price=D("0.5")))
    # 1.7976931348623157e308 / 2, to the cent: every digit kept, none lost to a 28-digit context.
    assert billed.amount == D("8.9884656743115785E+307")
    assert billed.amount.as_tuple().exponent == -2


@settings(max_examples=examples(200), deadline=None)
@given(
    ends=st.lists(st.integers(1, 10_000), min_size=0, max_size=4, unique=True),
    prices=st.lists(st.decimals(0, 10, places=4), min_size=5, max_size=5),
    flats=st.lists(st.decimals(0, 100, places=2), min_size=5, max_size=5),
    included=st.integers(0, 500),
    q1=st.decimals(0, 30_000, places=4), q2=st.decimals(0, 30_000, places=4),
)
def test_a_graduated_amount_never_decreases_as_the_quantity_grows(
        ends: list[int], prices: list[Decimal], flats: list[Decimal], included: int,
        q1: Decimal, q2: Decimal) -> None:
    bounds: list[Decimal | None] = [D(e) for e in sorted(ends)]
    tiers = tuple(Tier(up, p, f) for up, p, f in zip([*bounds, None], prices, flats, strict=False))
    r = rule(Pricing.GRADUATED, included=str(included), tiers=tiers)
    lo, hi = sorted((q1, q2))
    assert charge(lo, r).amount <= charge(hi, r).amount


# ---- quantities ------------------------------------------------------------------------

def test_p95_is_the_nearest_rank_value() -> None:
    values = np.array([20, 3, 17, 1, 9, 14, 5, 11, 19, 2, 8, 16, 4, 13, 10, 6, 18, 7, 15, 12],
                      dtype=float)
    assert nearest_rank_p95(values) == 19  # rank ceil(0.95 x 20) = 19 of 1..20
    assert nearest_rank_p95(np.array([42.0])) == 42  # rank 1 of 1
    assert nearest_rank_p95(np.arange(1, 22, dtype=float)) == 20  # ceil(19.95) = 20
    assert nearest_rank_p95(np.zeros(0)) is None


def month_of(t: list[int], v: list[float], aggregation: Aggregation, *, days: int = 2,
             staleness_us: int = 10 * MIN, metric_type: str = "gauge") -> Decimal:
    bounds = np.arange(days + 1, dtype=np.int64) * DAY
    ta, va = np.array(t, dtype=np.int64), np.array(v, dtype=float)
    rows = aggregate_days(ta, va, None, bounds, metric_type=metric_type,
                          staleness_us=staleness_us)
    return month_quantity(cumulative_quantities(rows, aggregation, sample_t=ta, sample_value=va))


# 10 from 00:00 (until the next sample at 00:05), 20 from 00:05 until stale at 00:15 (the next
# sample is only at 01:00), 40 from 01:00 until stale at 01:10: 25 minutes covered,
# 10 x 300 + 20 x 600 + 40 x 600 = 39,000 value-seconds.
GAP_T = [0, 5 * MIN, 60 * MIN]
GAP_V = [10.0, 20.0, 40.0]


def test_twa_holds_each_sample_until_the_next_or_until_it_goes_stale() -> None:
    assert month_of(GAP_T, GAP_V, Aggregation.TWA) == D(26)  # 39,000 / 1,500 s


def test_unit_hours_integrate_the_same_holding_in_hours_rounded_to_four_places() -> None:
    assert month_of(GAP_T, GAP_V, Aggregation.UNIT_HOURS) == D("10.8333")  # 39,000 / 3,600


def test_time_weighted_quantities_span_days_and_are_zero_when_nothing_is_covered() -> None:
    # 10 for the last 5 minutes of day 1, 30 for 10 minutes of day 2 (stale after 10).
    t = [DAY - 5 * MIN, DAY]
    assert month_of(t, [10.0, 30.0], Aggregation.TWA) == D("23.3333")  # 21,000 / 900 s
    assert month_of(t, [10.0, 30.0], Aggregation.UNIT_HOURS) == D("5.8333")  # 21,000 / 3,600
    for agg in (Aggregation.TWA, Aggregation.UNIT_HOURS, Aggregation.P95, Aggregation.LAST):
        assert month_of([], [], agg) == D(0)


def test_a_quantity_is_rounded_half_up_to_four_places() -> None:
    # 1 and 2.0001, one minute each: an average of 1.50005 -> 1.5001 (half-even: 1.5000).
    assert month_of([0, MIN], [1.0, 2.0001], Aggregation.TWA, staleness_us=MIN) == D("1.5001")


def test_last_and_p95_of_a_month_of_samples() -> None:
    t = [i * 60 * MIN for i in range(20)]  # one an hour, all on day 1
    v = [float(x) for x in (5, 1, 20, 3, 17, 2, 9, 14, 6, 11, 19, 4, 8, 16, 13, 10, 18, 7, 15, 12)]
    assert month_of(t, v, Aggregation.LAST) == D(12)
    assert month_of(t, v, Aggregation.P95) == D(19)
    assert month_of([DAY + 5], [3.5], Aggregation.P95) == D("3.5")
    assert month_of(t, v, Aggregation.PEAK) == D(20)
