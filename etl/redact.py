"""Keep secrets out of URLs, log lines, stored errors and messages."""

from __future__ import annotations

import html
import html.entities
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
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


# JSON's two-character escapes (RFC 8259 section 7); "\/" is how PHP and others write "/".
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f",
               "\n": "\\n", "\r": "\\r", "\t": "\\t"}


@lru_cache(maxsize=1)
def _entity_names() -> dict[str, tuple[str, ...]]:
    """Character -> its HTML named references ("/" -> &sol;, "&" -> &amp; and &AMP; ...)."""
    names: dict[str, list[str]] = {}
    for name, char in html.entities.html5.items():
        if len(char) == 1:
            # A reference without its ";" (legacy HTML) only where no longer name follows.
            names.setdefault(char, []).append(
                "&" + re.escape(name) if name.endswith(";") else
                "&" + re.escape(name) + "(?![A-Za-z0-9;])")
    return {c: tuple(v) for c, v in names.items()}


def _char_forms(char: str) -> str:
    """A regex for one character of a secret in every way a vendor may write it.

    As is; JSON-escaped (\\/, \\u002F, \\u002f); as an HTML numeric reference (&#x2F;,
    &#X2f;, &#47;, leading zeros or not) or a named one (&sol;); URL-encoded (%2F, %2f; "+"
    for a space).
    """
    code = ord(char)
    hex_ = f"{code:x}"
    any_case_hex = "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in hex_)
    forms = [re.escape(char)]
    # One or more backslashes: an escaped body quoted again (a JSON log line) doubles them.
    if char in _JSON_SHORT:
        forms.append(r"\\+" + re.escape(_JSON_SHORT[char][1:]))
    if code <= 0xFFFF:
        forms.append(r"\\+u" + "0" * (4 - len(hex_)) + any_case_hex)
    forms.append(f"&#[xX]0*{any_case_hex};?")
    forms.append(f"&#0*{code};?")
    forms.extend(_entity_names().get(char, ()))
    encoded = "".join("%" + "".join(f"[{d}{d.upper()}]" if d.isalpha() else d
                                    for d in f"{b:02x}") for b in char.encode("utf-8"))
    forms.append(encoded)
    if char == " ":
        forms.append(r"\+")
    return "(?:" + "|".join(forms) + ")"


@lru_cache(maxsize=4096)
def secret_pattern(secret: str) -> re.Pattern[str]:
    """A regex matching `secret` however a vendor echoes it back.

    Character by character: as is, JSON-escaped (\\/ or \\u002F), as HTML references (&#x2F;, &#47;, &sol;) or
    URL-encoded (%2F), in any mix and either hex case.
    """
    return re.compile("".join(_char_forms(c) for c in secret))


def secret_forms(secret: str) -> tuple[str, ...]:
    """Some literal spellings of `secret` a vendor may echo (as is, JSON, HTML, URL).

    For tests and docs: `redact` masks every spelling `secret_pattern` matches, these and their mixes.
    """
    return tuple(sorted({
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        json.dumps(secret, ensure_ascii=True)[1:-1],
        html.escape(secret),
        "".join(c if c.isalnum() else f"&#x{ord(c):X};" for c in secret),
        "".join(c if c.isalnum() else f"&#{ord(c)};" for c in secret),
        quote(secret, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(secret, safe="")),
        quote_plus(secret, safe=""),
    }, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The `text` with every known secret value and credential-looking URL part masked.

    Secrets are masked in any spelling `secret_pattern` knows.
    """
    # Every encoded spelling needs one of these; without them only the plain one can be there
    # (a cheap check: a daemon with many sources redacts each log line for every secret).
    encoded = "\\" in text or "&" in text or "%" in text
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            if encoded:
                text = secret_pattern(secret).sub(_MASK, text)
            elif secret in text:
                text = text.replace(secret, _MASK)
    return redact_url(text)


class SecretFilter(logging.Filter):
    """Masks secrets in every record a handler writes, whichever library logged it.

    Attached to handlers (not loggers), so it also sees the records of urllib3 (whose
    connection-pool lines hold the request path: a webhook's token), psycopg and the
    others, which log through their own loggers. The known values come from callables added
    with `add_source` and read on the next record (a config is loaded after logging is set
    up); URL passwords and credential-like query parameters are masked in any case.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]
        self._sources: list[Callable[[], Iterable[str]]] = []
        self._lock = threading.Lock()

    def add_source(self, source: Callable[[], Iterable[str]]) -> None:
        """Add the secrets `source()` returns (read once, on the next record)."""
        with self._lock:
            self._sources.append(source)

    def secrets(self) -> list[str]:
        """The known secret values, reading any source added since the last call."""
        with self._lock:
            while self._sources:
                self._secrets += [s for s in self._sources.pop(0)() if s]
            return list(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record's message (its arguments merged in); never drops a record."""
        text = record.getMessage()
        masked = redact(text, self.secrets())
        if masked != text:
            record.msg, record.args = masked, None
        return True


# The one filter of this process: the CLI puts it on its log handlers, the daemon on its own.
LOG_MASK = SecretFilter()
