"""One sender at a time (SPEC 8): a notification claimed by one pass is never POSTed by
another while the first may still be sending it, however long the pass has been running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select

from etl.alerts.outbox import LEASE_MARGIN, deliver_due
from etl.config import Notifier, SecretRef, WebhookNotifier
from etl.errors import DeliveryError
from etl.runtime.receiver import WebhookReceiver
from etl.store.models import AlertDelivery, AlertEvent
from tests.daemon import PATIENCE
from tests.factories import REPO, FakeClock, at, migrated_engine, store, wiresocket, write_config

HOOK = WebhookNotifier(name="ops", url=SecretRef("notifiers.ops.url_env", env="TEST_SENDERS_HOOK"),
                       timeout_seconds=10)


def pending(engine: Engine, n: int, when: Any) -> None:
    """`n` stored notifications to `ops`, due now."""
    with engine.begin() as conn:
        for i in range(n):
            conn.execute(insert(AlertEvent).values(
                id=f"ev-{i}", alert="a", source="ws-prod", metric="connections",
                version=i + 1, transition="firing", at=when,
                payload=f'{{"id": "ev-{i}", "alert": "a"}}'))
            conn.execute(insert(AlertDelivery).values(
                event_id=f"ev-{i}", notifier="ops", created_at=when, next_attempt_at=when,
                attempts=0))


def test_a_lease_taken_late_in_a_slow_pass_still_keeps_a_second_sender_off(
    engine: Engine,
) -> None:
    clock = FakeClock(at("2026-11-21T10:00:00"))
    pending(engine, 3, clock())
    sent: list[tuple[str, str]] = []
    notifiers: dict[str, Notifier] = {"ops": HOOK}

    def second_sender(_: Notifier, body: dict[str, Any]) -> None:
        sent.append(("second", body["id"]))

    def first_sender(_: Notifier, body: dict[str, Any]) -> None:
        sent.append(("first", body["id"]))
        if body["id"] == "ev-0":  # a receiver slower than a whole lease
            clock.advance((timedelta(seconds=HOOK.timeout_seconds) + LEASE_MARGIN
                           ).total_seconds() + 1)
        elif body["id"] == "ev-1":  # meanwhile a cron run starts its own pass
            deliver_due(engine, notifiers, second_sender, clock(), clock=clock)

    start = clock()
    report = deliver_due(engine, notifiers, first_sender, start, clock=clock)
    # ev-1 was claimed 41 s after the pass began: the second pass leaves it, sends ev-2.
    assert sent == [("first", "ev-0"), ("first", "ev-1"), ("second", "ev-2")]
    assert report.delivered == 2
    with engine.connect() as conn:
        rows = conn.execute(select(AlertDelivery.event_id, AlertDelivery.delivered_at,
                                   AlertDelivery.attempts).order_by(AlertDelivery.id)).all()
    late = start + timedelta(seconds=41)
    assert [(r.event_id, r.delivered_at, r.attempts) for r in rows] == [
        ("ev-0", late, 1), ("ev-1", late, 1), ("ev-2", late, 1)]


def test_a_try_that_failed_meanwhile_keeps_its_backoff_for_a_pass_that_listed_it_before(
    engine: Engine,
) -> None:
    clock = FakeClock(at("2026-11-21T10:00:00"))
    pending(engine, 2, clock())
    sent: list[str] = []
    notifiers: dict[str, Notifier] = {"ops": HOOK}

    def down(_: Notifier, body: dict[str, Any]) -> None:
        raise DeliveryError("webhook ops: HTTP 503")

    def up(_: Notifier, body: dict[str, Any]) -> None:
        sent.append(body["id"])
        if body["id"] == "ev-0":  # while this pass sends ev-0, another fails ev-1
            assert deliver_due(engine, notifiers, down, clock(), clock=clock).failed

    # This pass listed ev-0 and ev-1 as due; ev-1's failed try since set its retry 30 s on.
    assert deliver_due(engine, notifiers, up, clock(), clock=clock).delivered == 1
    assert sent == ["ev-0"]
    with engine.connect() as conn:
        row = conn.execute(select(AlertDelivery.attempts, AlertDelivery.next_attempt_at)
                           .where(AlertDelivery.event_id == "ev-1")).one()
    assert (row.attempts, row.next_attempt_at) == (1, clock() + timedelta(seconds=30))


ALERTS = 30
# The notifier's deadline and the lease margin of the two runs: a lease lasts 10 s, and a
# POST answered in SLOW s leaves each sender 8 s to spare (the margin covers recording the
# outcome, which a busy machine's disk can make seconds long).
TIMEOUT_S, MARGIN_S = 6, 4
LEASE_S = TIMEOUT_S + MARGIN_S
FAST, SLOW = 0.3, 2.0  # seconds to answer a POST


def test_two_alerts_check_runs_with_a_slow_receiver_post_each_notification_once(
    empty_db_url: str, tmp_path: Path,
) -> None:
    with migrated_engine(empty_db_url) as eng:
        store(eng, [wiresocket(at("2026-11-21T10:00:00"), 93)])
    alerts = "".join(f'\n[[alerts]]\nname = "a{i:02d}"\nsource = "ws-prod"\n'
                     'metric = "connections"\nabove_pct = 50\nnotify = ["ops"]\n'
                     for i in range(ALERTS))
    cfg = write_config(tmp_path / "c.toml", {
        "database_url": empty_db_url,
        "sources": [{"name": "ws-prod", "kind": "wiresocket", "token_env": "UNSET_SENDER_TOK",
                     "region": "eu"}],
        "notifiers": [{"name": "ops", "kind": "webhook", "url_env": "TEST_SENDERS_HOOK",
                       "timeout_seconds": TIMEOUT_S}],
    }, alerts)
    with WebhookReceiver() as rec:
        # Until the second run's first POST (to its own path) every POST is answered in
        # SLOW s: the first run's 30 take a minute, so however slowly the second starts on a
        # busy machine it finds some left to send.
        rec.delay = SLOW
        env = dict(os.environ, TEST_SENDERS_HOOK=rec.url,
                   USAGE_ETL_ALERT_LEASE_MARGIN_S=str(MARGIN_S), PYTHONPATH=str(REPO))
        run = [sys.executable, "-c", "import sys; from etl.cli import cli; sys.stdin.readline(); "
               f"cli(['--config', {str(cfg)!r}, 'alerts', 'check'])"]
        first = subprocess.Popen(run, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        second = subprocess.Popen(run, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO,
                                  env=dict(env, TEST_SENDERS_HOOK=rec.url.replace(rec.path,
                                                                                  "/second")))
        assert first.stdin is not None and second.stdin is not None
        first.stdin.write("go\n")
        first.stdin.flush()
        deadline = time.monotonic() + PATIENCE
        while rec.posts < 1 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        # The first pass began before its first POST: a lease taken from the pass's start
        # (not when each is claimed) has run out once a whole lease has passed since.
        lease_over = time.monotonic() + LEASE_S
        while time.monotonic() < lease_over and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        second.stdin.write("go\n")
        second.stdin.flush()
        while (time.monotonic() < deadline and first.poll() is None
               and "/second" not in rec.paths):
            time.sleep(0.05)
        rec.delay = FAST
        out1, err1 = first.communicate(timeout=PATIENCE)
        out2, err2 = second.communicate(timeout=PATIENCE)
    assert (first.returncode, second.returncode) == (0, 0), err1 + err2
    ids = [body["id"] for body in rec.received]
    assert rec.posts == ALERTS and len(set(ids)) == ALERTS
    delivered = [int(out.splitlines()[-1].split(", ")[1].split()[0]) for out in (out1, out2)]
    assert sum(delivered) == ALERTS and delivered[1] > 0  # the second run did take some
