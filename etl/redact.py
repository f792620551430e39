"""Keep secrets out of URLs, log lines, stored errors and messages."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy.engine import make_url

_MASK = "***"
# Query parameters whose values are credentials wherever they appear.
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:token|api_key|apikey|access_token|key|password)=)[^&#\s]*")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+):[^@/\s]+@")


def redact_url(url: str) -> str:
    """`url` with any password and credential-like query values masked."""
    try:
        parsed = make_url(url)
        if parsed.password:
            url = parsed.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a database URL; fall through to the regexes
        pass
    url = _USERINFO.sub(rf"\1:{_MASK}@", url)
    return _SECRET_PARAMS.sub(rf"\1{_MASK}", url)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret value and credential-looking URL part masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return redact_url(text)
