"""Currencies' minor units by ISO 4217, from the iso4217 package, imported on first need."""

from __future__ import annotations

from functools import lru_cache

# Minor unit of a currency ISO 4217 gives none for (XAU, XXX) or does not know (SPEC 5).
DEFAULT_MINOR_UNIT = 2


@lru_cache(maxsize=256)
def minor_unit(currency: str) -> int:
    """Decimal places of `currency` by ISO 4217 (JPY 0, USD 2, KWD 3); 2 when it has none.

    The code is read in any case. iso4217 is imported here, not at the top: its import parses
    the whole ISO table into an enum (about 30 ms), which only a config with credits, or
    pricing, needs.
    """
    from iso4217 import Currency

    try:
        exponent = Currency(currency.upper()).exponent
    except ValueError:  # a code ISO 4217 does not know
        return DEFAULT_MINOR_UNIT
    return DEFAULT_MINOR_UNIT if exponent is None else int(exponent)
