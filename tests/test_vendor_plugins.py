"""Vendor plugins (SPEC 7): kinds from the entry-point group `usage_etl.vendors`, end to end."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from etl.vendors import ParseContext, PluginFailure
from etl.vendors.types import SampleValue
from tests.factories import load_plugin_site, make_plugin_site

KEY = "acme-secret-7f3a9c1e"


class AcmeServer:
    """Acme's usage API on loopback: GET /usage.json with X-Acme-Key; records what it saw."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.calls = 1200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.paths.append(self.path)
                outer.headers.append(dict(self.headers))
                if self.headers.get("X-Acme-Key") != KEY:
                    status, body = 401, {"error": "bad key"}
                else:
                    outer.calls += 300
                    status, body = 200, {"calls": outer.calls, "calls_limit": -1,
                                         "at": datetime.now(UTC).isoformat()}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def acme() -> Iterator[AcmeServer]:
    server = AcmeServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def run(site: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {}),
            "PYTHONPATH": os.pathsep.join([site, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "etl", *args], capture_output=True, text=True,
                          env=full, timeout=300, check=False)


def test_a_plugin_kind_is_configured_collected_stored_and_reported(
        tmp_path: Path, acme: AcmeServer) -> None:
    site = make_plugin_site(tmp_path / "site")
    db = tmp_path / "usage.db"
    config = tmp_path / "usage-etl.toml"
    config.write_text(
        f'database_url = "sqlite:///{db}"\n'
        "[[sources]]\n"
        'name = "acme-prod"\nkind = "acme"\n'
        f'base_url = "{acme.base_url}"\ntoken_env = "ACME_TEST_KEY"\ninterval_seconds = 60\n'
        "[[billing]]\n"
        'source = "acme-prod"\nmetric = "calls"\naggregation = "increase"\n'
        'included = 100\nunit_price = "0.01"\n')
    env = {"ACME_TEST_KEY": KEY}

    listed = run(site, "--config", str(config), "vendors")
    assert listed.returncode == 0, listed.stderr
    assert "acme (plugin acme-usage 0.1.0): Acme API calls" in listed.stdout
    assert "  metrics: calls (counter)" in listed.stdout

    for _ in range(2):
        collected = run(site, "--config", str(config), "collect", env=env)
        assert collected.returncode == 0, collected.stdout + collected.stderr
    # The key went in the plugin's header only, never the URL, and nowhere in our output.
    assert acme.paths == ["/usage.json", "/usage.json"]
    assert all(h.get("X-Acme-Key") == KEY for h in acme.headers)
    assert KEY not in collected.stdout + collected.stderr
    assert KEY.encode() not in db.read_bytes()

    day = datetime.now(UTC).date().isoformat()
    out = tmp_path / "out"
    report = run(site, "--config", str(config), "report", "daily", "--date", day,
                 "--format", "csv", "--out", str(out))
    assert report.returncode == 0, report.stderr
    with (out / f"daily-{day}.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["source"], r["metric"], r["samples"], r["increase"], r["limit"]) for r in rows] == [
        ("acme-prod", "calls", "2", "300", "")]  # 1500 then 1800; the -1 limit is no limit


def test_a_plugin_that_fails_to_load_is_named_and_the_other_kinds_still_work(
        tmp_path: Path) -> None:
    site = make_plugin_site(tmp_path / "site", broken=True)
    listed = run(site, "vendors")
    assert listed.returncode == 1
    assert ("plugin broken (broken_usage:KIND) failed to load: ImportError: broken_usage "
            "needs libacme 9, not installed") in listed.stderr
    for kind in ("wiresocket (built in)", "nected (built in)", "http_json (built in)",
                 "acme (plugin acme-usage 0.1.0)"):
        assert kind in listed.stdout
    assert "Traceback" not in listed.stderr

    config = tmp_path / "c.toml"
    config.write_text('[[sources]]\nname = "b"\nkind = "broken"\ntoken_env = "X"\n')
    refused = run(site, "--config", str(config), "collect")
    assert refused.returncode == 2
    assert ("sources.b.kind: unknown kind 'broken' (expected one of: wiresocket, nected, "
            "http_json, acme) (plugin broken_usage:KIND failed to load: ImportError: "
            "broken_usage needs libacme 9, not installed)") in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_plugin_written_for_api_1_keeps_working_and_one_of_neither_api_is_refused(
        tmp_path: Path, acme: AcmeServer) -> None:
    site = make_plugin_site(tmp_path / "site", other_apis=True)
    found, failures = load_plugin_site(site)
    refusal = ("TypeError: parse(body) is neither plugin API 2 nor 1; write parse(body, context) "
               "taking an etl.vendors.ParseContext (plugin API 2, docs/vendors.md)")
    assert failures == [PluginFailure("acmebad", "acme_bad_usage:KIND", refusal)]
    # The version 1 parse, adapted, reads what the version 2 example reads.
    received = datetime(2026, 11, 21, 10, 0, 5, tzinfo=UTC)
    body = {"calls": 1200, "calls_limit": 100000, "at": "2026-11-21T10:00:00Z"}
    context = ParseContext("acme-prod", received_at=received, payload='{"calls": 1200}')
    old = found["acme1"].parse(body, context)
    assert old == found["acme"].parse(body, context)._replace(kind="acme1")
    assert (old.source, old.observed_at, old.payload, old.samples, old.received_at) == (
        "acme-prod", datetime(2026, 11, 21, 10, 0, tzinfo=UTC), '{"calls": 1200}',
        (SampleValue("calls", 1200.0, 100000.0),), received)

    listed = run(site, "vendors")
    assert listed.returncode == 1
    assert f"plugin acmebad (acme_bad_usage:KIND) failed to load: {refusal}" in listed.stderr
    assert "acme1 (plugin acme-v1-usage 0.1.0): Acme API calls (plugin API 1)" in listed.stdout
    db = tmp_path / "usage.db"
    config = tmp_path / "usage-etl.toml"
    config.write_text(
        f'database_url = "sqlite:///{db}"\n[[sources]]\nname = "old-acme"\nkind = "acme1"\n'
        f'base_url = "{acme.base_url}"\ntoken_env = "ACME_TEST_KEY"\ninterval_seconds = 60\n')
    collected = run(site, "--config", str(config), "collect", env={"ACME_TEST_KEY": KEY})
    assert collected.returncode == 0, collected.stdout + collected.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM samples").fetchall() == [(1500.0,)]
