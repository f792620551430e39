"""Builders every test file shares: observations, polls, configs, throwaway databases, one fake clock.

Plain functions and classes (no fixtures: those live in conftest.py, which imports from here).
Test modules import from this module, never from one another.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from etl.config import Config, SourceConfig, parse_config
from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine, upgrade
from etl.store.rows import forget_series_cache
from etl.store.writer import store_observations
from etl.vendors.types import (
    MetricType,
    Observation,
    Origin,
    Outcome,
    PollRecord,
    SampleValue,
)

# The repository's root: docs, scripts, notebooks and examples are read from here.
REPO = Path(__file__).resolve().parent.parent

# -- the PostgreSQL server and throwaway databases --------------------------------------------

PG_ADMIN_URL = os.environ.get(
    "USAGE_ETL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_problem() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'usage-etl[postgres]')"
    try:
        # The answer is kept for the worker's whole run: a server slow to answer under load
        # must not count as absent (3 s did, and failed every PostgreSQL test of a worker);
        # a server that is not there refuses at once.
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 30})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {str(exc).splitlines()[0]}"
    return None


_PG_PROBLEM: str | None | bool = False


def pg_problem() -> str | None:
    """Why the PostgreSQL server cannot be used (None: it can); asked once per process."""
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _pg_problem()
    return _PG_PROBLEM  # type: ignore[return-value]


def require_pg() -> None:
    """Skip (or, with CI=true, fail) when the PostgreSQL server is not there."""
    problem = pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)


def create_pg_database(template: str | None = None) -> str:
    """Create a throwaway database (empty, or a copy of database `template`); return its URL."""
    require_pg()
    name = f"usage_etl_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'
                          + (f' TEMPLATE "{template}"' if template else "")))
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    """Drop a database made by create_pg_database, whoever is still connected."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# DROP DATABASE makes the server checkpoint (write every dirty page of every database) and
# waits for it: about a second on a busy machine, for each of the suite's ~200 throwaway
# databases. Fixtures hand theirs to one thread per process that drops them in the
# background; conftest's pytest_sessionfinish waits for it (finish_pg_drops).
_DROPS: queue.Queue[str | None] = queue.Queue()
_DROPPER: list[threading.Thread] = []


def _drop_queued() -> None:
    while (url := _DROPS.get()) is not None:
        try:
            drop_pg_database(url)
        except Exception as exc:  # noqa: BLE001 - a leftover database must not fail a test
            print(f"tests: could not drop {url.rsplit('/', 1)[1]}: {exc}")


def discard_pg_database(url: str) -> None:
    """Drop a database made by create_pg_database soon, in the background (see _DROPS)."""
    if not _DROPPER:
        _DROPPER.append(threading.Thread(target=_drop_queued, name="pg-dropper", daemon=True))
        _DROPPER[0].start()
    _DROPS.put(url)


def finish_pg_drops() -> None:
    """Drop the migrated templates and wait until every discarded database is dropped."""
    template = _TEMPLATES.pop("postgresql", None)
    if template:
        discard_pg_database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + template)
    sqlite_template = _TEMPLATES.pop("sqlite", None)
    if sqlite_template:
        shutil.rmtree(Path(sqlite_template).parent, ignore_errors=True)
    if _DROPPER:
        _DROPS.put(None)
        _DROPPER.pop().join()


# Migrated databases to copy, made once per process: kind -> the SQLite file's path, or the
# PostgreSQL database's name. A copy is what migrating an empty database gives, at a
# fraction of the time (CREATE DATABASE ... TEMPLATE; a file copy).
_TEMPLATES: dict[str, str] = {}


def migrated_template(kind: str) -> str:
    """The process's migrated template of `kind` ("sqlite": a file path; "postgresql": a
    database name), made on first use by migrating an empty database to head."""
    if kind not in _TEMPLATES:
        if kind == "sqlite":
            path = Path(tempfile.mkdtemp(prefix="usage-etl-template-")) / "usage.db"
            with migrated_engine(f"sqlite:///{path}"):
                pass
            _TEMPLATES[kind] = str(path)
        else:
            url = create_pg_database()
            with migrated_engine(url):
                pass
            _TEMPLATES[kind] = url.rsplit("/", 1)[1]
    return _TEMPLATES[kind]


def copy_sqlite_template(path: Path) -> None:
    """Make `path` a copy of the migrated SQLite template (its WAL too, if one is left)."""
    template = Path(migrated_template("sqlite"))
    shutil.copyfile(template, path)
    for suffix in ("-wal", "-shm"):
        extra = Path(f"{template}{suffix}")
        if extra.exists():
            shutil.copyfile(extra, Path(f"{path}{suffix}"))


