"""The FOCUS keys of sources and billing rules (SPEC 12): who bills, units, `focus_match`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from etl.config.fields import what

SOURCE_FOCUS_KEYS = frozenset({"vendor_name", "account_id"})
BILLING_FOCUS_KEYS = frozenset({"unit", "focus_match"})
# A FOCUS column name: FOCUS columns are PascalCase; providers' own start with x_.
COLUMN_RE = re.compile(r"^(?:[A-Z][A-Za-z0-9]*|x_[A-Za-z0-9_]+)$")
MAX_TEXT = 200


def focus_text(entry: Mapping[str, Any], key: str, label: str,
               problems: list[str]) -> str | None:
    """The optional text `entry[key]` (1 to 200 printable characters), else a problem."""
    value = entry.get(key)
    if value is None:
        return None
    if (not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT
            or not value.isprintable()):
        # A string is the right type: say what is wrong with it, not "not a string".
        why = (("an empty string" if not value.strip() else
                f"{len(value)} characters" if len(value) > MAX_TEXT else
                "a string with a control character") if isinstance(value, str)
               else what(value))
        problems.append(f"{label}.{key}: must be a non-empty string of at most {MAX_TEXT} "
                        f"printable characters, not {why}")
        return None
    return value


def focus_match(entry: Mapping[str, Any], label: str,
                problems: list[str]) -> tuple[tuple[str, str], ...]:
    """The rule's `focus_match` table as sorted (column, value) pairs; () when unset.

    `focus_match = { ServiceName = "Functions", SkuId = "fn-invocations" }`. A column that is
    no FOCUS column name, or a value that is not a string, is a problem naming
    `label.focus_match.COLUMN`.
    """
    raw = entry.get("focus_match")
    if raw is None:
        return ()
    key = f"{label}.focus_match"
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{key}: must be a table of FOCUS columns and values, such as "
                        '{ ServiceName = "Functions", SkuId = "fn-invocations" }')
        return ()
    pairs = []
    for column, value in sorted(raw.items()):
        if not COLUMN_RE.fullmatch(column):
            problems.append(f"{key}.{column}: not a FOCUS column name (PascalCase, or x_...)")
        elif not isinstance(value, str) or len(value) > MAX_TEXT:
            problems.append(f"{key}.{column}: must be a string of at most {MAX_TEXT} "
                            f"characters, not {what(value)}")
        else:
            pairs.append((column, value))
    return tuple(pairs)
