"""The SMTP transport of notifiers: hand one message to a server (STARTTLS, optional login)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from etl.config import MailServer
from etl.errors import DeliveryError
from etl.redact import redact


def send_mail(label: str, server: MailServer, message: EmailMessage, timeout_s: float) -> None:
    """Send `message` by SMTP; raise DeliveryError (`label`: ..., password masked) if refused.

    STARTTLS verifies the server's certificate against the system's trust store
    (``SSL_CERT_FILE`` adds one); the login happens only over TLS or when asked for plainly.
    SecretError when the password cannot be read.
    """
    password = server.password.read() if server.password is not None else None
    try:
        with smtplib.SMTP(server.host, server.port, timeout=timeout_s) as smtp:
            smtp.ehlo()
            if server.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if server.username is not None:
                smtp.login(server.username, password or "")
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        detail = _detail(exc)
        raise DeliveryError(
            f"{label}: {redact(detail, [password] if password else [])}"
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