@contextmanager
def migrated_engine(url: str) -> Iterator[Engine]:
    """An engine on `url`, migrated to head; its series cache forgotten and disposed after."""
    eng = make_engine(url)
    upgrade(eng)
    try:
        yield eng
    finally:
        forget_series_cache(eng)
        eng.dispose()


@contextmanager
def reference_engine(like: Engine, tmp_path: Path) -> Iterator[Engine]:
    """A second migrated database of the same kind as `like` (a SQLite file in `tmp_path`, or
    a throwaway PostgreSQL database dropped after), to compute what a result should be."""
    if like.dialect.name == "sqlite":
        copy_sqlite_template(tmp_path / "ref.db")
        with migrated_engine(f"sqlite:///{tmp_path / 'ref.db'}") as ref:
            yield ref
        return
    url = create_pg_database(template=migrated_template("postgresql"))
    try:
        with migrated_engine(url) as ref:
            yield ref
    finally:
        discard_pg_database(url)


def store(engine: Engine, observations: Iterable[Observation]) -> None:
    """Store observations in one transaction through the one write path."""
    with engine.begin() as conn:
        store_observations(conn, list(observations))


# The secret part of the webhook receiver's URL: it must never show up in logs, rows or reports.
WEBHOOK_SECRET_PATH = "/hooks/T0KEN-s3cr3t-path"


# -- one fake clock ---------------------------------------------------------------------------


def _whole_second_now() -> datetime:
    # Whole seconds: the pacing state files keep 6 decimals, which hold it exactly.
    return datetime.fromtimestamp(int(time.time()), UTC)


class FakeClock:
    """A clock that moves only when told: `advance(s)` (or `sleep(s)`, the same).

    Read it as an aware UTC datetime (`clock()` or `clock.now`, which a test may also set)
    or as epoch seconds (`clock.time`), so one clock can drive the scheduler, the pacer, the
    collector's sleeps and the simulator's rate window together. It is also the daemon's
    monotonic clock (`monotonic()`, elapsed seconds): `advance` moves both, `step(s)` moves
    the wall clock alone, as NTP, a restored VM snapshot or `date -s` do.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or _whole_second_now()
        self.elapsed = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def time(self) -> float:
        """Epoch seconds."""
        with self._lock:
            return self.now.timestamp()

    def monotonic(self) -> float:
        """Elapsed seconds (arbitrary origin); `step` leaves it alone."""
        with self._lock:
            return self.elapsed

    def advance(self, seconds: float) -> None:
        """Move the clock on by `seconds` (wall and elapsed time alike)."""
        with self._lock:
            self.now += timedelta(seconds=seconds)
            self.elapsed += seconds

    sleep = advance

    def step(self, seconds: float) -> None:
        """Step the wall clock by `seconds` (negative: back); no time elapses."""
        with self._lock:
            self.now += timedelta(seconds=seconds)


# -- observations and polls -------------------------------------------------------------------


def at(text: str) -> datetime:
    """A naive ISO timestamp read as UTC: `at("2026-05-03T10:00:00")`."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def nected_body(invocations: float) -> dict[str, Any]:
    """The body the nected usage endpoint sends (vendor-apis/nected)."""
    return {"data": {"invocations": invocations}, "code": "success", "message": "Success."}


def wiresocket_body(when: datetime | str, conns: float, docs: float = 1, limit: float | None = 100,
                    docs_limit: float | None = 20, tenant: str = "t-1") -> dict[str, Any]:
    """The body the wiresocket usage endpoint sends (vendor-apis/wiresocket)."""
    return {"tenantId": tenant, "appId": "app-1",
            "usage": {"connections": {"current": conns, "limit": limit},
                      "documents": {"current": docs, "limit": docs_limit}},
            "timestamp": when if isinstance(when, str) else when.isoformat()}


def nected(when: datetime, invocations: float, *, source: str = "rules",
           origin: Origin = Origin.COLLECT, received_at: datetime | None = None,
           payload: str | None = None) -> Observation:
    """One nected observation (a counter, `invocations`) with the vendor's body."""
    return Observation(
        source, "nected", when,
        json.dumps(nected_body(invocations)) if payload is None else payload,
        (SampleValue("invocations", float(invocations)),),
        received_at=received_at, origin=origin,
    )


