"""Billing periods from any cycle day, plan changes and prepaid credits (SPEC 11).

Every figure is worked out by hand in the comments; the reports run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from etl.config import Aggregation, BillingRule, Config, Credit
from reports.compute.credits import PeriodCharge, apply_credits, drawdown_order
from reports.periods import billing_period, period_label
from reports.pipelines import billing, write_billing
from tests.factories import at, examples, make_config, nected, store

BERLIN = ZoneInfo("Europe/Berlin")
LATER = datetime(2027, 6, 1, tzinfo=UTC)  # every period below is over by then


def rule(price: str = "0.01", included: int = 100, **keys: object) -> BillingRule:
    """Invocations of `rules` by increase, per unit, in USD (keys: cycle_day, valid_*...)."""
    base = BillingRule("rules", "invocations", Aggregation.INCREASE, Decimal(included),
                       Decimal(price), "USD")
    return replace(base, **keys)  # type: ignore[arg-type]


def config(*rules: BillingRule, tz: str = "UTC", credits: tuple[Credit, ...] = ()) -> Config:
    return replace(make_config(tz), billing=tuple(rules), credits=credits)


def test_a_period_from_the_15th_across_the_end_of_march_in_berlin_lasts_743_hours() -> None:
    period = billing_period(date(2026, 3, 1), 15, BERLIN)
    # 15 March 00:00 CET is 14 March 23:00 UTC; 15 April 00:00 CEST is 14 April 22:00 UTC.
    assert (period.start, period.end) == (date(2026, 3, 15), date(2026, 4, 15))
    assert period.start_us == int(datetime(2026, 3, 14, 23, tzinfo=UTC).timestamp()) * 10**6
    assert period.end_us == int(datetime(2026, 4, 14, 22, tzinfo=UTC).timestamp()) * 10**6
    assert (period.end_us - period.start_us) // 3_600_000_000 == 31 * 24 - 1


def test_a_cycle_day_of_28_in_february_and_a_cycle_day_of_1_are_whole_periods() -> None:
    feb = billing_period(date(2026, 2, 1), 28, ZoneInfo("UTC"))
    assert (feb.start, feb.end, len(feb.days)) == (date(2026, 2, 28), date(2026, 3, 28), 28)
    dec = billing_period(date(2026, 12, 1), 1, ZoneInfo("UTC"))
    assert (dec.start, dec.end) == (date(2026, 12, 1), date(2027, 1, 1))


def test_the_label_of_a_day_is_the_month_its_period_started_in() -> None:
    assert period_label(date(2026, 12, 6), 15) == date(2026, 11, 1)
    assert period_label(date(2026, 12, 15), 15) == date(2026, 12, 1)
    assert period_label(date(2026, 1, 10), 15) == date(2025, 12, 1)
    assert period_label(date(2026, 1, 10), 1) == date(2026, 1, 1)


def berlin_history(engine: Engine) -> None:
    """Readings around the 15th-of-the-month boundaries of March and April 2026 (Berlin)."""
    store(engine, [
        nected(at("2026-03-14T22:30:00"), 1000),  # 23:30 CET on the 14th: the first ever, adds 0
        nected(at("2026-03-14T23:30:00"), 1100),  # 00:30 on the 15th: +100 in period 2026-03
        nected(at("2026-03-29T12:00:00"), 1500),  # +400 (the day clocks went forward)
        nected(at("2026-04-14T21:30:00"), 1700),  # 23:30 CEST on 14 April: +200, still 2026-03
        nected(at("2026-04-14T22:30:00"), 2000),  # 00:30 on 15 April: +300 in period 2026-04
    ])


def test_a_15th_of_the_month_cycle_in_berlin_counts_the_readings_of_its_local_days(
        engine: Engine) -> None:
    berlin_history(engine)
    cfg = config(rule(cycle_day=15), tz="Europe/Berlin")
    [march] = billing(engine, cfg, date(2026, 3, 1), now=LATER).table.to_dict("records")
    # 100 + 400 + 200 = 700 units, 600 above the 100 included, at 0.01: 6.00 USD.
    assert (march["month"], march["period_start"], march["period_end"]) == (
        "2026-03", date(2026, 3, 15), date(2026, 4, 15))
    assert (march["quantity"], march["overage"], march["amount"]) == (700, 600, Decimal("6.00"))
    [april] = billing(engine, cfg, date(2026, 4, 1), now=LATER).table.to_dict("records")
    assert (april["quantity"], april["amount"]) == (300, Decimal("2.00"))


def test_a_plan_change_at_a_period_boundary_prices_each_period_by_the_rule_of_its_first_day(
        engine: Engine) -> None:
    berlin_history(engine)
    old = rule("0.01", cycle_day=15, valid_until=date(2026, 4, 15))
    new = rule("0.02", included=50, cycle_day=15, valid_from=date(2026, 4, 15))
    cfg = config(old, new, tz="Europe/Berlin")
    [march] = billing(engine, cfg, date(2026, 3, 1), now=LATER).table.to_dict("records")
    assert (march["amount"], march["valid_until"]) == (Decimal("6.00"), date(2026, 4, 15))
    # April: 300 units, 250 above the new plan's 50, at 0.02: 5.00 USD.
    [april] = billing(engine, cfg, date(2026, 4, 1), now=LATER).table.to_dict("records")
    assert (april["amount"], april["valid_from"]) == (Decimal("5.00"), date(2026, 4, 15))
    # Before the old plan's history there is still a period; after both plans none.
    assert billing(engine, replace(cfg, billing=(new,)), date(2026, 3, 1),
                   now=LATER).table.empty


def usd(amount: str, start: date, source: str = "openai", order: int = 0,
        currency: str = "USD") -> PeriodCharge:
    return PeriodCharge(source, "tokens", currency, start.replace(day=1), start, order,
                        Decimal(amount))


CREDITS = (
    Credit("spring", "openai", Decimal("100.00"), "USD", date(2026, 1, 1), date(2026, 7, 1)),
    Credit("open", "openai", Decimal("50.00"), "USD", date(2026, 2, 1)),
    Credit("yen", "openai", Decimal("1000"), "JPY", date(2026, 1, 1)),
)


def test_credits_pay_earliest_expiry_first_in_their_own_currency_until_used_up() -> None:
    charges = [usd("30.00", date(2026, 1, 1)), usd("60.00", date(2026, 2, 1)),
               usd("45.50", date(2026, 3, 1)), usd("20.00", date(2026, 7, 1)),
               usd("700", date(2026, 2, 1), currency="JPY"),
               usd("500", date(2026, 3, 1), currency="JPY"),
               usd("9.99", date(2026, 3, 1), source="anthropic")]
    assert [c.name for c in drawdown_order(CREDITS)] == ["spring", "yen", "open"]
    draws = apply_credits(charges, CREDITS)
    # No expiry comes last, then the earlier grant: yen (1 Jan) before open (1 Feb).
    # January: only `spring` (granted 1 Jan) applies: 100 -> 70. February: `spring` expires
    # first, so it pays all 60 -> 10. March: 10 from spring, 35.50 from open -> 14.50.
    # July: spring has expired (1 July is not before its expiry); open pays its last 14.50.
    assert [d.applied for d in draws[:4]] == [Decimal("30.00"), Decimal("60.00"),
                                              Decimal("45.50"), Decimal("14.50")]
    assert draws[2].by_credit == (("spring", Decimal("10.00")), ("open", Decimal("35.50")))
    assert draws[3].balances == (("open", Decimal("0.00")),)
    # Yen: 700 then the 300 left of 1000 (JPY has no minor unit); another source: nothing.
    assert [d.applied for d in draws[4:]] == [Decimal(700), Decimal(300), Decimal(0)]


def test_credits_pay_periods_in_the_order_they_start_whatever_order_they_are_given() -> None:
    one = Credit("c", "openai", Decimal("50.00"), "USD", date(2026, 1, 1))
    late, early = usd("40.00", date(2026, 2, 1)), usd("40.00", date(2026, 1, 1))
    assert [d.applied for d in apply_credits([late, early], [one])] == [Decimal("10.00"),
                                                                        Decimal("40.00")]


def test_a_kwd_credit_keeps_three_decimals() -> None:
    kwd = Credit("k", "openai", Decimal("10.125"), "KWD", date(2026, 1, 1))
    [draw] = apply_credits([usd("2.255", date(2026, 1, 1), currency="KWD")], [kwd])
    assert (draw.applied, draw.balances) == (Decimal("2.255"), (("k", Decimal("7.870")),))


cents = st.integers(min_value=0, max_value=10**7).map(lambda c: Decimal(c).scaleb(-2))
days = st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 1))


@settings(max_examples=examples(150), deadline=None)
@given(charges=st.lists(st.tuples(cents, days, st.integers(0, 2)), max_size=30),
       credits=st.lists(st.tuples(cents.filter(lambda d: d > 0), days,
                                  st.none() | st.integers(1, 400)), min_size=1, max_size=4))
def test_no_balance_goes_below_zero_and_no_credit_pays_more_than_its_amount(
        charges: list[tuple[Decimal, date, int]],
        credits: list[tuple[Decimal, date, int | None]]) -> None:
    from datetime import timedelta

    granted = [Credit(f"c{i}", "openai", amount, "USD", start,
                      None if days_valid is None else start + timedelta(days=days_valid))
               for i, (amount, start, days_valid) in enumerate(credits)]
    given_charges = [usd(str(a), d, order=o) for a, d, o in charges]
    draws = apply_credits(given_charges, granted)
    paid: dict[str, Decimal] = {}
    for charge, draw in zip(given_charges, draws, strict=True):
        assert 0 <= draw.applied <= charge.amount
        assert all(balance >= 0 for _, balance in draw.balances)
        for name, taken in draw.by_credit:
            paid[name] = paid.get(name, Decimal(0)) + taken
    for credit in granted:
        assert paid.get(credit.name, Decimal(0)) <= credit.amount


def monthly_history(engine: Engine) -> None:
    store(engine, [nected(at("2026-01-01T00:00:00"), 0), nected(at("2026-01-20T00:00:00"), 300),
                   nected(at("2026-02-20T00:00:00"), 800), nected(at("2026-03-20T00:00:00"), 1200)])


def test_a_credit_balance_carries_across_periods_whatever_month_the_report_asks_for(
        engine: Engine) -> None:
    monthly_history(engine)
    credit = Credit("prepaid", "rules", Decimal("10.00"), "USD", date(2026, 1, 1))
    cfg = config(rule("0.01", included=0), credits=(credit,))
    # January 3.00, February 5.00, March 4.00: the credit pays 3.00, 5.00, then its last 2.00.
    feb = billing(engine, cfg, date(2026, 2, 1), now=LATER)
    [row] = feb.table.to_dict("records")
    assert (row["amount"], row["credit_applied"], row["amount_due"]) == (
        Decimal("5.00"), Decimal("5.00"), Decimal("0.00"))
    assert [s.balance for s in feb.credits] == [Decimal("2.00")]
    march = billing(engine, cfg, date(2026, 3, 1), now=LATER)
    [row] = march.table.to_dict("records")
    assert (row["credit_applied"], row["amount_due"]) == (Decimal("2.00"), Decimal("2.00"))
    assert [s.balance for s in march.credits] == [Decimal("0.00")]


def test_a_credit_in_progress_projects_its_run_out_date_at_the_linear_run_rate(
        engine: Engine) -> None:
    store(engine, [nected(at("2026-03-01T00:00:00"), 0), nected(at("2026-03-11T00:00:00"), 1000)])
    credit = Credit("prepaid", "rules", Decimal("99.50"), "USD", date(2026, 3, 1))
    cfg = config(rule("0.01", included=0), credits=(credit,))
    result = billing(engine, cfg, date(2026, 3, 1), now=at("2026-03-11T00:00:00"))
    [row] = result.table.to_dict("records")
    # 10 of 31 days: 1000 units so far (10.00 USD), 3100 projected (31.00): 1.00 USD a day.
    assert (row["amount"], row["projected_amount"]) == (Decimal("10.00"), Decimal("31.00"))
    assert row["elapsed_pct"] == pytest.approx(32.26)
    # 89.50 left at 1.00 a day from 11 March: used up 89.5 days later, on 8 June.
    [status] = result.credits
    assert (status.balance, status.run_out) == (Decimal("89.50"), date(2026, 6, 8))


def five_minutely(engine: Engine, start: str, end: str) -> None:
    """A nected reading every 5 minutes (interval 300 s: each covers 10 minutes)."""
    t, stop = at(start), at(end)
    readings = []
    while t <= stop:
        readings.append(nected(t, (t - at("2026-11-01T00:00:00")).total_seconds() / 60))
        t += timedelta(minutes=5)
    store(engine, readings)


def billing_files(engine: Engine, cfg: Config, now: datetime, out: Path
                  ) -> tuple[dict[str, str], str]:
    result = billing(engine, cfg, date(2026, 11, 1), now=now)
    write_billing(result, ["csv", "html"], out)
    with (out / "billing-2026-11.csv").open(newline="") as fh:
        [row] = list(csv.DictReader(fh))
    return row, (out / "billing-2026-11.html").read_text()


def test_a_period_in_progress_reads_as_one_and_only_a_real_gap_is_red(
        engine: Engine, tmp_path: Path) -> None:
    five_minutely(engine, "2026-11-01T00:00:00", "2026-11-07T00:00:00")
    cfg = config(rule("0.01", included=0))
    now = at("2026-11-07T00:00:00")
    row, html = billing_files(engine, cfg, now, tmp_path / "full")
    # Six of 30 days have passed, all observed; coverage_pct is still the share of the whole
    # month: 6 days and 10 minutes of 30 days = 20.02 %.
    assert (row["coverage_pct"], row["elapsed_pct"], row["elapsed_coverage_pct"]) == (
        "20.02", "20", "100")
    assert 'class="low"' not in html and "lower bound" not in html
    assert ("rules/invocations: period 2026-11-01 to 2026-12-01 in progress, 20 % elapsed; "
            "100 % of the elapsed part observed; projected at period end 43200 units, "
            "432.00 USD") in html


def test_a_gap_in_the_elapsed_part_of_a_period_in_progress_is_red(
        engine: Engine, tmp_path: Path) -> None:
    five_minutely(engine, "2026-11-01T00:00:00", "2026-11-02T12:00:00")
    five_minutely(engine, "2026-11-04T00:00:00", "2026-11-07T00:00:00")
    cfg = config(rule("0.01", included=0))
    row, html = billing_files(engine, cfg, at("2026-11-07T00:00:00"), tmp_path / "gap")
    # Observed: 1 Nov 00:00 to 2 Nov 12:10 and 4 Nov 00:00 to 7 Nov: 108 h 10 min of 144 h.
    assert row["elapsed_coverage_pct"] == "75.12"
    assert 'class="low"' in html
    assert "75.12 % of the elapsed part observed — the quantity is a lower bound" in html


def test_the_night_a_15th_of_the_month_period_ends_writes_its_billing_report() -> None:
    from etl.runtime.nightly import nightly_files

    cfg = config(rule(cycle_day=15))
    # 15 December: the period labelled 2026-11 (15 Nov - 15 Dec) ended at midnight.
    assert [p.name for p in nightly_files(cfg, date(2026, 12, 15))][-2:] == [
        "billing-2026-11.csv", "billing-2026-11.html"]
    assert not any(p.name.startswith("billing")
                   for p in nightly_files(cfg, date(2026, 12, 1)))


def test_the_dataframe_api_gives_each_rule_its_period_and_the_credit_applied(
        engine: Engine) -> None:
    import reports

    berlin_history(engine)
    credit = Credit("prepaid", "rules", Decimal("5.00"), "USD", date(2026, 3, 1))
    cfg = config(rule(cycle_day=15), tz="Europe/Berlin", credits=(credit,))
    df = reports.billing(engine, "2026-03", config=cfg, now=LATER, decimal=True)
    [row] = df.to_dict("records")
    assert row["period_start"].isoformat() == "2026-03-15T00:00:00+01:00"
    assert row["period_end"].isoformat() == "2026-04-15T00:00:00+02:00"
    # 6.00 USD, of which the credit pays its 5.00.
    assert (row["amount"], row["credit_applied"], row["amount_due"]) == (
        Decimal("6.00"), Decimal("5.00"), Decimal("1.00"))


def test_rules_of_one_label_with_different_cycle_days_each_read_their_own_period(
        engine: Engine, tmp_path: Path) -> None:
    five_minutely(engine, "2026-11-01T00:00:00", "2026-11-07T00:00:00")
    calendar = rule("0.01", included=0)
    from_15th = replace(rule("0.01", included=0), source="ws-prod", metric="connections",
                        aggregation=Aggregation.PEAK, cycle_day=15)
    result = billing(engine, config(calendar, from_15th), date(2026, 11, 1),
                     now=at("2026-11-07T00:00:00"))
    write_billing(result, ["html"], tmp_path)
    html = (tmp_path / "billing-2026-11.html").read_text()
    calendar_row, later_row = result.table.to_dict("records")
    assert calendar_row["elapsed_pct"] == 20
    # 15 November has not come: no share elapsed, no gap, nothing red.
    assert pd.isna(later_row["elapsed_pct"]) and later_row["samples"] == 0
    assert "ws-prod/connections: period 2026-11-15 to 2026-12-15 has not begun" in html
    assert 'class="low"' not in html
