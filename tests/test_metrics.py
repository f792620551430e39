"""The Prometheus endpoint (SPEC 9): scraped over HTTP and read with prometheus_client's parser."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from etl.config import parse_config
from etl.runtime.alerting import check
from etl.runtime.metrics import (
    Metrics,
    MetricsServer,
    database_accepts,
    spool_accepts,
)
from etl.store.engine import make_engine
from etl.store.writer import record_attempt, store_observations
from etl.vendors.types import Outcome
from tests.factories import nected, wiresocket

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition as {(name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_show_latest_values_limits_successes_polls_and_firing_alerts(
        engine: Engine, tmp_path: Path) -> None:
    cfg = parse_config({
        "sources": [
            {"name": "ws-prod", "kind": "wiresocket", "region": "eu", "token_env": "WS_T"},
            {"name": "rules", "kind": "nected", "api_key_env": "NE_K"},
        ],
        "alerts": [{"name": "high", "metric": "connections", "above_pct": 90}],
    })
    with engine.begin() as conn:
        store_observations(conn, [wiresocket(T0, 93, 4, docs_limit=None), nected(T0, 1234.5)])
        record_attempt(conn, source="ws-prod", started_at=T0, finished_at=T0, outcome="ok")
    check(engine, cfg, T0)
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "a.json").write_text("{}")
    metrics = Metrics(engine, cfg, spool_files=lambda: len(list(spool.glob("*.json"))))
    metrics.count_poll("ws-prod", Outcome.OK)
    metrics.count_poll("ws-prod", Outcome.OK)
    metrics.count_poll("rules", Outcome.TIMEOUT)
    server = MetricsServer("127.0.0.1", 0, metrics, healthy=lambda: True)
    server.start()
    try:
        resp = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        health = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
    finally:
        server.stop()
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    got = samples_of(resp.text)
    ws = (("metric", "connections"), ("source", "ws-prod"))
    docs = (("metric", "documents"), ("source", "ws-prod"))
    inv = (("metric", "invocations"), ("source", "rules"))
    assert got[("usage_etl_sample_value", ws)] == 93
    assert got[("usage_etl_sample_limit", ws)] == 100
    assert ("usage_etl_sample_limit", docs) not in got  # no limit: absent
    assert ("usage_etl_sample_limit", inv) not in got
    assert got[("usage_etl_sample_value", inv)] == 1234.5
    assert got[("usage_etl_sample_timestamp_seconds", ws)] == T0.timestamp() == 1795255200
    assert got[("usage_etl_last_success_timestamp_seconds", (("source", "ws-prod"),))] == (
        1795255200)
    assert ("usage_etl_last_success_timestamp_seconds", (("source", "rules"),)) not in got
    assert got[("usage_etl_polls_total", (("outcome", "ok"), ("source", "ws-prod")))] == 2
    assert got[("usage_etl_polls_total", (("outcome", "timeout"), ("source", "rules")))] == 1
    assert got[("usage_etl_alert_firing",
                (("alert", "high"), ("metric", "connections"), ("source", "ws-prod")))] == 1
    assert got[("usage_etl_spool_files", ())] == 1
    assert got[("usage_etl_database_up", ())] == 1
    assert health.status_code == 200


def test_healthz_is_503_when_neither_database_nor_spool_accepts_polls(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    gone = make_engine("postgresql://postgres@127.0.0.1:1/nowhere")
    assert not spool_accepts(blocker / "spool")
    assert spool_accepts(tmp_path / "spool")
    assert not database_accepts(gone)
    cfg = parse_config({})
    metrics = Metrics(gone, cfg, spool_files=lambda: 0)
    state: dict[str, Any] = {"spool": blocker / "spool"}
    server = MetricsServer("127.0.0.1", 0, metrics,
                           healthy=lambda: database_accepts(gone) or spool_accepts(state["spool"]))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert requests.get(base + "/healthz", timeout=30).status_code == 503
        state["spool"] = tmp_path / "spool"
        assert requests.get(base + "/healthz", timeout=30).status_code == 200
        scraped = samples_of(requests.get(base + "/metrics", timeout=30).text)
        assert scraped[("usage_etl_database_up", ())] == 0
    finally:
        server.stop()
        gone.dispose()


@pytest.mark.parametrize(("value", "problem"), [
    ("9108", "must be HOST:PORT"),
    ("127.0.0.1:http", "port 'http' is not a number from 0 to 65535"),
    ("127.0.0.1:70000", "port '70000' is not a number from 0 to 65535"),
])
def test_a_bad_metrics_listen_is_refused_naming_the_key(value: str, problem: str) -> None:
    from etl.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"metrics_listen": value})
    assert err.value.problems == [f"metrics_listen: {problem}" + (
        ", for example 127.0.0.1:9108" if problem == "must be HOST:PORT" else "")]


def test_head_answers_like_get_with_no_body(engine: Engine) -> None:
    cfg = parse_config({"sources": [{"name": "rules", "kind": "nected", "api_key_env": "NE_K"}]})
    with engine.begin() as conn:
        store_observations(conn, [nected(T0, 1234.5)])
    server = MetricsServer("127.0.0.1", 0, Metrics(engine, cfg, spool_files=lambda: 0),
                           healthy=lambda: True)
    server.start()
    try:
        for path, status in (("/metrics", 200), ("/healthz", 200), ("/nope", 404)):
            got = requests.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                raw = b""
                while chunk := sock.recv(65536):  # the server closes after one answer
                    raw += chunk
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:])
            assert lines[0].split(" ", 2)[1] == str(status) == str(got.status_code)
            assert body == b""
            assert headers["Content-Type"] == got.headers["Content-Type"]
            assert headers["Content-Length"] == str(len(got.content)) != "0"
    finally:
        server.stop()
