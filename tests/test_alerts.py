"""Alerts (SPEC 8): conditions, states, events once, delivery to real receivers on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from etl.alerts.evaluate import Reading, SeriesState, Transition, condition_holds, step
from etl.alerts.notifiers import notifier_secrets
from etl.alerts.states import AlertState, SeriesRef
from etl.config import NOTIFIER_TYPES, AlertRule, Condition, Config, parse_config
from etl.errors import ConfigError
from etl.runtime.alerting import check
from etl.runtime.receiver import WebhookReceiver
from etl.store.models import AlertDelivery, AlertEvent
from etl.store.writer import record_attempt, store_observations
from etl.vendors.types import Observation, Origin
from tests import factories
from tests.daemon import PATIENCE
from tests.factories import WEBHOOK_SECRET_PATH, Mailbox, wiresocket
from tests.notifier_chat import CHAT

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def ws(when: datetime, conns: float, limit: float | None = 100) -> Observation:
    return wiresocket(when, conns, limit=limit, origin=Origin.IMPORT)


def nected(when: datetime, value: float) -> Observation:
    return factories.nected(when, value, origin=Origin.IMPORT)


def put(engine: Engine, *observations: Observation) -> None:
    with engine.begin() as conn:
        store_observations(conn, observations)


def config(monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver | None,
           *alerts: dict[str, Any], billing: list[dict[str, Any]] | None = None) -> Config:
    if receiver is not None:
        monkeypatch.setenv("TEST_OPS_HOOK", receiver.url)
    return parse_config({
        "sources": [
            {"name": "ws-prod", "kind": "wiresocket", "region": "eu", "token_env": "WS_T",
             "interval_seconds": 60},
            {"name": "rules", "kind": "nected", "api_key_env": "NE_K",
             "interval_seconds": 300},
        ],
        "billing": billing or [],
        "notifiers": [{"name": "ops", "kind": "webhook", "url_env": "TEST_OPS_HOOK"}],
        "alerts": list(alerts),
    })


HIGH = {"name": "ws-connections-high", "source": "ws-prod", "metric": "connections",
        "above_pct": 90, "clear_pct": 85, "notify": ["ops"]}


# --- pure: conditions and states ---------------------------------------------------------

RULE = AlertRule("high", Condition.ABOVE_PCT, "connections", "ws-prod",
                 threshold=Decimal(90), clear=Decimal(85), for_seconds=300)


def _pct(p: float) -> Reading:
    return Reading(SeriesRef("ws-prod", "connections"), value=p, limit=100, pct=p)


def test_above_pct_holds_from_the_threshold_and_while_firing_down_to_clear_pct() -> None:
    assert condition_holds(RULE, _pct(90), firing=False)
    assert not condition_holds(RULE, _pct(89.99), firing=False)
    assert condition_holds(RULE, _pct(85), firing=True)  # hysteresis: still firing at 85
    assert not condition_holds(RULE, _pct(84.9), firing=True)
    no_limit = Reading(SeriesRef("ws-prod", "connections"), value=500, limit=None, pct=None)
    assert not condition_holds(RULE, no_limit, firing=False)


def test_for_seconds_keeps_a_series_pending_then_fires_with_since_at_the_start() -> None:
    s0 = SeriesState()
    s1, t1 = step(RULE, s0, True, T0)
    assert (s1.state, t1, s1.since) == (AlertState.PENDING, Transition.PENDING, T0)
    s2, t2 = step(RULE, s1, True, T0 + timedelta(seconds=299))
    assert (s2, t2) == (s1, None)
    s3, t3 = step(RULE, s2, True, T0 + timedelta(seconds=300))
    assert (s3.state, t3, s3.since) == (AlertState.FIRING, Transition.FIRING, T0)


def test_a_series_that_drops_out_while_pending_is_cleared_without_a_notification() -> None:
    s1, _ = step(RULE, SeriesState(), True, T0)
    s2, t2 = step(RULE, s1, False, T0 + timedelta(seconds=60))
    assert s2.state is AlertState.OK and t2 is Transition.CLEARED
    assert not Transition.CLEARED.notified and not Transition.PENDING.notified


def test_repeat_seconds_sends_again_while_firing_and_resolve_ends_it() -> None:
    rule = AlertRule("high", Condition.ABOVE, "connections", threshold=Decimal(10),
                     repeat_seconds=3600)
    s1, t1 = step(rule, SeriesState(), True, T0)
    assert t1 is Transition.FIRING
    assert step(rule, s1, True, T0 + timedelta(seconds=3599))[1] is None
    s2, t2 = step(rule, s1, True, T0 + timedelta(seconds=3600))
    assert t2 is Transition.REPEAT and s2.notified_at == T0 + timedelta(seconds=3600)
    s3, t3 = step(rule, s2, False, T0 + timedelta(seconds=3700))
    assert (s3.state, t3) == (AlertState.OK, Transition.RESOLVED)


# --- config ------------------------------------------------------------------------------

@pytest.mark.parametrize(("alert", "expected"), [
    ({"name": "a", "metric": "connections", "above_pct": 90, "notify": ["nobody"]},
     "alerts.a.notify: unknown notifier 'nobody'"),
    ({"name": "a", "source": "nope", "metric": "connections", "above_pct": 90},
     "alerts.a.source: 'nope' is not a configured source"),
    ({"name": "a", "source": "ws-prod", "metric": "invocations", "above_pct": 90},
     "alerts.a.metric: 'invocations' is not a metric of source 'ws-prod'"),
    ({"name": "a", "metric": "connections"}, "alerts.a: no condition"),
    ({"name": "a", "metric": "connections", "above_pct": 90, "above": 5},
     "alerts.a.above: only one condition per alert"),
    ({"name": "a", "metric": "invocations", "above_pct": 90},
     "alerts.a.above_pct: rules invocations has no plan limit"),
    ({"name": "a", "metric": "invocations", "projected_over_included": True},
     "alerts.a.projected_over_included: no [[billing]] rule for rules/invocations"),
    ({"name": "a", "metric": "connections", "above": 5, "clear_pct": 3},
     "alerts.a.clear_pct: only goes with above_pct"),
    ({"name": "a", "metric": "connections", "above_pct": 90, "clear_pct": 95},
     "alerts.a.clear_pct: must not be above above_pct"),
    ({"name": "a", "stale": True, "metric": "connections"},
     "alerts.a.metric: a stale alert is per source"),
    ({"name": "a", "metric": "connections", "above_pct": 90, "colour": "red"},
     "alerts.a.colour: unknown key"),
])
def test_bad_alert_config_is_refused_naming_the_key(
        monkeypatch: pytest.MonkeyPatch, alert: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(monkeypatch, None, alert)
    assert len(err.value.problems) == 1, err.value.problems
    assert err.value.problems[0].startswith(expected), err.value.problems


@pytest.mark.parametrize(("notifier", "expected"), [
    ({"name": "n", "kind": "pager"}, "notifiers.n.kind: must be 'webhook' or 'email'"),
    ({"name": "n", "kind": "webhook"}, "notifiers.n.url_env: set one of url_env or url_file"),
    ({"name": "n", "kind": "webhook", "url": "https://x/y"}, "notifiers.n.url: unknown key"),
    ({"name": "n", "kind": "email", "smtp_host": "h", "from": "a@b", "to": ["c@d"],
      "password": "hunter22"}, "notifiers.n.password: unknown key"),
    ({"name": "n", "kind": "email", "smtp_host": "h", "from": "a@b", "to": []},
     "notifiers.n.to: required"),
])
def test_bad_notifier_config_is_refused_naming_the_key(
        notifier: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"notifiers": [notifier]})
    assert err.value.problems[0].startswith(expected), err.value.problems
    # A secret written into the config by mistake is not echoed back.
    assert "hunter22" not in str(err.value) and "https://x/y" not in str(err.value)


# --- events and delivery, on SQLite and PostgreSQL ---------------------------------------

def _bodies_by_state(receiver: WebhookReceiver) -> list[tuple[str, Any, Any]]:
    return [(b["state"], b["value"], b["pct"]) for b in receiver.received]


def test_firing_repeat_resolved_reach_the_webhook_with_the_spec_payload(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(monkeypatch, receiver, dict(HIGH, for_seconds=300, repeat_seconds=3600))
    put(engine, ws(T0, 93))
    check(engine, cfg, T0)  # pending: nothing sent
    assert receiver.received == []
    put(engine, ws(T0 + timedelta(seconds=300), 95))
    fired = check(engine, cfg, T0 + timedelta(seconds=300))
    assert fired.delivery.delivered == 1
    first = receiver.received[0]
    assert first == {
        "id": first["id"], "alert": "ws-connections-high", "state": "firing",
        "source": "ws-prod", "metric": "connections", "value": 95, "limit": 100,
        "pct": 95.0, "threshold": 90, "since": "2026-11-21T10:00:00Z",
        "at": "2026-11-21T10:05:00Z",
        "text": "FIRING ws-connections-high: ws-prod connections at 95 % of limit 100 "
                "(alert at 90 %)",
    }
    check(engine, cfg, T0 + timedelta(seconds=1800))  # firing, no repeat yet
    assert len(receiver.received) == 1
    check(engine, cfg, T0 + timedelta(seconds=3900))  # 3600 s after the first notification
    put(engine, ws(T0 + timedelta(seconds=4000), 87))  # above clear_pct 85: still firing
    check(engine, cfg, T0 + timedelta(seconds=4000))
    put(engine, ws(T0 + timedelta(seconds=4100), 84))
    check(engine, cfg, T0 + timedelta(seconds=4100))
    assert _bodies_by_state(receiver) == [
        ("firing", 95, 95.0), ("firing", 95, 95.0), ("resolved", 84, 84.0)]
    resolved = receiver.received[2]
    assert resolved["since"] == "2026-11-21T10:00:00Z"
    assert resolved["at"] == "2026-11-21T11:08:20Z"
    assert resolved["text"].startswith("RESOLVED ws-connections-high: ws-prod connections at 84 %")
    assert len({b["id"] for b in receiver.received}) == 3
    with engine.connect() as conn:
        history = list(conn.execute(
            select(AlertEvent.transition).order_by(AlertEvent.version)).scalars())
    assert history == ["pending", "firing", "repeat", "resolved"]


def test_a_receiver_down_for_a_while_gets_every_event_once_by_id(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(monkeypatch, receiver, HIGH)
    receiver.status = 503
    put(engine, ws(T0, 95))
    first = check(engine, cfg, T0)
    assert first.delivery.delivered == 0 and len(first.delivery.failed) == 1
    assert "HTTP 503" in first.delivery.failed[0]
    receiver.stop()  # now nothing listens at all
    check(engine, cfg, T0 + timedelta(seconds=29))  # backoff: not retried yet
    put(engine, ws(T0 + timedelta(seconds=40), 50))
    down = check(engine, cfg, T0 + timedelta(seconds=40))  # resolved, both fail
    assert len(down.delivery.failed) == 2
    assert all("cannot connect" in line for line in down.delivery.failed)
    receiver.start()
    receiver.status = 200
    # 30 s, then 60 s after the second failure: all due by T0 + 200 s.
    later = check(engine, cfg, T0 + timedelta(seconds=200))
    assert later.delivery.delivered == 2
    check(engine, cfg, T0 + timedelta(seconds=4000))
    assert [b["state"] for b in receiver.received] == ["firing", "resolved"]
    with engine.connect() as conn:
        ids = set(conn.execute(select(AlertEvent.id).where(
            AlertEvent.transition.in_(["firing", "resolved"]))).scalars())
        attempts = dict(conn.execute(select(AlertDelivery.event_id, AlertDelivery.attempts)).all())
    assert {b["id"] for b in receiver.received} == ids
    assert sorted(attempts.values()) == [2, 3]  # resolved: 1 fail + ok; firing: 2 fails + ok


def test_a_notification_is_retried_for_24_hours_then_given_up(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(monkeypatch, receiver, HIGH)
    receiver.status = 500
    put(engine, ws(T0, 95))
    now, tries = T0, 0
    while now <= T0 + timedelta(hours=25):
        tries += len(check(engine, cfg, now).delivery.failed)
        now += timedelta(minutes=10)
    with engine.connect() as conn:
        row = conn.execute(select(*AlertDelivery.__table__.c)).one()
    # 30 s, 1, 2, 4, 8, 16, 32 min, then hourly: tries at 0, 10, 20, 30, 40, 50 min (every
    # check, backoff below 10 min), 1:00 (16 min after 0:50 → 1:10), ... until the 24th hour.
    assert row.gave_up_at == T0 + timedelta(hours=24)
    assert row.delivered_at is None and row.attempts == tries
    assert row.last_error == "webhook ops: HTTP 500"
    receiver.status = 200
    check(engine, cfg, T0 + timedelta(hours=26))
    assert receiver.received == []  # given up stays given up


def _evaluate_in_process(url: str, hook: str, barrier: Any, now: datetime) -> int:
    import os

    os.environ["TEST_OPS_HOOK"] = hook
    from etl.config import parse_config as parse
    from etl.runtime.alerting import evaluate
    from etl.store.engine import make_engine

    cfg = parse({
        "database_url": url,
        "sources": [{"name": "ws-prod", "kind": "wiresocket", "region": "eu",
                     "token_env": "WS_T"}],
        "notifiers": [{"name": "ops", "kind": "webhook", "url_env": "TEST_OPS_HOOK"}],
        "alerts": [dict(HIGH)],
    })
    eng = make_engine(url)
    barrier.wait(PATIENCE)  # the other process may start long after this one on a busy machine
    made = evaluate(eng, cfg, now)
    eng.dispose()
    return len(made)


def test_two_processes_evaluating_at_once_create_each_event_once(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    url = engine.url.render_as_string(hide_password=False)
    put(engine, ws(T0, 95))
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        made = []
        for step_no, (when, value) in enumerate([(T0, 95), (T0 + timedelta(seconds=60), 10),
                                                  (T0 + timedelta(seconds=120), 99)]):
            if step_no:
                put(engine, ws(when, value))
            barrier = manager.Barrier(2)
            made.append(sum(pool.starmap(_evaluate_in_process,
                                         [(url, receiver.url, barrier, when)] * 2)))
    assert made == [1, 1, 1]  # firing, resolved, firing: each made by one process only
    cfg = config(monkeypatch, receiver, HIGH)
    check(engine, cfg, T0 + timedelta(seconds=121))
    assert [b["state"] for b in receiver.received] == ["firing", "resolved", "firing"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AlertDelivery)).scalar() == 3


def test_stale_fires_per_source_by_the_status_rule(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(monkeypatch, receiver, {"name": "quiet", "stale": True, "notify": ["ops"]})
    with engine.begin() as conn:
        record_attempt(conn, source="ws-prod", started_at=T0, finished_at=T0, outcome="ok")
        record_attempt(conn, source="rules", started_at=T0, finished_at=T0, outcome="ok")
    check(engine, cfg, T0 + timedelta(seconds=120))  # ws-prod: 2 x 60 s, not yet older
    assert receiver.received == []
    check(engine, cfg, T0 + timedelta(seconds=121))
    body = receiver.received[0]
    assert (body["source"], body["metric"], body["value"], body["threshold"]) == (
        "ws-prod", None, 121, 120)
    assert body["text"] == ("FIRING quiet: ws-prod last polled successfully 121 s ago "
                            "(stale after 120 s)")


def test_above_on_a_counter_is_the_month_to_date_increase(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(monkeypatch, receiver, {"name": "busy", "source": "rules",
                                         "metric": "invocations", "above": 1000,
                                         "notify": ["ops"]})
    # Before the month: 5000 (not counted); then +400, a reset to 300 (+300), +250 = 950.
    put(engine, nected(datetime(2026, 10, 31, 23, tzinfo=UTC), 5000),
        nected(datetime(2026, 11, 2, tzinfo=UTC), 5400),
        nected(datetime(2026, 11, 3, tzinfo=UTC), 300),
        nected(datetime(2026, 11, 4, tzinfo=UTC), 550))
    check(engine, cfg, T0)
    assert receiver.received == []
    put(engine, nected(datetime(2026, 11, 5, tzinfo=UTC), 600))  # 1000: fires (≥)
    check(engine, cfg, T0)
    assert receiver.received[0]["value"] == 1000
    assert receiver.received[0]["text"] == (
        "FIRING busy: rules invocations month-to-date increase 1000 (alert at 1000)")


def test_projection_alerts_use_the_billing_reports_projection(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"source": "rules", "metric": "invocations", "aggregation": "increase",
            "included": 100000, "unit_price": "0.002", "currency": "USD"}
    cfg = config(monkeypatch, receiver,
                 {"name": "over", "metric": "invocations", "projected_over_included": True,
                  "notify": ["ops"]},
                 {"name": "cost", "metric": "invocations", "projected_amount_above": "50.00",
                  "notify": ["ops"]},
                 billing=[rule])
    # 40 000 in the first 10 days of a 30-day month: 120 000 by month end, 20 000 over,
    # 40.00 USD; 60 000 by then: 180 000 projected, 160.00 USD.
    put(engine, nected(datetime(2026, 11, 1, tzinfo=UTC), 0),
        nected(datetime(2026, 11, 11, tzinfo=UTC), 40000))
    now = datetime(2026, 11, 11, tzinfo=UTC)
    check(engine, cfg, now)
    assert [(b["alert"], b["value"], b["threshold"]) for b in receiver.received] == [
        ("over", 120000, 100000)]
    put(engine, nected(datetime(2026, 11, 11, 0, 1, tzinfo=UTC), 60000))
    check(engine, cfg, now + timedelta(minutes=1))
    from reports.api import billing

    table = billing(engine, "2026-11", config=cfg, now=now + timedelta(minutes=1), decimal=True)
    expected = table.loc[0, "projected_amount"]
    assert receiver.received[-1]["alert"] == "cost"
    assert Decimal(str(receiver.received[-1]["value"])) == expected
    assert receiver.received[-1]["threshold"] == 50


# --- email through a real SMTP server (aiosmtpd) -------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp_tls(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Mailbox]]:
    """A STARTTLS SMTP server on loopback with a throwaway certificate the client trusts,
    accepting the login usage-etl / the password in $TEST_SMTP_PASSWORD only."""
    import ssl
    import subprocess

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "pa55-w0rd-Secret")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = (data.login, data.password) == (b"usage-etl", b"pa55-w0rd-Secret")
        return AuthResult(success=ok, handled=False)

    box = Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, authenticator=authenticator,
                            auth_require_tls=True)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


def email_config(port: int, password_env: str, to: str | list[str]) -> Config:
    """ws-prod, the HIGH alert, and an email notifier `finance` on loopback `port`."""
    return parse_config({
        "sources": [{"name": "ws-prod", "kind": "wiresocket", "region": "eu",
                     "token_env": "WS_T"}],
        "notifiers": [{"name": "finance", "kind": "email", "smtp_host": "127.0.0.1",
                       "smtp_port": port, "username": "usage-etl",
                       "password_env": password_env, "from": "usage-etl@example.com",
                       "to": to}],
        "alerts": [dict(HIGH, notify=["finance"])],
    })


def test_email_goes_out_over_starttls_with_login_and_the_spec_subject(
        engine: Engine, smtp_tls: tuple[int, Mailbox]) -> None:
    port, box = smtp_tls
    cfg = email_config(port, "TEST_SMTP_PASSWORD", to=["finance@example.com", "ops@example.com"])
    put(engine, ws(T0, 93))
    check(engine, cfg, T0)
    put(engine, ws(T0 + timedelta(seconds=60), 40))
    check(engine, cfg, T0 + timedelta(seconds=60))
    assert [m["Subject"] for _, m in box.messages] == [
        "[usage-etl] FIRING ws-connections-high: ws-prod connections at 93 % of limit 100 "
        "(alert at 90 %)",
        "[usage-etl] RESOLVED ws-connections-high: ws-prod connections at 40 % of limit 100 "
        "(alert at 90 %)",
    ]
    envelope, first = box.messages[0]
    assert envelope.rcpt_tos == ["finance@example.com", "ops@example.com"]
    assert first["From"] == "usage-etl@example.com"
    body = first.get_content()
    assert "value: 93" in body and "since: 2026-11-21T10:00:00Z" in body
    with engine.connect() as conn:
        ids = list(conn.execute(select(AlertEvent.id).where(
            AlertEvent.transition != "pending").order_by(AlertEvent.version)).scalars())
    assert [f"id: {i}" in m.get_content() for i, (_, m) in zip(ids, box.messages,
                                                                  strict=True)] == [True, True]


def test_a_refused_smtp_login_is_an_error_without_the_password(
        engine: Engine, smtp_tls: tuple[int, Mailbox], monkeypatch: pytest.MonkeyPatch) -> None:
    port, box = smtp_tls
    monkeypatch.setenv("TEST_WRONG_PASSWORD", "not-the-Passw0rd")
    cfg = email_config(port, "TEST_WRONG_PASSWORD", to="b@example.com")
    put(engine, ws(T0, 93))
    result = check(engine, cfg, T0)
    assert box.messages == []
    assert len(result.delivery.failed) == 1
    assert "email finance: SMTP 535" in result.delivery.failed[0]
    with engine.connect() as conn:
        stored = conn.execute(select(AlertDelivery.last_error)).scalar()
    assert stored is not None and "SMTP 535" in stored and "Passw0rd" not in stored


# --- the command line ------------------------------------------------------------------------

def _cli_config(tmp_path: Any, url: str, receiver_env: str, extra: str = "") -> str:
    path = tmp_path / "alerts.toml"
    path.write_text(
        f'database_url = "{url}"\n'
        '[[sources]]\nname = "ws-prod"\nkind = "wiresocket"\nregion = "eu"\n'
        'token_env = "WS_T"\ninterval_seconds = 60\n'
        '[[notifiers]]\nname = "ops"\nkind = "webhook"\n'
        f'url_env = "{receiver_env}"\n'
        '[[alerts]]\nname = "ws-connections-high"\nsource = "ws-prod"\n'
        'metric = "connections"\nabove_pct = 90\nnotify = ["ops"]\n' + extra)
    return str(path)


def test_alerts_check_list_and_test_from_the_command_line(
        engine: Engine, receiver: WebhookReceiver, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from etl.cli import cli

    monkeypatch.setenv("TEST_OPS_HOOK", receiver.url)
    url = engine.url.render_as_string(hide_password=False)
    cfg = _cli_config(tmp_path, url, "TEST_OPS_HOOK")
    now = datetime.now(UTC).replace(microsecond=0)
    put(engine, ws(now - timedelta(seconds=5), 93))
    runner = CliRunner()
    checked = runner.invoke(cli, ["--config", cfg, "alerts", "check"])
    assert checked.exit_code == 0, checked.output
    assert "firing ws-connections-high: ws-prod connections" in checked.stdout
    assert "1 notification(s) delivered, 0 failed" in checked.stdout
    listed = runner.invoke(cli, ["--config", cfg, "alerts", "list", "--json"])
    assert listed.exit_code == 0
    row = json.loads(listed.stdout.splitlines()[0])
    assert (row["alert"], row["state"], row["value"]) == ("ws-connections-high", "firing", 93)
    tested = runner.invoke(cli, ["--config", cfg, "alerts", "test", "ws-connections-high"])
    assert tested.exit_code == 0 and "sent to ops" in tested.stdout
    assert [b["state"] for b in receiver.received] == ["firing", "test"]
    assert receiver.received[1]["text"].startswith("TEST ws-connections-high")
    unknown = runner.invoke(cli, ["--config", cfg, "alerts", "test", "nope"])
    assert unknown.exit_code == 2 and "no alert named 'nope'" in unknown.stderr
    receiver.status = 500
    failing = runner.invoke(cli, ["--config", cfg, "alerts", "test", "ws-connections-high"])
    assert failing.exit_code == 1
    assert "usage-etl: not delivered: webhook ops: HTTP 500" in failing.stderr
    put(engine, ws(now - timedelta(seconds=2), 10))
    undelivered = runner.invoke(cli, ["--config", cfg, "alerts", "check"])
    assert undelivered.exit_code == 1 and "HTTP 500" in undelivered.stderr
    for result in (checked, listed, tested, unknown, failing, undelivered):
        assert WEBHOOK_SECRET_PATH not in result.output + result.stderr


def test_alerts_check_refuses_an_unset_webhook_url_naming_the_key(
        tmp_path: Any, sqlite_url: str) -> None:
    from click.testing import CliRunner

    from etl.cli import cli

    cfg = _cli_config(tmp_path, sqlite_url, "TEST_UNSET_HOOK_VARIABLE")
    result = CliRunner().invoke(cli, ["--config", cfg, "alerts", "check"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "usage-etl: error: notifiers.ops.url_env ($TEST_UNSET_HOOK_VARIABLE): "
        "environment variable is unset or empty")


def test_a_bad_alert_config_stops_every_command_with_exit_2(tmp_path: Any, sqlite_url: str,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from click.testing import CliRunner

    from etl.cli import cli

    monkeypatch.setenv("TEST_OPS_HOOK", "http://127.0.0.1:9/x")
    cfg = _cli_config(tmp_path, sqlite_url, "TEST_OPS_HOOK",
                      '[[alerts]]\nname = "two"\nmetric = "connections"\nabove = 1\n'
                      'above_pct = 5\nnotify = ["pager"]\n')
    result = CliRunner().invoke(cli, ["--config", cfg, "alerts", "list"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"usage-etl: error: {cfg}: alerts.two.above: only one condition per alert "
        "(above_pct, above are set)",
        f"usage-etl: error: {cfg}: alerts.two.notify: unknown notifier 'pager'",
    ]


def test_the_daily_html_report_lists_that_days_alert_events(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Any) -> None:
    import re

    from reports.jobs import build_daily

    cfg = config(monkeypatch, receiver, HIGH)
    put(engine, ws(T0, 95))
    check(engine, cfg, T0)  # firing on the 21st, 10:00
    put(engine, ws(T0 + timedelta(hours=2), 10))
    check(engine, cfg, T0 + timedelta(hours=2))  # resolved, 12:00
    put(engine, ws(T0 + timedelta(days=1), 99))
    check(engine, cfg, T0 + timedelta(days=1))  # firing again, on the 22nd
    from datetime import date

    [path] = build_daily(engine, cfg, date(2026, 11, 21), date(2026, 11, 21),
                         formats=["html"], out_dir=tmp_path)
    html = path.read_text()
    section = html[html.index("Alert events"):]
    rows = re.findall(r'<tr class="(\w+)"><td class="time">([\d:]+)</td>'
                      r'<td class="alert">([\w-]+)</td><td class="event">(\w+)</td>', section)
    assert rows == [("firing", "10:00:00", "ws-connections-high", "firing"),
                    ("resolved", "12:00:00", "ws-connections-high", "resolved")]
    assert "RESOLVED ws-connections-high: ws-prod connections at 10 % of limit 100" in section
    assert WEBHOOK_SECRET_PATH not in html
    [quiet] = build_daily(engine, cfg, date(2026, 11, 20), date(2026, 11, 20),
                          formats=["html"], out_dir=tmp_path)
    assert "Alert events" not in quiet.read_text()


def test_status_lists_what_is_firing(engine: Engine, receiver: WebhookReceiver,
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from etl.cli import cli

    monkeypatch.setenv("TEST_OPS_HOOK", receiver.url)
    cfg = _cli_config(tmp_path, engine.url.render_as_string(hide_password=False),
                      "TEST_OPS_HOOK")
    put(engine, ws(T0, 95))
    check(engine, parse_config({"sources": [{"name": "ws-prod", "kind": "wiresocket",
                                             "region": "eu", "token_env": "WS_T"}],
                                "alerts": [dict(HIGH, notify=[])]}), T0)
    as_json = CliRunner().invoke(cli, ["--config", cfg, "status", "--json"])
    assert json.loads(as_json.stdout)["alerts_firing"] == [
        {"alert": "ws-connections-high", "source": "ws-prod", "metric": "connections",
         "since": "2026-11-21T10:00:00Z"}]
    plain = CliRunner().invoke(cli, ["--config", cfg, "status"])
    assert ("alert ws-connections-high firing for ws-prod connections since "
            "2026-11-21 10:00:00Z") in plain.stdout
    assert as_json.exit_code == plain.exit_code == 1  # ws-prod never polled: stale


def test_a_series_back_under_the_threshold_while_pending_sends_nothing_and_starts_over(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(monkeypatch, receiver, dict(HIGH, for_seconds=300))
    put(engine, ws(T0, 280, limit=300))  # 93.33 %
    check(engine, cfg, T0)
    put(engine, ws(T0 + timedelta(seconds=200), 267, limit=300))  # 89 %: out while pending
    check(engine, cfg, T0 + timedelta(seconds=200))
    put(engine, ws(T0 + timedelta(seconds=250), 280, limit=300))  # pending again from 250 s
    check(engine, cfg, T0 + timedelta(seconds=250))
    check(engine, cfg, T0 + timedelta(seconds=540))  # 290 s since: still pending
    assert receiver.received == []
    check(engine, cfg, T0 + timedelta(seconds=550))
    [body] = receiver.received
    assert (body["since"], body["at"]) == ("2026-11-21T10:04:10Z", "2026-11-21T10:09:10Z")
    assert body["pct"] == 93.33
    assert body["text"] == ("FIRING ws-connections-high: ws-prod connections at 93.33 % of "
                            "limit 300 (alert at 90 %)")
    with engine.connect() as conn:
        history = list(conn.execute(
            select(AlertEvent.transition).order_by(AlertEvent.version)).scalars())
    assert history == ["pending", "cleared", "pending", "firing"]


def test_a_webhook_url_read_from_a_file_with_a_byte_order_mark_is_used(
        engine: Engine, receiver: WebhookReceiver, tmp_path: Any) -> None:
    secret = tmp_path / "hook-url"
    secret.write_bytes(b"\xef\xbb\xbf" + receiver.url.encode() + b"\r\n")
    cfg = parse_config({
        "sources": [{"name": "ws-prod", "kind": "wiresocket", "region": "eu",
                     "token_env": "WS_T"}],
        "notifiers": [{"name": "ops", "kind": "webhook", "url_file": str(secret)}],
        "alerts": [HIGH],
    })
    cfg.check_notifier_secrets()
    put(engine, ws(T0, 95))
    assert check(engine, cfg, T0).delivery.delivered == 1
    assert [b["state"] for b in receiver.received] == ["firing"]
    secret.write_text("not a url\n")
    with pytest.raises(ConfigError) as err:
        cfg.check_notifier_secrets()
    assert err.value.problems == [
        f"notifiers.ops.url_file ({secret}): is not an http:// or https:// URL (it has a "
        "space or a character that is not printable ASCII)"]


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:99999/hook?token=tok-5ecret", "the port is not a number from 1 to 65535"),
    ("http://127.0.0.1:80a/hook?token=tok-5ecret", "the port is not a number from 1 to 65535"),
    ("htp://127.0.0.1/hook?token=tok-5ecret", "the scheme is not http or https"),
    ("https:///hook?token=tok-5ecret", "it has no host"),
])
def test_a_bad_webhook_url_says_what_is_wrong_without_quoting_it(
        tmp_path: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, url: str,
        why: str) -> None:
    # A port of 99999 said only "is not an http:// or https:// URL" of an http:// URL.
    from click.testing import CliRunner

    from etl.cli import cli

    monkeypatch.setenv("TEST_OPS_HOOK", url)
    cfg = _cli_config(tmp_path, sqlite_url, "TEST_OPS_HOOK", "")
    tested = CliRunner().invoke(cli, ["--config", cfg, "alerts", "test", "ws-connections-high"])
    assert tested.exit_code == 2
    assert tested.stderr == ("usage-etl: error: notifiers.ops.url_env ($TEST_OPS_HOOK): is not "
                             f"an http:// or https:// URL ({why})\n")


def test_alerts_test_needs_only_the_secrets_of_that_alerts_notifiers(
        receiver: WebhookReceiver, tmp_path: Any, sqlite_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from etl.cli import cli

    monkeypatch.setenv("TEST_OPS_HOOK", receiver.url)
    cfg = _cli_config(tmp_path, sqlite_url, "TEST_OPS_HOOK",
                      '[[notifiers]]\nname = "other"\nkind = "webhook"\n'
                      'url_env = "TEST_UNSET_OTHER_HOOK"\n')
    tested = CliRunner().invoke(cli, ["--config", cfg, "alerts", "test", "ws-connections-high"])
    assert tested.exit_code == 0, tested.stderr
    assert [b["state"] for b in receiver.received] == ["test"]
    checked = CliRunner().invoke(cli, ["--config", cfg, "alerts", "check"])
    assert checked.exit_code == 2
    assert "notifiers.other.url_env ($TEST_UNSET_OTHER_HOOK)" in checked.stderr


def test_a_notifier_kind_added_as_one_module_and_one_entry_is_configured_and_delivers(
        engine: Engine, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NOTIFIER_TYPES, "chat", CHAT)
    monkeypatch.setenv("TEST_CHAT_HOOK", receiver.url)
    with pytest.raises(ConfigError) as err:
        parse_config({"notifiers": [{"name": "team", "kind": "chat", "url_env": "X",
                                     "channel": "ops", "colour": "red"}]})
    assert err.value.problems == [
        "notifiers.team.colour: unknown key for a chat notifier",
        "notifiers.team.channel: required, a channel such as '#ops'"]
    with pytest.raises(ConfigError) as err:
        parse_config({"notifiers": [{"name": "team", "kind": "pager"}]})
    assert err.value.problems == ["notifiers.team.kind: must be 'webhook', 'email' or 'chat'"]
    cfg = parse_config({
        "sources": [{"name": "ws-prod", "kind": "wiresocket", "region": "eu",
                     "token_env": "WS_T", "interval_seconds": 60}],
        "notifiers": [{"name": "team", "kind": "chat", "url_env": "TEST_CHAT_HOOK",
                       "channel": "#ops"}],
        "alerts": [dict(HIGH, notify=["team"])],
    })
    put(engine, ws(T0, 95))
    assert check(engine, cfg, T0).delivery.delivered == 1
    assert receiver.received == [{
        "channel": "#ops",
        "text": "FIRING ws-connections-high: ws-prod connections at 95 % of limit 100 "
                "(alert at 90 %)"}]
    assert notifier_secrets(cfg.notifiers) == [receiver.url]
