"""Email by implicit TLS (SMTPS, SPEC 8 `tls`): a real aiosmtpd server on loopback that talks
TLS from the first byte, with a certificate from a private CA made in the test and trusted
through the notifier's `ca_file`."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from etl.config import MailTls, parse_config
from etl.runtime.alerting import check
from etl.store.models import AlertDelivery
from tests.factories import (
    REPO,
    Mailbox,
    free_port,
    private_ca_certificate,
    store,
    wiresocket,
    write_config,
)

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
PASSWORD = "smtps-Pa55-w0rd"


@pytest.fixture
def smtps(tmp_path: Path) -> Iterator[tuple[int, Mailbox, Path]]:
    """(port, mailbox, CA file): an implicit-TLS SMTP server on loopback accepting the login
    usage-etl / PASSWORD, its certificate signed by a CA only the CA file holds."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    ca, cert, key = private_ca_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        return AuthResult(success=(data.login, data.password) == (b"usage-etl",
                                                                 PASSWORD.encode()),
                          handled=False)

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, ssl_context=context,
                            # aiosmtpd counts only STARTTLS as TLS: over SMTPS it offers AUTH
                            # only when not asked to require TLS for it.
                            authenticator=authenticator, auth_require_tls=False)
    controller.start()
    try:
        yield port, box, ca
    finally:
        controller.stop()


def settings(port: int, **notifier: Any) -> dict[str, Any]:
    # The loopback server answers at once: the 30 s deadline only bounds a hang, and a busy
    # machine's slow TLS handshake is no failed try.
    return {
        "sources": [{"name": "ws-prod", "kind": "wiresocket", "region": "eu",
                     "token_env": "UNSET_TLS_TOKEN"}],
        "notifiers": [{"name": "finance", "kind": "email", "smtp_host": "127.0.0.1",
                       "smtp_port": port, "username": "usage-etl",
                       "password_env": "TEST_SMTPS_PASSWORD", "from": "usage-etl@example.com",
                       "to": ["finance@example.com"], "timeout_seconds": 30, **notifier}],
        "alerts": [{"name": "ws-high", "source": "ws-prod", "metric": "connections",
                    "above_pct": 90, "notify": ["finance"]}],
    }


def test_an_email_goes_out_by_implicit_tls_trusting_a_private_ca(
    engine: Engine, smtps: tuple[int, Mailbox, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, box, ca = smtps
    monkeypatch.setenv("TEST_SMTPS_PASSWORD", PASSWORD)
    config = parse_config(settings(port, tls="implicit", ca_file=str(ca)))
    store(engine, [wiresocket(T0, 93)])
    result = check(engine, config, T0)
    assert (result.delivery.delivered, result.delivery.failed) == (1, [])
    [(envelope, message)] = box.messages
    assert envelope.rcpt_tos == ["finance@example.com"]
    assert message["Subject"] == ("[usage-etl] FIRING ws-high: ws-prod connections at 93 % of "
                                  "limit 100 (alert at 90 %)")


def test_without_the_ca_file_the_server_is_not_trusted_and_the_try_is_recorded(
    engine: Engine, smtps: tuple[int, Mailbox, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, box, _ = smtps
    monkeypatch.setenv("TEST_SMTPS_PASSWORD", PASSWORD)
    config = parse_config(settings(port, tls="implicit"))
    store(engine, [wiresocket(T0, 93)])
    result = check(engine, config, T0)
    assert result.delivery.failed == [
        "ws-high firing to finance: email finance: TLS: CERTIFICATE_VERIFY_FAILED"]
    assert box.messages == []
    with engine.connect() as conn:
        row = conn.execute(select(AlertDelivery.attempts, AlertDelivery.last_error)).one()
    assert tuple(row) == (1, "email finance: TLS: CERTIFICATE_VERIFY_FAILED")


def test_alerts_test_sends_by_implicit_tls_from_a_config_file(
    tmp_path: Path, smtps: tuple[int, Mailbox, Path],
) -> None:
    port, box, ca = smtps
    both = settings(port, tls="implicit", ca_file=str(ca))
    [notifier], [alert] = both.pop("notifiers"), both.pop("alerts")
    to, notify = notifier.pop("to"), alert.pop("notify")
    cfg = write_config(tmp_path / "c.toml", {
        "database_url": f"sqlite:///{tmp_path / 'u.db'}", **both,
        "notifiers": [notifier], "alerts": [alert]})
    # Lists inside tables are written by hand (config_text writes plain values only).
    cfg.write_text(cfg.read_text().replace(
        'name = "finance"', f'name = "finance"\nto = {to!r}'.replace("'", '"')).replace(
        'name = "ws-high"', f'name = "ws-high"\nnotify = {notify!r}'.replace("'", '"')))
    proc = subprocess.run([sys.executable, "-m", "etl", "--config", str(cfg), "alerts", "test",
                           "ws-high"], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=dict(os.environ, TEST_SMTPS_PASSWORD=PASSWORD), check=False)
    assert (proc.returncode, proc.stdout) == (0, "sent to finance\n"), proc.stderr
    assert len(box.messages) == 1


@pytest.mark.parametrize(("port", "keys", "tls"), [
    (465, {}, MailTls.IMPLICIT), (587, {}, MailTls.STARTTLS), (25, {}, MailTls.NONE),
    (2525, {"tls": "implicit"}, MailTls.IMPLICIT), (465, {"tls": "starttls"}, MailTls.STARTTLS),
    (587, {"starttls": False}, MailTls.NONE), (465, {"starttls": True}, MailTls.IMPLICIT),
])
def test_the_tls_mode_follows_the_port_unless_set(port: int, keys: dict[str, Any],
                                                   tls: MailTls) -> None:
    [notifier] = parse_config(settings(port, **keys)).notifiers
    assert notifier.server.tls is tls  # type: ignore[union-attr]


def test_an_unknown_tls_mode_and_a_missing_ca_file_are_bad_config(tmp_path: Path) -> None:
    from etl.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config(settings(465, tls="ssl", ca_file=str(tmp_path / "none.pem")))
    assert caught.value.problems == [
        "notifiers.finance.tls: must be one of 'implicit', 'starttls', 'none'",
        "notifiers.finance.ca_file: must name a readable PEM file of CA certificates",
    ]
