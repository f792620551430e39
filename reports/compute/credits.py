"""Prepaid credits (SPEC 11): each period's amount paid from its source's credits, in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from etl.config import Credit

# A run-out further away than this is no run-out a report shows (ten years of microseconds).
HORIZON_US = 10 * 366 * 86_400 * 1_000_000


@dataclass(frozen=True)
class PeriodCharge:
    """One rule's amount for one of its periods: what credits may pay.

    `amount` is the rule's amount for the period (pricing, flat fee and minimum, rounded to
    the currency's minor unit); `order` the rule's place among the `[[billing]]` rules, which
    orders rules of one source whose periods start the same day.
    """

    source: str
    metric: str
    currency: str
    label: date
    period_start: date
    order: int
    amount: Decimal


@dataclass(frozen=True)
class CreditDraw:
    """What credits paid of one PeriodCharge.

    `by_credit`: (credit name, amount taken) for each credit that applies to the period, in
    drawdown order, 0 where it had nothing left; `balances`: each of those credits' balance
    after this charge. `applied` is their sum, never more than the charge's amount.
    """

    applied: Decimal
    by_credit: tuple[tuple[str, Decimal], ...]
    balances: tuple[tuple[str, Decimal], ...]


def drawdown_order(credits: Sequence[Credit]) -> list[Credit]:
    """Credits in the order they pay (SPEC 11).

    Earliest `expires` first (no expiry last), then earliest `granted`, then name.
    """
    return sorted(credits, key=lambda c: (c.expires is None, c.expires or date.max, c.granted,
                                          c.name))


def charge_order(charges: Sequence[PeriodCharge]) -> list[int]:
    """Indices of `charges` in the order they are paid: by period start, then config order."""
    return sorted(range(len(charges)), key=lambda i: (charges[i].period_start, charges[i].order))


def apply_credits(charges: Sequence[PeriodCharge], credits: Sequence[Credit]
                  ) -> list[CreditDraw]:
    """Pay every charge from the credits that apply to it; one CreditDraw per charge, in input order.

    The one place credit is computed (SPEC 11): charges are paid in the order their periods
    start (config order within a start day), each from its source's credits in the same
    currency that apply to its period (granted on or before its first day, expiring after
    it), in drawdown_order; a credit's balance is its amount minus all it paid before. Give
    every charge from the earliest `granted` on: a balance is only right with all of them.
    Exact: amounts are already in the currency's minor unit, so no rounding happens here.
    """
    ordered = drawdown_order(credits)
    balances = {c.name: c.amount for c in ordered}
    draws: list[CreditDraw | None] = [None] * len(charges)
    for i in charge_order(charges):
        ch = charges[i]
        left = max(ch.amount, Decimal(0))
        taken: list[tuple[str, Decimal]] = []
        after: list[tuple[str, Decimal]] = []
        for credit in ordered:
            if not credit.applies_to(ch.source, ch.currency, ch.period_start):
                continue
            take = min(left, balances[credit.name])
            balances[credit.name] -= take
            left -= take
            taken.append((credit.name, take))
            after.append((credit.name, balances[credit.name]))
        draws[i] = CreditDraw(sum((t for _, t in taken), Decimal(0)), tuple(taken), tuple(after))
    return [d if d is not None else CreditDraw(Decimal(0), (), ()) for d in draws]


def amount_due(amount: Decimal, applied: Decimal) -> Decimal:
    """`amount` − `credit_applied`, never below 0 (SPEC 11)."""
    return max(amount - applied, Decimal(0))


@dataclass(frozen=True)
class SpendProjection:
    """How a rule in progress is projected to spend from `now_us` on (linear run rate).

    Until `end_us` (its period's end) it spends `remaining` (projected amount − amount so
    far) evenly; after that `per_period` (the projected amount) every `length_us`.
    """

    now_us: int
    end_us: int
    remaining: Decimal
    per_period: Decimal
    length_us: int

    def spent_by(self, t_us: int) -> float:
        """Money spent from now_us up to t_us by this projection."""
        if t_us <= self.now_us:
            return 0.0
        in_period = min(t_us, self.end_us) - self.now_us
        span = max(self.end_us - self.now_us, 1)
        spent = float(self.remaining) * in_period / span
        if t_us > self.end_us and self.length_us > 0:
            spent += float(self.per_period) * (t_us - self.end_us) / self.length_us
        return spent


def run_out_us(balance_ahead: Decimal, spending: Sequence[SpendProjection],
               now_us: int) -> int | None:
    """The instant the projected spending uses up `balance_ahead`, or None within HORIZON_US.

    `balance_ahead` is the credit's balance plus those of every credit paying before it
    (drawdown_order): it only pays once they are used up. Found by bisection on whole
    microseconds, so it is exact to the day a report prints.
    """
    target = float(balance_ahead)
    if target <= 0:
        return now_us
    hi = now_us + HORIZON_US
    if sum(s.spent_by(hi) for s in spending) < target:
        return None
    lo = now_us
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sum(s.spent_by(mid) for s in spending) >= target:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class CreditStatus:
    """A credit as a report shows it (SPEC 11).

    `balance`: what is left after every charge given to credit_statuses (for periods in
    progress: after their period-to-date amounts); `run_out`: the local date the projected
    spending uses it up (None: not within the horizon, or only after it expires);
    `run_out_us` the instant.
    """

    credit: Credit
    balance: Decimal
    run_out: date | None
    run_out_us: int | None


def credit_statuses(credits: Sequence[Credit], charges: Sequence[PeriodCharge],
                    draws: Sequence[CreditDraw],
                    spending: Sequence[tuple[PeriodCharge, SpendProjection]], now_us: int,
                    to_local_date: Callable[[int], date]) -> list[CreditStatus]:
    """Balances after `charges` (paid as `draws`) and projected run-out dates.

    `spending`: the charges of periods in progress with their projections. A credit only
    starts paying once those before it in drawdown_order are used up, so its run-out is when
    the projected spending of its source and currency uses up its balance and theirs.
    """
    taken: dict[str, Decimal] = {}
    for draw in draws:
        for name, amount in draw.by_credit:
            taken[name] = taken.get(name, Decimal(0)) + amount
    balances = {c.name: c.amount - taken.get(c.name, Decimal(0)) for c in credits}
    out = []
    ordered = drawdown_order(credits)
    for credit in ordered:
        ahead = sum((balances[c.name] for c in ordered[:ordered.index(credit) + 1]
                     if c.source == credit.source and c.currency == credit.currency
                     and (c.expires is None or c.expires > to_local_date(now_us))),
                    Decimal(0))
        mine = [p for ch, p in spending
                if credit.applies_to(ch.source, ch.currency, ch.period_start)]
        at = run_out_us(ahead, mine, now_us) if mine and balances[credit.name] > 0 else None
        if balances[credit.name] <= 0:
            at = now_us
        day = to_local_date(at) if at is not None else None
        if day is not None and credit.expires is not None and day >= credit.expires:
            day = at = None
        out.append(CreditStatus(credit, balances[credit.name], day, at))
    return out
