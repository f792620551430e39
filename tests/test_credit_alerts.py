"""Alerts on prepaid credits (SPEC 11): credit_below and projected_credit_exhausted, delivered
to a real webhook receiver and a real SMTP server; alerts list and /metrics show the balance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from etl.cli import cli
from etl.config import Config, parse_config
from etl.runtime.alerting import alert_rows, check
from etl.runtime.metrics import Metrics
from etl.runtime.receiver import WebhookReceiver
from tests.factories import Mailbox, config_text, free_port, nected, store


@pytest.fixture
def mailbox() -> Iterator[tuple[int, Mailbox]]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


def settings(hook: str, smtp_port: int, credit_amount: str = "30.00",
             granted: str = "2026-11-01") -> dict[str, Any]:
    return {
        "sources": [{"name": "rules", "kind": "nected", "api_key_env": "NE_K",
                     "interval_seconds": 300}],
        "billing": [{"source": "rules", "metric": "invocations", "aggregation": "increase",
                     "included": 0, "unit_price": "0.01", "currency": "USD"}],
        "credits": [{"name": "prepaid", "source": "rules", "amount": credit_amount,
                     "currency": "USD", "granted": granted}],
        "notifiers": [{"name": "ops", "kind": "webhook", "url_env": "TEST_CREDIT_HOOK"},
                      {"name": "finance", "kind": "email", "smtp_host": "127.0.0.1",
                       "smtp_port": smtp_port, "starttls": False,
                       "from": "usage-etl@example.com", "to": ["finance@example.com"]}],
        "alerts": [{"name": "low", "credit": "prepaid", "credit_below": "10.00",
                    "notify": ["ops", "finance"]},
                   {"name": "out", "credit": "prepaid", "projected_credit_exhausted": True,
                    "notify": ["ops"]}],
    }


def make(monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver, smtp_port: int,
         **keys: str) -> Config:
    monkeypatch.setenv("TEST_CREDIT_HOOK", receiver.url)
    return parse_config(settings(receiver.url, smtp_port, **keys))


def at(day: int) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC)


def test_credit_alerts_fire_and_resolve_at_the_webhook_and_by_email(
        engine: Engine, receiver: WebhookReceiver, mailbox: tuple[int, Mailbox],
        monkeypatch: pytest.MonkeyPatch) -> None:
    port, box = mailbox
    cfg = make(monkeypatch, receiver, port)
    store(engine, [nected(at(1), 0), nected(at(11), 1100)])
    # 11 November: 1100 units (11.00 USD) leave 19.00. Projected: 3300 units, 33.00 by the
    # end of November, so 22.00 over the 20 days left, 1.10 a day: the 19.00 are gone in
    # 17.3 days, on 28 November, before the period ends (1 December).
    check(engine, cfg, at(11))
    assert [(b["alert"], b["state"], b["value"], b["credit"], b["currency"])
            for b in receiver.received] == [("out", "firing", 19, "prepaid", "USD")]
    assert receiver.received[0]["text"] == (
        "FIRING out: credit prepaid (rules) balance 19 USD, projected to run out on 2026-11-28")
    # 21 November: 2100 units, 21.00 USD: 9.00 left, below 10.00.
    store(engine, [nected(at(21), 2100)])
    check(engine, cfg, at(21))
    low = receiver.received[-1]
    assert {k: low[k] for k in ("alert", "state", "credit", "source", "metric", "value",
                                "limit", "pct", "threshold", "currency")} == {
        "alert": "low", "state": "firing", "credit": "prepaid", "source": "rules",
        "metric": None, "value": 9, "limit": None, "pct": None, "threshold": 10,
        "currency": "USD"}
    subjects = [str(message["Subject"]) for _, message in box.messages]
    assert subjects and subjects[0].startswith("[usage-etl] FIRING low")
    rows = {r.alert: r for r in alert_rows(engine, cfg, at(21))}
    assert (rows["low"].credit, str(rows["low"].state), rows["low"].value) == (
        "prepaid", "firing", 9)
    # Topped up to 50.00: 29.00 left, and at 31.50 a period it lasts into December.
    topped = make(monkeypatch, receiver, port, credit_amount="50.00")
    check(engine, topped, at(21) + timedelta(minutes=5))
    resolved = sorted(b["alert"] for b in receiver.received if b["state"] == "resolved")
    assert resolved == ["low", "out"]
    subjects = [str(message["Subject"]) for _, message in box.messages]
    assert any(s.startswith("[usage-etl] RESOLVED low") for s in subjects)


def test_alerts_list_and_metrics_show_the_credit_balance(
        engine: Engine, receiver: WebhookReceiver, mailbox: tuple[int, Mailbox],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    now = datetime.now(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    store(engine, [nected(first, 0), nected(now - timedelta(seconds=1), 100)])
    cfg = make(monkeypatch, receiver, mailbox[0], credit_amount="5.00",
               granted=f"{first:%Y-%m-%d}")
    # 100 units at 0.01: 1.00 paid from 5.00.
    text = Metrics(engine, cfg, lambda: 0).exposition().decode()
    assert 'usage_etl_credit_balance{credit="prepaid",currency="USD"} 4.0' in text
    path = tmp_path / "usage-etl.toml"
    raw = settings(receiver.url, mailbox[0], credit_amount="5.00", granted=f"{first:%Y-%m-%d}")
    raw["alerts"] = [{k: v for k, v in a.items() if k != "notify"} for a in raw["alerts"]]
    lines = [f'database_url = "{engine.url.render_as_string(hide_password=False)}"']

    path.write_text("\n".join(lines) + "\n" + config_text(raw))
    result = CliRunner().invoke(cli, ["--config", str(path), "alerts", "list", "--json"])
    assert result.exit_code == 0, result.output
    low = [json.loads(line) for line in result.output.splitlines()
           if json.loads(line)["alert"] == "low"]
    assert [(r["credit"], r["value"], r["state"]) for r in low] == [("prepaid", 4, "ok")]
