"""Alerts in the real daemon (SPEC 8, 9): restart after kill -9, replicas, /metrics, no leaks."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import inspect, select, text

from etl.runtime.receiver import WebhookReceiver
from etl.store.engine import make_engine, upgrade
from etl.store.models import AlertDelivery, AlertEvent
from tests.daemon import daemon_env, ok_counts, start_daemon, stop_daemon, wait_for
from tests.factories import WEBHOOK_SECRET_PATH, free_port, unique_sim, write_daemon_config

SMTP_PASSWORD = "smtp-Pa55w0rd-never-logged"
WEBHOOK_TIMEOUT_S = 30


class Mailbox:
    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        from email import message_from_bytes
        from email.policy import default

        self.subjects.append(str(message_from_bytes(envelope.content, policy=default)["Subject"]))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    """A plain SMTP server on loopback that wants the login usage-etl / SMTP_PASSWORD."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = (data.login, data.password) == (b"usage-etl", SMTP_PASSWORD.encode())
        return AuthResult(success=ok, handled=False)

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


def alert_config(cfg: Path, smtp_port: int | None = None) -> None:
    """Add to a test daemon config: a webhook (and an email) notifier and an alert that
    fires on the simulator's connections at once (they never go below 1 % of the limit)."""
    # The receiver answers at once (or refuses): the webhook's deadline only bounds a hang,
    # and a busy machine's slow answer is no failed try.
    extra = ('[[notifiers]]\nname = "ops"\nkind = "webhook"\nurl_env = "TEST_DAEMON_HOOK"\n'
             f"timeout_seconds = {WEBHOOK_TIMEOUT_S}\n")
    notify = '["ops"]'
    if smtp_port is not None:
        extra += ('[[notifiers]]\nname = "finance"\nkind = "email"\nsmtp_host = "127.0.0.1"\n'
                  f"smtp_port = {smtp_port}\nstarttls = false\nusername = \"usage-etl\"\n"
                  'password_env = "TEST_DAEMON_SMTP_PASSWORD"\nfrom = "usage-etl@example.com"\n'
                  'to = ["finance@example.com"]\n')
        notify = '["ops", "finance"]'
    extra += ('[[alerts]]\nname = "busy"\nsource = "ws-prod"\nmetric = "connections"\n'
              f"above_pct = 1\nnotify = {notify}\n")
    cfg.write_text(cfg.read_text() + extra)


def deliveries(url: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(AlertDelivery.notifier, AlertDelivery.attempts,
                       AlertDelivery.delivered_at, AlertDelivery.event_id))]
    except Exception:  # noqa: BLE001 - not created yet
        return []
    finally:
        engine.dispose()


