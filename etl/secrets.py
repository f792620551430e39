"""Read a secret (a credential, a webhook URL, a password) from its environment variable or file."""

from __future__ import annotations

import os
from pathlib import Path

from etl.errors import SecretError


def read_secret(origin: str, env: str | None, file: str | None) -> str:
    """A secret from environment variable `env` or file `file`, stripped (SPEC 2).

    `origin` names the config key for messages. Raises SecretError (exit 2) when the
    variable is unset or empty, the file unreadable, not UTF-8 or empty, or the secret
    cannot be sent (anything but printable ASCII, see `sendable_problem`).
    """
    value = _read(origin, env, file)
    problem = sendable_problem(value)
    if problem:
        raise SecretError(f"{origin}: {problem}")
    return value


def sendable_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value, or None; never quotes the value.

    HTTP clients encode header values as Latin-1 and refuse control characters (and URLs
    and SMTP logins want ASCII too), so only printable ASCII (space to '~') is safe: a
    Notepad-saved key with a no-break space, an accented letter or a second line is refused
    before anything is sent, naming the first such character by code point and position.
    """
    for i, ch in enumerate(value, 1):
        if not " " <= ch <= "~":
            return (f"the secret has character U+{ord(ch):04X} at position {i}: only printable "
                    "ASCII can be sent in an HTTP header")
    return None


def _read(origin: str, env: str | None, file: str | None) -> str:
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise SecretError(f"{origin}: environment variable is unset or empty")
        return value
    assert file is not None
    try:
        # utf-8-sig: a byte-order mark some editors write is not part of the secret.
        value = Path(file).expanduser().read_text(encoding="utf-8-sig").strip()
    except OSError as exc:
        raise SecretError(f"{origin}: cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise SecretError(
            f"{origin}: file is not UTF-8 (byte 0x{exc.object[exc.start]:02x} on line {line})"
        ) from None
    if not value:
        raise SecretError(f"{origin}: file is empty")
    return value
