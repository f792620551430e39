"""Currencies' minor units by ISO 4217, read from the iso4217 package's table once, on first need."""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib.util import find_spec
from pathlib import Path

# Minor unit of a currency ISO 4217 gives none for (XAU, XXX) or does not know (SPEC 5).
DEFAULT_MINOR_UNIT = 2

_ENTRY = re.compile(r"<CcyNtry>(.*?)</CcyNtry>", re.S)
_FIELD = re.compile(r"<(Ccy|CcyNbr|CcyMnrUnts)>\s*([^<]*?)\s*</\1>")


@lru_cache(maxsize=256)
def minor_unit(currency: str) -> int:
    """Decimal places of `currency` by ISO 4217 (JPY 0, USD 2, KWD 3); 2 when it has none."""
    units = _minor_units()
    if units is None:  # the package's table is not where it was: ask the package itself
        return _minor_unit_from_package(currency)
    return units.get(currency.upper(), DEFAULT_MINOR_UNIT)


@cache
def _minor_units() -> dict[str, int] | None:
    """Code -> minor unit of every current currency with one, from iso4217's `table.xml`.

    The same table and the same reading as `iso4217.Currency(code).exponent` (an entry needs a
    code and a number; a code's first entry counts), without importing the package, which
    parses the whole XML into an enum at import: that cost more than the rest of loading a
    config. None when the table cannot be found or read.
    """
    spec = find_spec("iso4217")
    folders = spec.submodule_search_locations if spec is not None else None
    if not folders:
        return None
    try:
        text = (Path(next(iter(folders))) / "table.xml").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    first: dict[str, dict[str, str]] = {}
    for entry in _ENTRY.findall(text):
        fields = dict(_FIELD.findall(entry))
        code = fields.get("Ccy")
        if code and code not in first:
            first[code] = fields
    units = {code: int(fields["CcyMnrUnts"]) for code, fields in first.items()
             if fields.get("CcyNbr") and fields.get("CcyMnrUnts", "").isdigit()}
    return units or None


def _minor_unit_from_package(currency: str) -> int:
    """`minor_unit` by `iso4217.Currency` itself (the fallback, and what the tests compare)."""
    from iso4217 import Currency

    try:
        exponent = Currency(currency.upper()).exponent
    except ValueError:
        return DEFAULT_MINOR_UNIT
    return DEFAULT_MINOR_UNIT if exponent is None else int(exponent)
