"""The email notifier: one message per event through SMTP (STARTTLS, optional login)."""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from etl.config import EmailNotifier
from etl.errors import DeliveryError
from etl.redact import redact


def subject(body: dict[str, Any]) -> str:
    """`[usage-etl] FIRING name: ...` / `[usage-etl] RESOLVED name: ...` (SPEC 8)."""
    label, _, rest = str(body["text"]).partition(" ")
    return f"[usage-etl] {label} {rest}"


def message(notifier: EmailNotifier, body: dict[str, Any]) -> EmailMessage:
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


def send_email(notifier: EmailNotifier, body: dict[str, Any]) -> None:
    """Send the event by SMTP; raise DeliveryError (password masked) if it is not accepted.

    STARTTLS verifies the server's certificate against the system's trust store
    (``SSL_CERT_FILE`` adds one); the login happens only over TLS or when asked for plainly.
    """
    password = notifier.password.read() if notifier.password is not None else None
    try:
        with smtplib.SMTP(notifier.smtp_host, notifier.smtp_port,
                          timeout=notifier.timeout_seconds) as smtp:
            smtp.ehlo()
            if notifier.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if notifier.username is not None:
                smtp.login(notifier.username, password or "")
            smtp.send_message(message(notifier, body))
    except (smtplib.SMTPException, OSError) as exc:
        detail = _detail(exc)
        raise DeliveryError(
            f"email {notifier.name}: {redact(detail, [password] if password else [])}"
        ) from None


def _detail(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(
            exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"SMTP {exc.smtp_code} {text.splitlines()[0] if text else ''}".strip()
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "every recipient was refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"
    if isinstance(exc, ConnectionRefusedError):
        return "cannot connect (connection refused)"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__
