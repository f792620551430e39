"""The `[[credits]]` table (SPEC 11): prepaid credit that pays a source's billing amounts."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_DOWN, Decimal
from typing import Any

from etl.config.billing import CURRENCY_RE, BillingRule
from etl.config.currencies import minor_unit
from etl.config.fields import TopLevel, bounded_decimal, local_date, named_entry


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


CREDIT_KEYS = frozenset({"name", "source", "amount", "currency", "granted", "expires"})


def parse_credits(raw: list[Any], sources: Collection[str], top: TopLevel, *,
                  billing: Sequence[BillingRule], unsure: Collection[str] = ()) -> list[Credit]:
    """The valid `[[credits]]` entries (SPEC 11); every problem names its key.

    Refused: an unknown key, a name that is not [a-z0-9_-]+ or repeats, a source that is not
    configured, an amount that is not a positive decimal or has more decimals than its
    currency's minor unit (ISO 4217), a bad currency code or date, `expires` not after
    `granted`, and a credit that can never pay (`never_pays` against the `billing` rules).
    A credit of a source in `unsure` (one of its rules was refused for its own keys) is not
    checked against the rules: which periods they price is not known.
    """
    credits: list[Credit] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        problems: list[str] = []
        named = named_entry(entry, "credits", i, seen, problems)
        if named is None:
            top.extend(problems)
            continue
        label, name = named
        for key in sorted(set(entry) - CREDIT_KEYS):
            problems.append(f"{label}.{key}: unknown key")
        source = entry.get("source")
        if not isinstance(source, str) or source not in sources:
            problems.append(f"{label}.source: required, the name of a [[sources]] entry"
                            + (f" ({source!r} is not one)" if isinstance(source, str) else ""))
        currency = entry.get("currency", "USD")
        if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency):
            problems.append(f"{label}.currency: must be a three-letter code such as 'USD'")
            currency = None
        amount = bounded_decimal(entry.get("amount"), f"{label}.amount", problems,
                                 required=True, positive=True)
        if amount is not None and currency is not None:
            places = minor_unit(currency)
            if amount != amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN):
                problems.append(f"{label}.amount: {entry.get('amount')} has more decimals than "
                                f"{currency}'s minor unit ({places})")
            amount = amount.quantize(Decimal(1).scaleb(-places))
        granted = (local_date(entry["granted"], f"{label}.granted", problems)
                   if "granted" in entry else None)
        if "granted" not in entry:
            problems.append(f"{label}.granted: required, the date from which it pays periods "
                            "(such as 2026-11-01)")
        expires = (local_date(entry["expires"], f"{label}.expires", problems)
                   if "expires" in entry else None)
        if granted is not None and expires is not None and expires <= granted:
            problems.append(f"{label}.expires: {expires} is not after granted {granted}")
        if problems:
            top.extend(problems)
            continue
        assert isinstance(source, str) and amount is not None and granted is not None
        assert currency is not None
        credit = Credit(name, source, amount, currency, granted, expires)
        idle = None if source in unsure else never_pays(credit, billing)
        if idle is not None:
            top.extend([f"{label}.{idle[0]}: {idle[1]}"])
            continue
        credits.append(credit)
    return credits


def never_pays(credit: Credit, billing: Sequence[BillingRule]) -> tuple[str, str] | None:
    """(key, what is wrong) when `credit` can never pay anything, else None (SPEC 11).

    A credit pays a period of a rule of its source priced in its currency that starts on or
    after `granted` and before `expires`, and a rule prices the periods starting (on its
    `cycle_day`) on or after its `valid_from` and before its `valid_until`. With no such
    period the credit loads but never pays: the entry is wrong, and the key named is what to
    fix (`source`: it has no rule; `currency`: no rule uses it; else the date that leaves no
    period).
    """
    own = [r for r in billing if r.source == credit.source]
    if not own:
        return "source", (f"no [[billing]] rule prices source {credit.source!r}, so the "
                          "credit would never pay anything")
    rules = [r for r in own if r.currency == credit.currency]
    if not rules:
        used = ", ".join(sorted({r.currency for r in own}))
        return "currency", (f"{credit.currency}: no billing rule of source {credit.source!r} "
                            f"is priced in {credit.currency} (its rules use {used})")
    if any(r.first_period(credit.granted, credit.expires) is not None for r in rules):
        return None
    priced = "; ".join(_periods_text(r) for r in rules)
    if credit.expires is not None and any(r.first_period(credit.granted, None) is not None
                                          for r in rules):
        return "expires", (f"{credit.expires}: no period of source {credit.source!r} priced in "
                           f"{credit.currency} starts from granted {credit.granted} to before "
                           f"it, so the credit would never pay anything (its "
                           f"{credit.currency} rules price {priced})")
    return "granted", (f"{credit.granted}: no period of source {credit.source!r} priced in "
                       f"{credit.currency} starts on or after it"
                       + (f" and before expires {credit.expires}" if credit.expires else "")
                       + f", so the credit would never pay anything (its {credit.currency} "
                       f"rules price {priced})")


def _periods_text(rule: BillingRule) -> str:
    """Which periods `rule` prices, for messages: `periods starting on day 15 until 2026-11-15`."""
    text = f"periods starting on day {rule.cycle_day}"
    if rule.valid_from is not None:
        text += f" from {rule.valid_from}"
    if rule.valid_until is not None:
        text += f" until {rule.valid_until}"
    return text