def wiresocket(when: datetime, conns: float, docs: float = 1, *, source: str = "ws-prod",
               limit: float | None = 100.0, docs_limit: float | None = 20.0,
               status: str | None = None, docs_status: str | None = None,
               tenant: str = "t-1", origin: Origin = Origin.COLLECT,
               received_at: datetime | None = None, payload: str | None = None) -> Observation:
    """One wiresocket observation (gauges `connections` and `documents`) with the vendor's body."""
    body = wiresocket_body(when, conns, docs, limit, docs_limit, tenant)
    return Observation(
        source, "wiresocket", when, json.dumps(body) if payload is None else payload,
        (SampleValue("connections", float(conns), limit, status),
         SampleValue("documents", float(docs), docs_limit, docs_status)),
        received_at=received_at, origin=origin,
    )


def history_page(fetched: datetime, window: tuple[datetime, datetime],
                 buckets: Iterable[tuple[datetime, datetime, Mapping[str, float]]], *,
                 source: str = "openai", metric: str = "tokens",
                 origin: Origin = Origin.COLLECT) -> Observation:
    """One page of a history source fetched at `fetched`: per bucket (start, end, KEY -> value).

    Samples are interval series `METRIC:KEY`; the body is a small OpenAI-like bucket list.
    """
    samples, data = [], []
    for start, end, values in buckets:
        data.append({"start_time": int(start.timestamp()), "end_time": int(end.timestamp()),
                     "results": [{"model": k, "value": v} for k, v in values.items()]})
        samples.extend(SampleValue(f"{metric}:{k}", float(v), metric_type=MetricType.INTERVAL,
                                   bucket_start=start, bucket_end=end)
                       for k, v in values.items())
    return Observation(source, "http_json", fetched, json.dumps({"data": data}), tuple(samples),
                       received_at=fetched, origin=origin, window=window)


# An OpenAI-like history source (SPEC 10) whose series are `tokens:MODEL`, as history_page writes.
HISTORY_SOURCE_TOML = """
[[sources]]
name = "openai"
kind = "http_json"
url = "https://api.openai.com/v1/organization/usage/completions"
interval_seconds = 3600
params = { start_time = "{start:unix}", end_time = "{end:unix}", bucket_width = "1h" }
[sources.window]
lookback = "1d"
[sources.buckets]
each = "data"
start = "start_time"
end = "end_time"
[[sources.metrics]]
name = "tokens"
type = "interval"
each = "results"
key = "model"
value = "value"
"""


def ok_poll(when: datetime, invocations: float = 1000, source: str = "rules") -> PollRecord:
    """A successful poll of a nected source that finished at `when` (80.5 ms, one try)."""
    obs = nected(when, invocations, source=source, received_at=when)
    return PollRecord(source, Outcome.OK, when - timedelta(milliseconds=80), when, 200, 80.5, 1,
                      None, obs)


def failed_poll(when: datetime, source: str = "ws-prod") -> PollRecord:
    """A poll that timed out after 3 tries, started at `when`."""
    return PollRecord(source, Outcome.TIMEOUT, when, when + timedelta(seconds=10), None, None, 3,
                      "read timed out", None)


# -- configs ----------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string


def config_text(settings: Mapping[str, Any]) -> str:
    """TOML text of a config given as the dict `parse_config` takes (lists of tables last)."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in settings.items()
             if not isinstance(value, list)]
    for key, tables in settings.items():
        if isinstance(tables, list):
            for table in tables:
                lines += ["", f"[[{key}]]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_config(path: Path, settings: Mapping[str, Any], extra: str = "") -> Path:
    """Write `settings` (a config dict) as TOML to `path`, plus any `extra` TOML text."""
    path.write_text(config_text(settings) + extra, encoding="utf-8")
    return path


def usage_etl_in_process(*args: str, env: Mapping[str, str | None] | None = None,
                         input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`usage-etl ARGS...` through the console script's click group, in this process.

    What a new process would print and exit with, without its interpreter start-up (0.3 to
    2 s of CPU each): the root logger starts without handlers, so the CLI's own logging set-up
    sends its lines to the stderr captured here, and the secrets mask starts empty, so only
    this command's config can mask anything. `env` is set for the command alone (None
    removes a variable). An exception the CLI lets through is raised here, where a process
    would have printed its traceback. For tests of process behaviour (signals, start-up,
    daemons, what the interpreter loads) start a real process instead.
    """
    from click.testing import CliRunner

    from etl.cli import cli
    from etl.redact import LOG_MASK

    root = logging.getLogger()
    kept, level = root.handlers[:], root.level
    known = LOG_MASK._secrets, LOG_MASK._sources
    root.handlers = []
    LOG_MASK._secrets, LOG_MASK._sources = [], []
    try:
        result = CliRunner(env=env).invoke(cli, list(args), input=input, prog_name="usage-etl")
    finally:
        root.handlers, root.level = kept, level
        LOG_MASK._secrets, LOG_MASK._sources = known
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["usage-etl", *args], result.exit_code, result.stdout,
                                       result.stderr)


