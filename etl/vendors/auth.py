"""How an http_json source authenticates and which headers it sends (SPEC 7, SPEC 10)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from etl.errors import SecretError

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Auth:
    """`auth = "basic"` with `username`/`username_env`; `secret_headers` (header -> variable)."""

    basic: bool = False
    username: str | None = None
    username_env: str | None = None
    secret_headers: Mapping[str, str] = field(default_factory=dict)
    label: str = ""  # the source's config label (`sources.NAME`), for messages

    def basic_header(self, secret: str) -> str:
        """The Authorization value: `Basic base64(username:secret)` (SecretError if unset)."""
        user = self.username if self.username is not None else _env(
            self.username_env or "", f"{self.label}.username_env")
        return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")

    def extra_headers(self) -> dict[str, str]:
        """Each secret header with its value read now from its variable (SecretError if unset)."""
        return {name: _env(var, f"{self.label}.secret_headers.{name}")
                for name, var in self.secret_headers.items()}

    def read_all(self) -> list[str]:
        """Every secret this adds, read now (SecretError naming each one unset)."""
        problems: list[str] = []
        found: list[str] = []
        for key, var in self.variables():
            try:
                found.append(_env(var, f"{self.label}.{key}"))
            except SecretError as exc:
                problems.extend(exc.problems)
        if problems:
            raise SecretError(problems)
        return found

    def variables(self) -> list[tuple[str, str]]:
        """(config key, variable) of every secret this adds, for the checks before polling."""
        found = [(f"secret_headers.{h}", v) for h, v in self.secret_headers.items()]
        if self.username_env:
            found.append(("username_env", self.username_env))
        return found


def _env(var: str, key: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        raise SecretError(f"{key}: ${var} is not set")
    if not (value.isascii() and value.isprintable()):
        raise SecretError(f"{key}: ${var} holds characters an HTTP header cannot carry")
    return value


def configure_auth(entry: Mapping[str, Any], label: str, problems: list[str]) -> Auth:
    """The source's Auth, appending a problem naming each bad key."""
    auth = entry.get("auth")
    if auth is not None and auth != "basic":
        problems.append(f"{label}.auth: the only value is 'basic'")
    basic = auth == "basic"
    username, username_env = entry.get("username"), entry.get("username_env")
    if (username is not None or username_env is not None) and not basic:
        key = "username" if username is not None else "username_env"
        problems.append(f"{label}.{key}: only with auth = 'basic'")
    elif basic and (username is None) == (username_env is None):
        problems.append(f"{label}.username: set exactly one of username or username_env "
                        "with auth = 'basic'")
    if username is not None and (not isinstance(username, str) or ":" in username
                                 or not (username.isascii() and username.isprintable())):
        problems.append(f"{label}.username: must be printable ASCII text without ':'")
    if username_env is not None and (not isinstance(username_env, str)
                                     or not ENV_NAME_RE.fullmatch(username_env)):
        problems.append(f"{label}.username_env: must name an environment variable")
    headers = entry.get("secret_headers", {})
    found: dict[str, str] = {}
    if not isinstance(headers, dict):
        problems.append(f"{label}.secret_headers: must be a table of header names to "
                        "environment variable names")
    else:
        for name, var in headers.items():
            if not HEADER_NAME_RE.fullmatch(name):
                problems.append(f"{label}.secret_headers.{name}: not an HTTP header name")
            elif not isinstance(var, str) or not ENV_NAME_RE.fullmatch(var):
                problems.append(f"{label}.secret_headers.{name}: must name an environment "
                                "variable")
            else:
                found[name] = var
    return Auth(basic=basic, username=username if isinstance(username, str) else None,
                username_env=username_env if isinstance(username_env, str) else None,
                secret_headers=found, label=label)


def header_text(entry: Mapping[str, Any], key: str, default: str, label: str, problems: list[str],
          *, empty: bool = False) -> str:
    """The printable ASCII text of `key` (default when absent), else a problem naming it."""
    value = entry.get(key, default)
    if not isinstance(value, str) or (not value and not empty) or not _header_safe(value):
        problems.append(f"{label}.{key}: must be printable ASCII text")
        return default
    return value


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()


def fixed_headers(value: Any, label: str, problems: list[str]) -> dict[str, str]:
    """The `headers` table (header name -> text), a problem naming each bad entry."""
    if not isinstance(value, dict):
        problems.append(f"{label}.headers: must be a table of header names to text")
        return {}
    found: dict[str, str] = {}
    for name, text in value.items():
        if not HEADER_NAME_RE.fullmatch(name):
            problems.append(f"{label}.headers.{name}: not an HTTP header name")
        elif not isinstance(text, str) or not _header_safe(text):
            problems.append(f"{label}.headers.{name}: must be printable ASCII text")
        else:
            found[name] = text
    return found