def database_text(url: str) -> str:
    """Every row of every table as text: what a secret must never be part of."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            out = []
            for table in inspect(conn).get_table_names():
                out += [repr(tuple(row)) for row in
                        conn.execute(text(f'SELECT * FROM "{table}"'))]  # noqa: S608
            return "\n".join(out)
    finally:
        engine.dispose()


def scrape(port: int) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], int]:
    base = f"http://127.0.0.1:{port}"
    got = {}
    for family in text_string_to_metric_families(requests.get(base + "/metrics",
                                                               timeout=30).text):
        for s in family.samples:
            got[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return got, requests.get(base + "/healthz", timeout=30).status_code


def test_a_notification_pending_when_the_daemon_is_killed_is_delivered_after_restart(
        tmp_path: Path, empty_db_url: str, smtp: tuple[int, Mailbox]) -> None:
    url = empty_db_url
    smtp_port, mailbox = smtp
    receiver = WebhookReceiver(path=WEBHOOK_SECRET_PATH).start()
    receiver.stop()  # down: connection refused until it comes back
    metrics_port = free_port()
    with unique_sim() as sim:
        cfg = write_daemon_config(tmp_path, url, sim)
        alert_config(cfg, smtp_port)
        env = daemon_env(sim, TEST_DAEMON_HOOK=receiver.url,
                         TEST_DAEMON_SMTP_PASSWORD=SMTP_PASSWORD)
        log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
        proc = start_daemon(cfg, env, log1, ["--metrics-listen", f"127.0.0.1:{metrics_port}"])
        try:
            wait_for("a failed webhook try and a sent email", lambda: any(
                d["notifier"] == "ops" and d["attempts"] >= 1 and d["delivered_at"] is None
                for d in deliveries(url)) and len(mailbox.subjects) == 1)
            got, health = scrape(metrics_port)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
        assert health == 200
        busy = (("alert", "busy"), ("metric", "connections"), ("source", "ws-prod"))
        ws = (("metric", "connections"), ("source", "ws-prod"))
        assert got[("usage_etl_alert_firing", busy)] == 1
        assert got[("usage_etl_sample_limit", ws)] == 100
        assert got[("usage_etl_sample_value", ws)] >= 1
        assert got[("usage_etl_polls_total", (("outcome", "ok"), ("source", "ws-prod")))] >= 1
        assert got[("usage_etl_spool_files", ())] == 0

        receiver.start()  # the same port, up again
        proc = start_daemon(cfg, env, log2)
        try:
            wait_for("the webhook to get the firing", lambda: receiver.received)
            wait_for("a few more polls", lambda: min(ok_counts(url).values()) >= 4)
        finally:
            code = stop_daemon(proc)
            receiver.stop()
        assert code == 0
    assert [b["state"] for b in receiver.received] == ["firing"]
    assert mailbox.subjects == [
        mailbox.subjects[0]] and mailbox.subjects[0].startswith("[usage-etl] FIRING busy: ")
    engine = make_engine(url)
    with engine.connect() as conn:
        firing = list(conn.execute(select(AlertEvent.id).where(
            AlertEvent.transition == "firing")).scalars())
        ops = conn.execute(select(AlertDelivery.attempts, AlertDelivery.delivered_at).where(
            AlertDelivery.notifier == "ops")).one()
    engine.dispose()
    assert receiver.received[0]["id"] == firing[0] and len(firing) == 1
    assert ops.attempts >= 2 and ops.delivered_at is not None
    # No secret in the logs of either run, any row of the database, or the reports written.
    stored = database_text(url)
    reports = "".join(p.read_text(errors="replace") for p in (tmp_path / "reports").glob("*"))
    logs = log1.read_text() + log2.read_text()
    for secret in (receiver.url, WEBHOOK_SECRET_PATH, SMTP_PASSWORD, sim.token, sim.api_key):
        assert secret not in stored and secret not in reports and secret not in logs
    assert "not delivered" in logs or "alert" in logs


def test_two_daemon_replicas_send_one_notification_per_event(
        tmp_path: Path, empty_db_url: str, receiver: WebhookReceiver) -> None:
    url = empty_db_url
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    with unique_sim() as sim:
        procs = []
        for name in ("a", "b"):
            home = tmp_path / name
            home.mkdir()
            cfg = write_daemon_config(home, url, sim)
            alert_config(cfg)
            procs.append(start_daemon(cfg, daemon_env(sim, TEST_DAEMON_HOOK=receiver.url),
                                      home / "daemon.log"))
        try:
            wait_for("the firing", lambda: receiver.received)
            wait_for("three polls of each source after it",
                     lambda: min(ok_counts(url).values()) >= 4)
        finally:
            codes = [stop_daemon(p) for p in procs]
    assert codes == [0, 0]
    assert [b["state"] for b in receiver.received] == ["firing"]
    rows = deliveries(url)
    assert len(rows) == 1 and rows[0]["attempts"] == 1 and rows[0]["delivered_at"] is not None
    assert rows[0]["event_id"] == receiver.received[0]["id"]
    assert os.environ.get("TEST_DAEMON_HOOK") is None  # only the daemons had it


def test_a_receiver_that_never_answers_does_not_delay_polling(tmp_path: Path,
                                                              sqlite_url: str) -> None:
    import threading

    # Accepts connections and never answers: each delivery try hangs for its 60 s timeout.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def swallow() -> None:
        hole.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(hole.accept()[0])
            except OSError:
                continue

    threading.Thread(target=swallow, daemon=True).start()
    url = sqlite_url
    try:
        with unique_sim() as sim:
            cfg = write_daemon_config(tmp_path, url, sim)
            alert_config(cfg)
            cfg.write_text(cfg.read_text().replace(f"timeout_seconds = {WEBHOOK_TIMEOUT_S}",
                                                   "timeout_seconds = 60"))
            hook = f"http://127.0.0.1:{hole.getsockname()[1]}/hook"
            log = tmp_path / "daemon.log"
            proc = start_daemon(cfg, daemon_env(sim, TEST_DAEMON_HOOK=hook), log)
            try:
                wait_for("the delivery to hang", lambda: len(held) >= 1)
                before = ok_counts(url)
                # Two more polls of each source while the delivery is still hanging (5 s
                # intervals; the try began less than 60 s ago, so it is still waiting).
                wait_for("two more polls of each source", lambda: all(
                    ok_counts(url).get(s, 0) >= before.get(s, 0) + 2
                    for s in ("ws-prod", "rules")), timeout=50)
                assert [d["delivered_at"] for d in deliveries(url)] == [None]
            finally:
                code = stop_daemon(proc)
    finally:
        stop.set()
        for conn in held:
            conn.close()
        hole.close()
    assert code == 0
