"""The Prometheus endpoint of `schedule --metrics-listen` (SPEC 9): /metrics and /healthz.

Stored figures (latest samples, last successes, alert states) are read from the database
at each scrape, so every replica shows the same history; `usage_etl_polls_total` counts
this process's own poll attempts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from etl.alerts.history import load_states
from etl.alerts.readings import latest_samples
from etl.alerts.states import AlertState
from etl.config import Config
from etl.store.history import read_up_to_all
from etl.store.state import last_successes
from etl.vendors.types import Outcome

log = logging.getLogger("etl.metrics")


class StoredCollector(Collector):
    """Gauges read from the database and the spool folder at scrape time."""

    def __init__(self, engine: Engine, config: Config, spool_files: Callable[[], int]) -> None:
        self.engine, self.config, self.spool_files = engine, config, spool_files

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The stored gauges (SPEC 9), read at scrape time.

        Spool files, latest values, limits, times, last successes, firing alerts and credit
        balances.
        """
        from etl.runtime.alerting import watched_series

        spool = GaugeMetricFamily("usage_etl_spool_files",
                                  "Polls waiting in the spool folder for the database.")
        spool.add_metric([], self.spool_files())
        yield spool
        up = GaugeMetricFamily("usage_etl_database_up",
                               "1 when this scrape could read the database, else 0.")
        try:
            with self.engine.connect() as conn:
                latest = latest_samples(conn)
                successes = {source: ok.finished_at
                             for source, ok in last_successes(conn).items()}
                states = load_states(conn)
                marks = read_up_to_all(conn)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer while the database is away
            log.debug("metrics: database not readable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        labels = ["source", "metric"]
        value = GaugeMetricFamily("usage_etl_sample_value",
                                  "Latest stored value of the series.", labels=labels)
        limit = GaugeMetricFamily("usage_etl_sample_limit",
                                  "Latest plan limit of the series (absent without one).",
                                  labels=labels)
        at = GaugeMetricFamily("usage_etl_sample_timestamp_seconds",
                               "Observation time of the latest sample, Unix seconds.",
                               labels=labels)
        configured = {s.name for s in self.config.sources}
        for (source, metric), sample in sorted(latest.items()):
            if source not in configured:
                continue
            value.add_metric([source, metric], sample.value)
            if sample.limit is not None:
                limit.add_metric([source, metric], sample.limit)
            at.add_metric([source, metric], sample.observed_at.timestamp())
        yield from (value, limit, at)
        last = GaugeMetricFamily("usage_etl_last_success_timestamp_seconds",
                                 "When the last successful poll of the source ended, "
                                 "Unix seconds.", labels=["source"])
        for src in self.config.sources:
            if successes.get(src.name) is not None:
                last.add_metric([src.name], successes[src.name].timestamp())
        yield last
        read = GaugeMetricFamily("usage_etl_read_up_to_timestamp_seconds",
                                 "How far a history source has read (SPEC 10), Unix seconds.",
                                 labels=["source"])
        for src in self.config.sources:
            if src.vendor.history is not None and marks.get(src.name) is not None:
                read.add_metric([src.name], marks[src.name].timestamp())
        yield read
        firing = GaugeMetricFamily("usage_etl_alert_firing",
                                   "1 while the alert fires for the series, else 0.",
                                   labels=["alert", "source", "metric"])
        for rule in self.config.alerts:
            for series in watched_series(self.config, rule):
                state = states.get((rule.name, series.source, series.metric_key))
                on = state is not None and state.state is AlertState.FIRING
                firing.add_metric([rule.name, series.source, series.metric_key], 1 if on else 0)
        yield firing
        if self.config.credits:
            yield self._credit_balances()

    def _credit_balances(self) -> GaugeMetricFamily:
        """usage_etl_credit_balance: each credit paying a period in progress (SPEC 11)."""
        from datetime import UTC, datetime

        from etl.runtime.billing_now import credit_readings

        balance = GaugeMetricFamily(
            "usage_etl_credit_balance",
            "Prepaid credit left after the period-to-date amounts of the periods in progress.",
            labels=["credit", "currency"])
        try:
            readings = credit_readings(self.engine, self.config, datetime.now(UTC))
        except Exception as exc:  # noqa: BLE001 - the other gauges are still served
            log.debug("metrics: credit balances not computed: %s", type(exc).__name__)
            return balance
        for name, reading in readings.items():
            balance.add_metric([name, reading.currency], float(reading.balance))
        return balance


class Metrics:
    """The registry of one daemon: stored gauges plus this process's poll counter."""

    def __init__(self, engine: Engine, config: Config, spool_files: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter("usage_etl_polls", "Poll attempts made by this process.",
                             ["source", "outcome"], registry=self.registry)
        self.registry.register(StoredCollector(engine, config, spool_files))

    def count_poll(self, source: str, outcome: Outcome) -> None:
        """Count one poll attempt of `source` that ended with `outcome`."""
        self.polls.labels(source=source, outcome=outcome.value).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text exposition format (what /metrics serves)."""
        return generate_latest(self.registry)


def spool_accepts(directory: str | os.PathLike[str]) -> bool:
    """Whether a poll could be written to the spool folder now (made if missing)."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def database_accepts(engine: Engine) -> bool:
    """Whether the database answers a trivial query now."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not now"
        return False


class MetricsServer:
    """Serves /metrics and /healthz on HOST:PORT in a background thread (SPEC 9).

    `healthy()` says whether the scheduler runs and the database or the spool accepts polls;
    /healthz answers 200 then, else 503.
    """

    def __init__(self, host: str, port: int, metrics: Metrics,
                 healthy: Callable[[], bool]) -> None:
        owner = self
        self.metrics, self.healthy = metrics, healthy

        class Handler(BaseHTTPRequestHandler):
            head = False  # answering HEAD: the GET's status and headers, no body

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
                self.head = True
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, owner.metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = owner.healthy()
                    self._answer(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n",
                                 "text/plain; charset=utf-8")
                else:
                    self._answer(404, b"not found: try /metrics or /healthz\n",
                                 "text/plain; charset=utf-8")

            def _answer(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not self.head:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    def start(self) -> None:
        """Serve /metrics and /healthz on a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
