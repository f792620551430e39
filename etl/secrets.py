"""Read a secret (a credential, a webhook URL, a password) from its environment variable or file."""

from __future__ import annotations

import os
from pathlib import Path

from etl.errors import SecretError


def read_secret(origin: str, env: str | None, file: str | None) -> str:
    """A secret from environment variable `env` or file `file`, stripped (SPEC 2).

    `origin` names the config key for messages. Raises SecretError (exit 2) when the
    variable is unset or empty, or the file unreadable, not UTF-8 or empty.
    """
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise SecretError(f"{origin}: environment variable is unset or empty")
        return value
    assert file is not None
    try:
        # utf-8-sig: a byte-order mark some editors write is not part of the secret.
        value = Path(file).read_text(encoding="utf-8-sig").strip()
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
