"""Keep secrets out of URLs, log lines, stored errors and messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus

_MASK = "***"
# Shorter values are not masked: replacing every "ab" or "123" in a message would garble it
# (numbers, status codes, words) and hide nothing, since so short a credential could be
# guessed anyway. Config validation is where a too-short credential belongs, not here.
MIN_SECRET_LENGTH = 4
# Query parameters whose values are credentials wherever they appear.
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:token|api_key|apikey|access_token|key|password)=)[^&#\s]*")
_WHOLE_URL_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://[^:/@\s]+):\S*@(?=[^@\s]*$)")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+):[^@/\s]+@")


def redact_url(url: str) -> str:
    """`url` with any password and credential-like query values masked."""
    # A whole URL: the last "@" ends the userinfo, as a password may contain "@" or "/".
    url = _WHOLE_URL_USERINFO.sub(rf"\1:{_MASK}@", url)
    url = _USERINFO.sub(rf"\1:{_MASK}@", url)
    return _SECRET_PARAMS.sub(rf"\1{_MASK}", url)


@lru_cache(maxsize=4096)
def secret_forms(secret: str) -> tuple[str, ...]:
    """The ways a vendor may echo `secret` back: as is, JSON-escaped, URL-encoded.

    Longest first, so that a form containing another is masked whole.
    """
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
    }
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret value and credential-looking URL part masked."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            for form in secret_forms(secret):
                if form in text:
                    text = text.replace(form, _MASK)
    return redact_url(text)
