"""The `[[credits]]` table (SPEC 11): prepaid credit that pays a source's billing amounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal


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
