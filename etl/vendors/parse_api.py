"""The parse function's contract for kinds and plugins: ParseContext, the API version, adapters.

Plugin API version 2 (docs/vendors.md): a kind's `parse(body, context)` reads one vendor body
with a `ParseContext`. Version 1 (``parse(source, body, *, received_at=None,
observed_at=None, payload=None, origin="collect")``) is recognised by its parameters and
adapted; any other signature is refused when the plugin loads, with one line saying what to
write.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from etl.vendors.types import Observation, Origin

PLUGIN_API_VERSION = 2
# The keyword parameters that mark a version 1 parse function.
_V1_KEYWORDS = ("received_at", "observed_at", "payload", "origin")
_V2_HINT = ("write parse(body, context) taking an etl.vendors.ParseContext "
            f"(plugin API {PLUGIN_API_VERSION}, docs/vendors.md)")


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What a parse function is told besides the body (plugin API version 2).

    `source`: the configured source's name. `received_at`: when our client had the response
    (UTC; None for archive lines). `observed_at`: an archive line's observation time,
    which wins over the body's (SPEC 4). `payload`: the
    body's text as received, stored as the snapshot (None: the kind serialises the body).
    `origin`: how the observation reached us. For history sources (SPEC 10): `window`, the
    request range [start, end) in UTC this body answers, and `page`, its page number from 1
    within that range; None for a reading of "now".
    """

    source: str
    received_at: datetime | None = None
    observed_at: datetime | None = None
    payload: str | None = None
    # An Origin's value; import passes plain text, which pickles far faster than a member.
    origin: str = Origin.COLLECT
    window: tuple[datetime, datetime] | None = None
    page: int | None = None


class Parse(Protocol):
    """Read one vendor body into an Observation (raises etl.errors.ParseError naming the field)."""

    def __call__(self, body: Any, context: ParseContext) -> Observation:
        """Parse `body` as `context` says (SPEC 4)."""


def _accepts_v1(params: list[inspect.Parameter]) -> bool:
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = {p.name for p in params if p.kind is not p.POSITIONAL_ONLY}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return len(positional) >= 2 and all(k in names or var_kw for k in _V1_KEYWORDS) and all(
        p.default is not p.empty for p in positional[2:])


def _accepts_v2(params: list[inspect.Parameter]) -> bool:
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_kw = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    return ((len(positional) >= 2 or var_pos) and not required_kw
            and all(p.default is not p.empty for p in positional[2:]))


def plugin_api_version(parse: Callable[..., Any]) -> int:
    """The plugin API version `parse` is written for: 2, or 1 (adapted by `adapt_parse`).

    Raises TypeError with one line saying what to change for any other signature.
    """
    try:
        params = list(inspect.signature(parse).parameters.values())
    except (TypeError, ValueError):
        raise TypeError(f"parse is not a function with a signature; {_V2_HINT}") from None
    if any(p.name in _V1_KEYWORDS for p in params) or (params and params[0].name == "source"):
        if _accepts_v1(params):
            return 1
    elif _accepts_v2(params):
        return 2
    shown = ", ".join(p.name for p in params)
    raise TypeError(f"parse({shown}) is neither plugin API {PLUGIN_API_VERSION} nor 1; "
                    f"{_V2_HINT}")


def adapt_parse(parse: Callable[..., Any]) -> Parse:
    """`parse` as a version 2 function: itself, or a version 1 one called with the context's fields.

    Raises TypeError (one line) when its signature is neither.
    """
    if plugin_api_version(parse) == PLUGIN_API_VERSION:
        return parse  # type: ignore[return-value]

    def adapted(body: Any, context: ParseContext) -> Observation:
        return parse(context.source, body, received_at=context.received_at,  # type: ignore[no-any-return]
                     observed_at=context.observed_at, payload=context.payload,
                     origin=context.origin)

    adapted.__wrapped__ = parse  # type: ignore[attr-defined]
    return adapted