def two_sources(ws_name: str = "ws-prod", *, token_env: str = "UNSET_WS_TOKEN",
                api_key_env: str = "UNSET_NECTED_KEY", **common: Any) -> list[dict[str, Any]]:
    """The two sources most tests use: wiresocket `ws_name` and nected `rules`."""
    return [
        {"name": ws_name, "kind": "wiresocket", "token_env": token_env, **common},
        {"name": "rules", "kind": "nected", "api_key_env": api_key_env, **common},
    ]


# At the declared minimum versions (scripts/test-minimums.sh sets USAGE_ETL_TEST_MINIMUMS=1),
# a property test draws a fifth of its examples, at least 20: every example makes the same
# library calls (what that run is for); searching our own logic for a counterexample is the
# latest versions' run's job (README, the paragraph on CI).
AT_MINIMUMS = os.environ.get("USAGE_ETL_TEST_MINIMUMS") == "1"


def examples(n: int) -> int:
    """Hypothesis's max_examples for a property test that draws `n` at the latest versions."""
    return max(20, n // 5) if AT_MINIMUMS else n


# The ways a gzip file arrives damaged, as a reader meets them: its header cut short
# (EOFError before any data), a first block that is not deflate data (zlib.error), and the
# data cut off halfway (EOFError after some lines).
GZIP_DAMAGE = ("header", "first_block", "halfway")


def damaged_gzip(data: bytes, damage: str) -> bytes:
    """`data` gzip-compressed and then damaged as `damage` (one of GZIP_DAMAGE) says."""
    packed = gzip.compress(data, mtime=0)
    if damage == "header":
        return packed[:3] + b"garbage"
    if damage == "first_block":
        return packed[:10] + b"\xff" * 64
    assert damage == "halfway", damage
    return packed[: len(packed) // 2]


def reports_settings(tz: str = "UTC", billing: Iterable[dict[str, Any]] = (),
                     ws_name: str = "ws-prod", **top: Any) -> dict[str, Any]:
    """The config of stored-history tests, as a dict: `ws_name` (wiresocket, region eu) and
    `rules` (nected), 300 s each, with unset credentials (nothing is polled), and `top` keys."""
    sources = two_sources(ws_name, token_env="USAGE_ETL_TEST_UNSET_TOKEN",
                          api_key_env="USAGE_ETL_TEST_UNSET_KEY", interval_seconds=300)
    sources[0] = {**sources[0], "region": "eu"}
    return {"timezone": tz, **top, "sources": sources, "billing": list(billing)}


def make_config(tz: str = "UTC", billing: Iterable[dict[str, Any]] = (),
                ws_name: str = "ws-prod") -> Config:
    """reports_settings() parsed: the Config the read/compute/render steps take."""
    return parse_config(reports_settings(tz, billing, ws_name))


def write_reports_config(path: Path, database_url: str, tz: str = "UTC",
                         billing: Iterable[dict[str, Any]] = (), **top: Any) -> Path:
    """reports_settings() as the TOML file `path`, on `database_url`."""
    return write_config(path, reports_settings(tz, billing, database_url=database_url, **top))


def stored_history_config(engine: Engine, path: Path, *, billed: bool = False) -> Path:
    """Write reports_settings() on `engine`'s database to `path` (with billing_rules() if
    `billed`): the config for running commands against a test's stored history."""
    url = engine.url.render_as_string(hide_password=False)
    return write_config(path, reports_settings(database_url=url,
                                               billing=billing_rules() if billed else ()))


def billing_rules(included_inv: int = 100, price_inv: str = "0.001",
                  included_peak: int = 100, price_peak: str = "0.50") -> list[dict[str, Any]]:
    """Bill `rules` invocations by increase (USD) and `ws-prod` connections by peak (EUR)."""
    return [
        {"source": "rules", "metric": "invocations", "aggregation": "increase",
         "included": included_inv, "unit_price": price_inv, "currency": "USD"},
        {"source": "ws-prod", "metric": "connections", "aggregation": "peak",
         "included": included_peak, "unit_price": price_peak, "currency": "EUR"},
    ]


def sim_source(sim: SimulatedVendor, kind: str, monkeypatch: pytest.MonkeyPatch, *,
               name: str | None = None, secret: str | None = None, interval: float = 60,
               timeout: float = 5, base_url: str | None = None) -> SourceConfig:
    """A source of `kind` on the simulator, its credential in an environment variable."""
    env = f"TEST_SECRET_{kind.upper()}_{name or 'x'}".replace("-", "_")
    monkeypatch.setenv(env, secret or (sim.token if kind == "wiresocket" else sim.api_key))
    return SourceConfig(name=name or kind, kind=kind, interval_seconds=interval,
                        base_url=base_url or sim.base_url, secret_env=env,
                        timeout_seconds=timeout)


def write_sim_config(
    path: os.PathLike[str] | str,
    sim: SimulatedVendor,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    interval: float = 60,
    timeout: float = 5,
    extra: str = "",
) -> str:
    """Write a config with sources `ws` (wiresocket) and `rules` (nected) pointing at `sim`.

    The credentials go into environment variables (set with `monkeypatch`), never the file.
    Returns the config path.
    """
    tag = uuid.uuid4().hex[:8].upper()
    ws_env, nk_env = f"TEST_WS_TOKEN_{tag}", f"TEST_NECTED_KEY_{tag}"
    monkeypatch.setenv(ws_env, sim.token)
    monkeypatch.setenv(nk_env, sim.api_key)
    sources = two_sources("ws", token_env=ws_env, api_key_env=nk_env, base_url=sim.base_url,
                          interval_seconds=interval, timeout_seconds=timeout)
    settings = {"database_url": database_url, "timezone": "UTC", "sources": sources}
    return str(write_config(Path(path), settings, extra))


DAEMON_INTERVAL = 5  # seconds between polls of each source in the daemon tests
DAEMON_WS_TOKEN_ENV = "SCHED_TEST_WS_TOKEN"
DAEMON_NECTED_KEY_ENV = "SCHED_TEST_NECTED_KEY"


def unique_sim() -> SimulatedVendor:
    """A simulator (not started) with credentials no other test uses.

    The collector paces per credential, process-wide, so tests must not share one.
    """
    tag = uuid.uuid4().hex[:10]
    return SimulatedVendor(tokens=(f"ws-token-{tag}",), api_keys=(f"nected-key-{tag}",))


def write_daemon_config(tmp: Path, url: str, sim: SimulatedVendor,
                        interval: int = DAEMON_INTERVAL) -> Path:
    """`tmp/usage-etl.toml` for the daemon: `ws-prod` and `rules` on `sim`, every `interval` s.

    Spool and reports go under `tmp`; the credentials are read from DAEMON_WS_TOKEN_ENV and
    DAEMON_NECTED_KEY_ENV.
    """
    sources = two_sources(token_env=DAEMON_WS_TOKEN_ENV, api_key_env=DAEMON_NECTED_KEY_ENV,
                          base_url=sim.base_url, interval_seconds=interval)
    return write_config(tmp / "usage-etl.toml", {
        "database_url": url, "spool_dir": str(tmp / "spool"),
        "reports_dir": str(tmp / "reports"), "sources": sources,
    })


def load(cfg: Path) -> Config:
    """The config in file `cfg`, parsed as written (no environment overrides)."""
    return parse_config(tomllib.loads(cfg.read_text()), str(cfg))


# -- a history with sub-second timestamps and fractional readings ----------------------------

# Sub-second timestamps (both sides of midnight by a microsecond) and fractional counter
# readings, as the vendors send them: what the import path (etl.store.bulk) stores.
SUBSECOND_ARCHIVE = [
    ("rules", "2026-05-02T12:00:00Z", 999999999.9),
    ("rules", "2026-05-03T10:00:00.250Z", 1000000000.1),
    ("rules", "2026-05-03T10:00:00.750Z", 1000000000.3),
    ("rules", "2026-05-03T23:59:59.999999Z", 0.25),
    ("rules", "2026-05-04T00:00:00.000001Z", 100.5),
    ("rules", "2026-05-20T00:00:00Z", 199.6),
    ("ws-prod", "2026-05-03T10:00:00.500Z", 80),
    ("ws-prod", "2026-05-03T10:00:01.250Z", 95),
    ("ws-prod", "2026-05-03T23:59:59.999999Z", 50),
]
SUBSECOND_BILLING = [{"source": "rules", "metric": "invocations", "aggregation": "increase",
                      "included": 100, "unit_price": "0.001", "currency": "USD"}]


def write_subsecond_archive(path: Path) -> Path:
    """SUBSECOND_ARCHIVE as a JSONL archive (SPEC 4) at `path`."""
    with path.open("w", encoding="utf-8") as fh:
        for source, when, value in SUBSECOND_ARCHIVE:
            if source == "rules":
                line: dict[str, Any] = {"source": source, "observed_at": when,
                                        "body": nected_body(value)}
            else:
                body = wiresocket_body(when, value, tenant="t-1")
                line = {"source": source, "body": {**body, "appId": "a-1"}}
            fh.write(json.dumps(line) + "\n")
    return path


def assert_subsecond_reports(daily: dict[str, list[dict[str, str]]],
                             billing: list[dict[str, str]]) -> None:
    """Hand-computed figures of SUBSECOND_ARCHIVE (UTC days) as CSV cells."""
    def cells(rows: list[dict[str, str]], metric: str, *cols: str) -> tuple[str, ...]:
        [r] = [r for r in rows if r["metric"] == metric]
        return tuple(r[c] for c in cols)

    cols = ("samples", "min", "max", "increase", "resets", "coverage_pct")
    # First reading ever adds 0.
    assert cells(daily["2026-05-02"], "invocations", *cols) == ("1", "999999999.9",
                                                                "999999999.9", "0", "0", "0.69")
    # +0.2 (not the doubles' 0.19999992847442627), +0.2, then a reset to 0.25 a microsecond
    # before midnight: 0.65. Covered: 10:00:00.25 to 10:10:00.75 (600.5 s) plus 1 us.
    assert cells(daily["2026-05-03"], "invocations", *cols) == ("3", "0.25", "1000000000.3",
                                                                "0.65", "1", "0.7")
    # 100.5 - 0.25 a microsecond after midnight; covered 00:00 to 00:10:00.000001.
    assert cells(daily["2026-05-04"], "invocations", *cols) == ("1", "100.5", "100.5",
                                                                "100.25", "0", "0.69")
    assert cells(daily["2026-05-03"], "connections",
                 "samples", "min", "max", "limit", "peak_pct") == ("3", "50", "95", "100", "95")
    assert cells(daily["2026-05-04"], "connections", "samples") == ("0",)
    # 0.65 + 100.25 + (199.6 - 100.5 = 99.1) = 200 exactly; 100 over at 0.001 = 0.10.
    [b] = billing
    assert (b["quantity"], b["included"], b["overage"], b["amount"]) == ("200", "100", "100",
                                                                        "0.10")
    assert b["resets"] == "1"


def seed_month(engine: Engine) -> None:
    """May 2026: invocations +105 over the month (one reset), connections peak 103.5."""
    store(engine, [
        nected(at("2026-04-30T23:00:00"), 1_000),  # before the month: the predecessor
        nected(at("2026-05-02T12:00:00"), 1_050),  # +50
        nected(at("2026-05-15T12:00:00"), 25),  # reset: +25
        nected(at("2026-05-31T22:30:00"), 55),  # +30
        nected(at("2026-06-01T01:00:00"), 80),  # June
        wiresocket(at("2026-05-10T08:00:00"), 90),
        wiresocket(at("2026-05-20T08:00:00"), 103.5),
        wiresocket(at("2026-06-02T08:00:00"), 500),
    ])


# --- a year of history (SPEC 13's "Done when") ------------------------------------------------

YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2027, 1, 1, tzinfo=UTC)
# Four wiresocket sources (two gauges each) and two nected ones (a counter each): ten series.
YEAR_WIRESOCKET = ("ws-a", "ws-b", "ws-c", "ws-d")
YEAR_NECTED = ("nx-a", "nx-b")
_YEAR_LIMITS = (100, 250, 500, 1000)


def checksum(text: str) -> int:
    """A 64-bit digest of one record; records' digests are summed (mod 2**64), so the sum of
    a set does not depend on the order it is read in, and parts of it add up to the whole."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def line_record(source: str, micros: int, body: Any) -> str:
    """What identifies a raw response, however an archive line spells it."""
    return f"{source}|{micros}|{json.dumps(body, sort_keys=True, separators=(',', ':'))}"


def sample_record(source: str, metric: str, micros: int, value: float, limit: float | None,
                  status: str | None) -> str:
    """What identifies a stored sample, however it is read (database, Parquet)."""
    return f"{source}|{metric}|{micros}|{value!r}|{limit!r}|{status}"


@dataclass
class Tally:
    """How many records and the sum of their digests (mod 2**64)."""

    count: int = 0
    total: int = 0

    def add(self, digest: int) -> None:
        self.count += 1
        self.total = (self.total + digest) % (1 << 64)

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.count + other.count, (self.total + other.total) % (1 << 64))


@dataclass
class YearHistory:
    """What write_year_archive wrote: raw lines and samples, per UTC month ("YYYY-MM")."""

    lines: dict[str, Tally] = field(default_factory=dict)
    samples: dict[str, Tally] = field(default_factory=dict)

    def total(self, kind: str, months: Iterable[str] | None = None) -> Tally:
        tallies = self.lines if kind == "lines" else self.samples
        out = Tally()
        for month, tally in tallies.items():
            if months is None or month in months:
                out = out + tally
        return out


def _status(current: int, limit: int) -> str:
    pct = current * 100 / limit
    return "critical" if pct >= 90 else "warning" if pct >= 75 else "healthy"


def write_year_archive(path: Path, step_minutes: int = 1) -> YearHistory:
    """2026 as an archive (SPEC 4): the ten YEAR_ series at one sample every `step_minutes`.

    Gauges follow a daily cycle under their plan limits (with the vendor's status text);
    the counters grow and reset at each month's start. At one a minute: 3,153,600 lines,
    5,256,000 samples. Written line by line (memory stays flat).
    """
    written = YearHistory()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    counters = [1_000_000 * (i + 1) for i in range(len(YEAR_NECTED))]
    dumps = json.dumps
    with path.open("w", encoding="utf-8", buffering=1 << 20) as fh:
        at, step = YEAR_START, timedelta(minutes=step_minutes)
        minute = 0
        while at < YEAR_END:
            month = f"{at:%Y-%m}"
            lines = written.lines.setdefault(month, Tally())
            samples = written.samples.setdefault(month, Tally())
            micros = (at - epoch) // timedelta(microseconds=1)
            cycle = (minute % 1440) / 1440
            stamp = f"{at:%Y-%m-%dT%H:%M:%S}"
            for i, source in enumerate(YEAR_WIRESOCKET):
                limit = _YEAR_LIMITS[i]
                conns = int(limit * (0.5 + 0.45 * abs(2 * ((cycle + i / 8) % 1) - 1)))
                docs = (minute + 3 * i) % 21
                body = {"tenantId": f"t-{i}", "appId": f"app-{i}", "timestamp": f"{stamp}.000Z",
                        "usage": {
                            "connections": {"current": conns, "limit": limit,
                                            "status": _status(conns, limit)},
                            "documents": {"current": docs, "limit": 20,
                                          "status": _status(docs, 20)}}}
                fh.write(f'{{"source":"{source}","body":{dumps(body)}}}\n')
                lines.add(checksum(line_record(source, micros, body)))
                samples.add(checksum(sample_record(source, "connections", micros, float(conns),
                                                   float(limit), _status(conns, limit))))
                samples.add(checksum(sample_record(source, "documents", micros, float(docs),
                                                   20.0, _status(docs, 20))))
            for i, source in enumerate(YEAR_NECTED):
                if at.day == 1 and at.hour == 0 and at.minute < step_minutes:
                    counters[i] = 0  # the vendor's monthly reset
                counters[i] += 17 * (i + 1) * step_minutes + minute % 5
                body = {"data": {"invocations": counters[i]}, "code": "success",
                        "message": "Success."}
                fh.write(f'{{"source":"{source}","observed_at":"{stamp}Z","body":{dumps(body)}}}\n')
                lines.add(checksum(line_record(source, micros, body)))
                samples.add(checksum(sample_record(source, "invocations", micros,
                                                   float(counters[i]), None, None)))
            at += step
            minute += step_minutes
    return written


def year_settings(database_url: str) -> dict[str, Any]:
    """The config of write_year_archive's sources (unset credentials: nothing is polled)."""
    sources = ([{"name": n, "kind": "wiresocket", "region": "eu",
                 "token_env": "USAGE_ETL_TEST_UNSET_TOKEN"}
                for n in YEAR_WIRESOCKET]
               + [{"name": n, "kind": "nected", "api_key_env": "USAGE_ETL_TEST_UNSET_KEY"}
                  for n in YEAR_NECTED])
    return {"database_url": database_url, "timezone": "UTC", "sources": sources}


def fill_disk(folder: Path) -> None:
    """Write into `folder` until its file system has no byte left."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
        try:
            while True:  # the last partial block
                fh.write(b"\0")
        except OSError:
            pass


# --- vendor plugins (entry-point group usage_etl.vendors) ------------------------------------

PLUGIN_SOURCE = os.path.join(os.path.dirname(__file__), "plugin_acme")


def make_plugin_site(folder: os.PathLike[str] | str, *, broken: bool = False,
                     other_apis: bool = False) -> str:
    """Build a folder holding the example plugin `acme-usage` as pip would install it.

    The folder (for sys.path / PYTHONPATH) gets tests/plugin_acme's module and its
    .dist-info metadata with the `usage_etl.vendors` entry point. With `broken`, also a
    plugin `broken-usage` whose module fails to import. With `other_apis`, also `acme1`
    (written for plugin API 1) and `acmebad` (a parse of neither API). Returns the folder.
    """
    import shutil

    site = os.fspath(folder)
    os.makedirs(site, exist_ok=True)
    shutil.copy(os.path.join(PLUGIN_SOURCE, "acme_usage.py"), site)
    plugins = [("acme-usage", "acme_usage", "acme = acme_usage:KIND")]
    if broken:
        with open(os.path.join(site, "broken_usage.py"), "w", encoding="utf-8") as fh:
            fh.write("raise ImportError('broken_usage needs libacme 9, not installed')\n")
        plugins.append(("broken-usage", "broken_usage", "broken = broken_usage:KIND"))
    if other_apis:
        for dist, module, kind in (("acme-v1-usage", "acme_v1_usage", "acme1"),
                                   ("acme-bad-usage", "acme_bad_usage", "acmebad")):
            shutil.copy(os.path.join(PLUGIN_SOURCE, f"{module}.py"), site)
            plugins.append((dist, module, f"{kind} = {module}:KIND"))
    for dist, module, entry in plugins:
        info = os.path.join(site, f"{module}-0.1.0.dist-info")
        os.makedirs(info, exist_ok=True)
        with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as fh:
            fh.write(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as fh:
            fh.write(f"[usage_etl.vendors]\n{entry}\n")
        with open(os.path.join(info, "top_level.txt"), "w", encoding="utf-8") as fh:
            fh.write(module + "\n")
    return site


def load_plugin_site(site: str) -> tuple[dict[str, Any], list[Any]]:
    """The built-in kinds plus the plugins of `site` (make_plugin_site), and the failures.

    The site is on sys.path only while its entry points are read, so the process-wide
    registry other tests see never picks the plugins up.
    """
    import sys

    from etl.vendors import BUILT_IN_KINDS, PluginFailure, VendorKind, load_plugins

    found: dict[str, VendorKind] = dict(BUILT_IN_KINDS)
    failures: list[PluginFailure] = []
    sys.path.insert(0, site)
    try:
        load_plugins(found, failures)
    finally:
        sys.path.remove(site)
    return found, failures


# --- a vendor on loopback whose answers are raw bytes ----------------------------------------

Answer = Callable[[BaseHTTPRequestHandler], None]


def json_answer(body: Any, *, headers: Mapping[str, str] | None = None,
                raw: bytes | None = None) -> Answer:
    """An answer: 200 with `body` as JSON (or the bytes `raw`) and any extra `headers`."""
    data = raw if raw is not None else json.dumps(body).encode()

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    return answer


class LoopbackVendor:
    """A real HTTP server on 127.0.0.1 answering every GET with `answer(handler)`.

    An answer writes what it likes to `handler.wfile` (status line and headers too, byte by
    byte if it wants), so a test can play a vendor that lies or crawls. `requests` counts
    the GETs, `hangups` the answers the client stopped reading (a write failed); `url` is
    the server's base URL. `stop()` ends waits of answers that honour `stopping` (an Event).
    """

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer: Answer = answer or json_answer({})
        self.requests = 0
        self.hangups = 0
        self.stopping = threading.Event()
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                vendor.requests += 1
                try:
                    vendor.answer(self)
                except OSError:  # the client gave up: what a crawling answer expects
                    vendor.hangups += 1

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End crawling answers and stop serving."""
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


def http_json_toml(url: str, *, interval: float = 60, timeout: float = 5,
                   extra: str = "", name: str = "acme") -> str:
    """The TOML of one http_json source `name` on `url`: gauge `used` (limit `plan.limit`),
    and counter `tokens` with one series per item of `data` (key `model`, value `n`)."""
    return (f'[[sources]]\nname = "{name}"\nkind = "http_json"\nurl = "{url}/v1/usage"\n'
            f"interval_seconds = {interval}\ntimeout_seconds = {timeout}\n{extra}\n"
            '[[sources.metrics]]\nname = "used"\ntype = "gauge"\nvalue = "used"\n'
            'limit = "plan.limit"\n\n'
            '[[sources.metrics]]\nname = "tokens"\ntype = "counter"\neach = "data"\n'
            'key = "model"\nvalue = "n"\n')


def http_json_config(url: str, **options: Any) -> Config:
    """A config of the one source of `http_json_toml(url, **options)`."""
    return parse_config(tomllib.loads(http_json_toml(url, **options)))


# --- mail (aiosmtpd handlers) -----------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nothing listens on now (for servers that need one given)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts: (envelope, parsed message)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        from email import message_from_bytes
        from email.policy import default

        self.messages.append((envelope, message_from_bytes(envelope.content, policy=default)))
        return "250 OK"


def private_ca_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) in `folder`: a CA made now and a
    certificate for 127.0.0.1 it signed, with the openssl command."""
    import subprocess

    ca_key, ca, key, csr, cert = (folder / n for n in (
        "ca-key.pem", "ca.pem", "key.pem", "server.csr", "cert.pem"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        "/CN=usage-etl test CA", "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
        "-out", str(csr))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert))
    return ca, cert, key
