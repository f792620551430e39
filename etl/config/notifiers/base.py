"""What every notifier kind shares: secret references, the kind's table entry, the transports."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum
from typing import Any, Protocol

from etl.config.fields import ENV_NAME_RE
from etl.secrets import read_secret

# Keys every notifier takes, whatever its kind.
COMMON_KEYS = frozenset({"name", "kind", "timeout_seconds"})


@dataclass(frozen=True)
class SecretRef:
    """Where a notifier's secret lives: an environment variable or a file, never the config.

    `key` is the config key that names it (`notifiers.ops.url_env`), for messages; the value
    itself is read only when it is used and never kept on this object.
    """

    key: str
    env: str | None = None
    file: str | None = None

    @property
    def origin(self) -> str:
        """Where the secret is read, for messages: `key ($VAR)` or `key (path)`."""
        return f"{self.key} (${self.env})" if self.env else f"{self.key} ({self.file})"

    def read(self) -> str:
        """The secret, read now (SPEC 2: a file as editors write it); SecretError if unset."""
        return read_secret(self.origin, self.env, self.file)


class MailTls(StrEnum):
    """How an email notifier talks TLS to its SMTP server (SPEC 8 `tls`)."""

    IMPLICIT = "implicit"  # SMTPS: TLS from the first byte (port 465)
    STARTTLS = "starttls"  # plain first, then STARTTLS before anything is sent
    NONE = "none"  # no TLS (port 25 inside a trusted network)

    @classmethod
    def default_for(cls, port: int) -> MailTls:
        """Implicit on port 465, none on 25, else STARTTLS."""
        return cls.IMPLICIT if port == 465 else cls.NONE if port == 25 else cls.STARTTLS


@dataclass(frozen=True)
class MailServer:
    """An SMTP server, how to reach it and log in (the password is read only when sending).

    `ca_file`: a PEM file of CA certificates trusted besides the system's (a private CA).
    """

    host: str
    port: int
    tls: MailTls
    username: str | None = None
    password: SecretRef | None = None
    ca_file: str | None = None


class Transports(Protocol):
    """The I/O a notifier sends through, provided by etl.alerts.notifiers (HTTP, SMTP).

    Each raises DeliveryError, starting with `label` and free of secrets, when the
    notification is not delivered.
    """

    def post_json(self, label: str, url: str, body: Mapping[str, Any],
                  timeout_s: float) -> None:
        """POST `body` as JSON to `url`; any 2xx answer is delivered."""

    def send_mail(self, label: str, server: MailServer, message: EmailMessage,
                  timeout_s: float) -> None:
        """Hand `message` to `server`."""


class Notifier(Protocol):
    """One configured notifier of any kind (a frozen dataclass of its kind's module)."""

    @property
    def name(self) -> str:
        """The notifier's `name`, which alerts' `notify` lists."""

    @property
    def kind(self) -> str:
        """Its kind, a key of NOTIFIER_TYPES."""

    @property
    def timeout_seconds(self) -> float:
        """How long one delivery may wait for the receiver (the `timeout_seconds` key)."""

    def secrets(self) -> list[str]:
        """Its secret values, read now, to mask in logs (SecretError if one cannot be read)."""

    def deliver(self, body: Mapping[str, Any], transports: Transports) -> None:
        """Send `body` (the SPEC 8 payload), reading its secrets now.

        Raises DeliveryError when it is not delivered, SecretError when a secret cannot be
        read.
        """


# (the notifier's table, its label "notifiers.NAME", its name, its timeout_seconds, the
# problem list) -> the notifier, or None once its problems are appended.
ParseNotifier = Callable[[Mapping[str, Any], str, str, float, list[str]], Notifier | None]


@dataclass(frozen=True)
class NotifierType:
    """Everything usage-etl knows about one kind of notifier: its keys and how to read them.

    What it sends and where is the notifier's `deliver`; the I/O is the transports'.
    """

    name: str
    # Keys this kind takes beyond COMMON_KEYS (docs/configuration.md lists each).
    keys: frozenset[str]
    parse: ParseNotifier

    @property
    def all_keys(self) -> frozenset[str]:
        """Every key a notifier of this kind may set."""
        return COMMON_KEYS | self.keys


def secret_ref(entry: Mapping[str, Any], label: str, env_key: str, file_key: str,
               problems: list[str], *, required: bool) -> SecretRef | None:
    """Where the secret of `env_key`/`file_key` lives (one of the two), or None."""
    env, file = entry.get(env_key), entry.get(file_key)
    if env is not None and file is not None:
        problems.append(f"{label}.{env_key}: set only one of {env_key} or {file_key}")
        return None
    if env is None and file is None:
        if required:
            problems.append(f"{label}.{env_key}: set one of {env_key} or {file_key} "
                            "(the value is a secret and never goes in the config)")
        return None
    if env is not None:
        if not isinstance(env, str) or not ENV_NAME_RE.fullmatch(env):
            problems.append(
                f"{label}.{env_key}: must name an environment variable (letters, digits, '_')")
            return None
        return SecretRef(f"{label}.{env_key}", env=env)
    if not isinstance(file, str) or not file or not file.isprintable():
        problems.append(f"{label}.{file_key}: must be a file path")
        return None
    return SecretRef(f"{label}.{file_key}", file=file)
