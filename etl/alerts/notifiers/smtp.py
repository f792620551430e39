"""The SMTP transport of notifiers: hand one message to a server (SMTPS or STARTTLS, login)."""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import assert_never

from etl.config import MailServer, MailTls
from etl.errors import DeliveryError
from etl.redact import redact
from etl.watchdog import Watchdog, watch_socket


def send_mail(label: str, server: MailServer, message: EmailMessage, timeout_s: float) -> None:
    """Send `message` by SMTP; raise DeliveryError (`label`: ..., password masked) if refused.

    Implicit TLS (SMTPS, port 465) or STARTTLS verify the server's certificate against the
    system's trust store (``SSL_CERT_FILE`` adds one) and the notifier's `ca_file`; the login
    happens only over TLS or when asked for plainly (`tls = "none"`).
    SecretError when the password cannot be read.
    """
    password = server.password.read() if server.password is not None else None
    try:
        with Watchdog(timeout_s) as dog, _connect(server, timeout_s) as smtp:
            smtp.ehlo()
            match server.tls:
                case MailTls.STARTTLS:
                    smtp.starttls(context=_tls_context(server))
                    smtp.ehlo()
                case MailTls.IMPLICIT | MailTls.NONE:
                    pass
                case _:
                    assert_never(server.tls)
            if server.username is not None:
                smtp.login(server.username, password or "")
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        # The whole exchange ends within timeout_s (etl.watchdog), like a webhook's POST.
        detail = "no answer in time" if dog.cut.is_set() else _detail(exc)
        raise DeliveryError(
            f"{label}: {redact(detail, [password] if password else [])}"
        ) from None


class _WatchedSMTP(smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        watch_socket(sock)  # before the greeting is read: a trickled greeting is cut too
        return sock  # type: ignore[no-any-return]


class _WatchedSMTPSSL(smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((host, port), timeout, self.source_address)
        watch_socket(raw)  # before the TLS handshake
        return self.context.wrap_socket(raw, server_hostname=self._host)  # type: ignore[attr-defined,no-any-return]


def _connect(server: MailServer, timeout_s: float) -> smtplib.SMTP:
    """A connected SMTP client: TLS from the first byte with `tls = "implicit"` (SMTPS)."""
    if server.tls is MailTls.IMPLICIT:
        return _WatchedSMTPSSL(server.host, server.port, timeout=timeout_s,
                               context=_tls_context(server))
    return _WatchedSMTP(server.host, server.port, timeout=timeout_s)


def _tls_context(server: MailServer) -> ssl.SSLContext:
    """The system's trust store (``SSL_CERT_FILE`` adds one), plus `ca_file`'s CAs."""
    context = ssl.create_default_context()
    if server.ca_file is not None:
        context.load_verify_locations(cafile=server.ca_file)
    return context


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
