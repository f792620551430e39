"""The `email` notifier kind: one message per event through an SMTP server."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from etl.config.notifiers.base import MailServer, MailTls, NotifierType, Transports, secret_ref

EMAIL_RE = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+$")


@dataclass(frozen=True)
class EmailNotifier:
    """A `kind = "email"` notifier: one message per event through an SMTP server."""

    name: str
    server: MailServer
    sender: str  # the config's `from`
    to: tuple[str, ...]
    timeout_seconds: float = 10.0
    kind: str = "email"

    def secrets(self) -> list[str]:
        """The SMTP password, if it has one."""
        return [self.server.password.read()] if self.server.password is not None else []

    def deliver(self, body: Mapping[str, Any], transports: Transports) -> None:
        """Send the event as one email (the password is read and masked by the transport)."""
        transports.send_mail(f"email {self.name}", self.server, message(self, body),
                             self.timeout_seconds)


def subject(body: Mapping[str, Any]) -> str:
    """`[usage-etl] FIRING name: ...` / `[usage-etl] RESOLVED name: ...` (SPEC 8)."""
    label, _, rest = str(body["text"]).partition(" ")
    return f"[usage-etl] {label} {rest}"


def message(notifier: EmailNotifier, body: Mapping[str, Any]) -> EmailMessage:
    """The email for one event: the text, each fact on its own line, and the JSON."""
    msg = EmailMessage()
    msg["Subject"] = subject(body)
    msg["From"] = notifier.sender
    msg["To"] = ", ".join(notifier.to)
    lines = [str(body["text"]), ""]
    lines += [f"{key}: {'' if value is None else value}"
              for key, value in body.items() if key != "text"]
    lines += ["", json.dumps(body, ensure_ascii=False)]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def parse(entry: Mapping[str, Any], label: str, name: str, timeout: float,
          problems: list[str]) -> EmailNotifier | None:
    """The email notifier of one `[[notifiers]]` table, or None (problems appended)."""
    host = entry.get("smtp_host")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        problems.append(f"{label}.smtp_host: required, a host name")
    port = entry.get("smtp_port", 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        problems.append(f"{label}.smtp_port: must be a whole number from 1 to 65535")
        port = 587
    tls = _tls(entry, label, port, problems)
    ca_file = entry.get("ca_file")
    if isinstance(ca_file, str):
        ca_file = os.path.expanduser(ca_file)  # ~ as in a shell, like every path in the config
    if ca_file is not None and (not isinstance(ca_file, str) or not os.path.isfile(ca_file)):
        problems.append(f"{label}.ca_file: must name a readable PEM file of CA certificates")
        ca_file = None
    username = entry.get("username")
    if username is not None and (not isinstance(username, str) or not username.isprintable()
                                 or not username):
        problems.append(f"{label}.username: must be a non-empty string")
    password = secret_ref(entry, label, "password_env", "password_file", problems,
                          required=False)
    if password is not None and username is None:
        problems.append(f"{label}.username: required with a password")
    sender = entry.get("from")
    if not isinstance(sender, str) or not EMAIL_RE.fullmatch(sender):
        problems.append(f"{label}.from: required, an email address")
    to = entry.get("to")
    if isinstance(to, str):
        to = [to]
    if (not isinstance(to, list) or not to
            or not all(isinstance(t, str) and EMAIL_RE.fullmatch(t) for t in to)):
        problems.append(f"{label}.to: required, a list of email addresses")
    if not isinstance(host, str) or not isinstance(sender, str) or not isinstance(to, list):
        return None
    server = MailServer(host=host, port=port, tls=tls, username=username, password=password,
                        ca_file=ca_file)
    return EmailNotifier(name=name, server=server, sender=sender, to=tuple(to),
                         timeout_seconds=timeout)


def _tls(entry: Mapping[str, Any], label: str, port: int, problems: list[str]) -> MailTls:
    """`tls`, else the older `starttls = true|false`, else the port's default (SPEC 8)."""
    if "tls" in entry and "starttls" in entry:
        problems.append(f"{label}.starttls: set one of tls or starttls")
    if "tls" in entry:
        try:
            return MailTls(entry["tls"])
        except ValueError:
            problems.append(f"{label}.tls: must be one of "
                            f"{', '.join(repr(t.value) for t in MailTls)}")
            return MailTls.default_for(port)
    if "starttls" in entry:
        starttls = entry["starttls"]
        if not isinstance(starttls, bool):
            problems.append(f"{label}.starttls: must be true or false")
            return MailTls.default_for(port)
        if not starttls:
            return MailTls.NONE
        return MailTls.IMPLICIT if port == 465 else MailTls.STARTTLS
    return MailTls.default_for(port)


EMAIL = NotifierType(
    name="email",
    keys=frozenset({"smtp_host", "smtp_port", "tls", "starttls", "ca_file", "username",
                    "password_env", "password_file", "from", "to"}),
    parse=parse,
)
