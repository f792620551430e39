"""Secrets at debug level: `-vv` turns on every library's debug lines (urllib3's connection
pool prints each request's path, psycopg its connections); none of them may print a webhook
URL, a vendor credential or a database password. Real commands (the one-shot ones in this
process, logging set up as in a new one; the daemon as a process), real loopback peers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from etl.runtime.receiver import WebhookReceiver
from etl.runtime.simulator import SimulatedVendor
from tests.daemon import PATIENCE, daemon_env, wait_for
from tests.factories import (
    WEBHOOK_SECRET_PATH,
    at,
    migrated_engine,
    store,
    usage_etl_in_process,
    wiresocket,
    write_daemon_config,
)

HOOK_ENV = "TEST_DEBUG_HOOK"
ALERT = (f'\n[[notifiers]]\nname = "ops"\nkind = "webhook"\nurl_env = "{HOOK_ENV}"\n'
         '\n[[alerts]]\nname = "any-connection"\nsource = "ws-prod"\nmetric = "connections"\n'
         'above = 0\nnotify = ["ops"]\n')
DB_PASSWORD = "Horse-Battery-42"


def with_password(url: str) -> str:
    """The URL with a password (the test server trusts loopback, so any password is let in)."""
    return url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)


def usage_etl(cfg: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`usage-etl -vv --config CFG ARGS...` in this process, its logging set up as in a new
    one (tests.factories.usage_etl_in_process); `env` as the daemon's environment has it."""
    unset: dict[str, str | None] = {"USAGE_ETL_DATABASE_URL": None, "USAGE_ETL_SPOOL_DIR": None}
    return usage_etl_in_process("-vv", "--config", str(cfg), *args, env={**unset, **env})


def test_alerts_at_debug_level_print_the_request_line_without_the_webhook_url(
    empty_db_url: str, tmp_path: Path, simulator: SimulatedVendor, receiver: WebhookReceiver,
) -> None:
    url = with_password(empty_db_url)
    with migrated_engine(empty_db_url) as eng:
        store(eng, [wiresocket(at("2026-11-21T10:00:00"), 93)])
    cfg = write_daemon_config(tmp_path, url, simulator)
    cfg.write_text(cfg.read_text() + ALERT)
    env = daemon_env(simulator, **{HOOK_ENV: receiver.url})
    for args in (("alerts", "test", "any-connection"), ("alerts", "check"), ("collect",)):
        proc = usage_etl(cfg, env, *args)
        assert proc.returncode == 0, proc.stderr
        assert "DEBUG urllib3.connectionpool" in proc.stderr  # the library lines are there...
        for secret in (WEBHOOK_SECRET_PATH, receiver.url, DB_PASSWORD, simulator.token,
                       simulator.api_key):
            assert secret not in proc.stdout + proc.stderr, (args, secret)  # ...masked
        assert "sqlalchemy.engine" not in proc.stderr  # statements, parameters and rows
    assert len(receiver.received) == 2  # the test and the firing notification
    assert '"POST *** HTTP/1.1" 204' in usage_etl(cfg, env, "alerts", "test",
                                                    "any-connection").stderr


def test_the_daemon_at_debug_level_delivers_without_printing_the_webhook_url(
    empty_db_url: str, tmp_path: Path, simulator: SimulatedVendor, receiver: WebhookReceiver,
) -> None:
    url = with_password(empty_db_url)
    cfg = write_daemon_config(tmp_path, url, simulator)
    cfg.write_text(cfg.read_text() + ALERT)
    env = daemon_env(simulator, **{HOOK_ENV: receiver.url})
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "etl", "-vv", "--config", str(cfg),
                             "schedule", "--log-format", "json"], stdout=subprocess.DEVNULL,
                            stderr=log.open("wb"), env=env, cwd=tmp_path)
    try:
        wait_for("a delivered notification", lambda: len(receiver.received) >= 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(PATIENCE)
    text = log.read_text()
    # Every line is one JSON object, the libraries' own debug lines too (a log shipper's
    # stream), and urllib3's request line is among them, its path masked.
    lines = [json.loads(line) for line in text.splitlines()]
    loggers = {line["logger"] for line in lines}
    assert "urllib3.connectionpool" in loggers and "etl.schedule" in loggers
    assert any('"POST *** HTTP/1.1" 204' in line.get("message", "") for line in lines)
    for secret in (WEBHOOK_SECRET_PATH, DB_PASSWORD, simulator.token, simulator.api_key):
        assert secret not in text, secret
