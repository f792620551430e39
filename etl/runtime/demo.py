"""`usage-etl demo`: the whole pipeline, offline, on a fresh SQLite file and a simulated vendor."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from etl.collect.poll import Collector
from etl.config import Config, parse_config
from etl.runtime.alerting import CheckResult, check
from etl.runtime.collect_run import collect_once
from etl.runtime.history_sim import CREDENTIALS as HISTORY_CREDENTIALS
from etl.runtime.history_sim import HistorySimulator
from etl.runtime.receiver import WebhookReceiver
from etl.runtime.simulated_apis import generate_archive
from etl.runtime.simulator import SimulatedVendor
from etl.store.archive import ImportResult, import_archives
from etl.store.engine import make_engine, upgrade
from etl.store.models import Series
from etl.store.packs import samples_from
from etl.store.rows import forget_series_cache
from etl.vendors.types import PollRecord

DEFAULT_DIR = "usage-etl-demo"
WS_TOKEN_ENV = "USAGE_ETL_DEMO_WIRESOCKET_TOKEN"
NECTED_KEY_ENV = "USAGE_ETL_DEMO_NECTED_API_KEY"
PROJECTS_TOKEN_ENV = "USAGE_ETL_DEMO_PROJECTS_TOKEN"
WEBHOOK_ENV = "USAGE_ETL_DEMO_WEBHOOK_URL"
HISTORY_TOKEN_ENV = "USAGE_ETL_DEMO_OPENAI_ADMIN_KEY"
DEMO_TIMEZONE = "Europe/Berlin"

ReportBuilder = Callable[[Engine, Config, Path], list[Path]]


@dataclass
class DemoResult:
    """Where the demo put everything, and what it did."""

    directory: Path
    database: Path
    config: Path
    archive: Path
    report_dir: Path
    imported: ImportResult
    polls: list[list[PollRecord]] = field(default_factory=list)
    alerts: CheckResult | None = None
    received: list[dict[str, Any]] = field(default_factory=list)  # what the webhook got
    reports: list[Path] = field(default_factory=list)


def demo_config_text(database: Path, base_url: str, reports_dir: Path,
                     credit_granted: date | None = None,
                     history_url: str = "http://127.0.0.1:9") -> str:
    """The demo's usage-etl.toml: four simulated sources, secrets in environment variables.

    The fourth reads a usage history endpoint (SPEC 10) shaped like OpenAI's, served by the
    history simulator at `history_url`, one series per model, billed on `sum`.

    The third vendor has no kind of its own: it is described in the config alone
    (`kind = "http_json"`, SPEC 7), one series per project. The `projects` source is paid from
    a prepaid credit (SPEC 11) granted on `credit_granted` (default: the first of last
    month, before the demo's history begins).
    """
    url = f"sqlite:///{database.resolve()}"
    if credit_granted is None:
        today = datetime.now(UTC).date()
        credit_granted = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    return f"""\
# Written by `usage-etl demo`. The sources point at the simulated vendor the demo ran;
# start one again with `usage-etl simulate --port PORT --token T --api-key K`, update
# base_url and url, and export {WS_TOKEN_ENV}, {PROJECTS_TOKEN_ENV} (both T)
# and {NECTED_KEY_ENV} (K) to collect more. The history source needs the same
# simulator started with `--history-port HPORT`, the port in its url changed to HPORT, and
# {HISTORY_TOKEN_ENV} exported as "{HISTORY_CREDENTIALS["bearer"]}" (the simulator's fixed token).
database_url = {json.dumps(url)}
timezone = "{DEMO_TIMEZONE}"
reports_dir = {json.dumps(str(reports_dir.resolve()))}

[[sources]]
name = "ws-prod"
kind = "wiresocket"
base_url = "{base_url}"
token_env = "{WS_TOKEN_ENV}"
interval_seconds = 60

[[sources]]
name = "rules"
kind = "nected"
base_url = "{base_url}"
api_key_env = "{NECTED_KEY_ENV}"
interval_seconds = 300

# A vendor usage-etl has no kind for, added from config alone: its usage endpoint lists
# per-project usage, and `each` makes one series per project (requests:web-app, ...).
[[sources]]
name = "projects"
kind = "http_json"
url = "{base_url}/v1/projects/usage"
token_env = "{PROJECTS_TOKEN_ENV}"
interval_seconds = 300
max_requests_per_minute = 30
timestamp = "generated_at"
ok_when = "status == 'ok'"

[[sources.metrics]]
name = "requests"
type = "counter"
each = "projects"
key = "id"
value = "requests"

[[sources.metrics]]
name = "storage_gb"
type = "gauge"
each = "projects"
key = "id"
value = "storage_gb"
limit = "quota_gb"

# A usage history endpoint (OpenAI's shape): daily buckets per model, asked for by time
# range, page by page; recent days are read again (lookback) as the vendor revises them.
[[sources]]
name = "openai-usage"
kind = "http_json"
url = "{history_url}/v1/organization/usage/completions"
token_env = "{HISTORY_TOKEN_ENV}"
interval_seconds = 3600
params = {{ bucket_width = "1d", group_by = "model", start_time = "{{start:unix}}", end_time = "{{end:unix}}" }}

[sources.window]
backfill = "30d"
lookback = "2d"
align = "1d"

[sources.page]
token = "next_page"
param = "page"
more = "has_more"

[sources.buckets]
each = "data"
start = "start_time"
end = "end_time"

[[sources.metrics]]
name = "output_tokens"
type = "interval"
each = "results"
key = "model"
value = "output_tokens"

[[billing]]
source = "rules"
metric = "invocations"
aggregation = "increase"
included = 100000
unit_price = "0.002"
currency = "USD"

[[billing]]
source = "ws-prod"
metric = "connections"
aggregation = "peak"
included = 100
unit_price = "0.50"
currency = "USD"

[[billing]]
source = "projects"
metric = "requests:web-app"
aggregation = "increase"
included = 50000
unit_price = "0.0005"
currency = "USD"

# The history vendor, billed on the sum of its buckets (SPEC 10).
[[billing]]
source = "openai-usage"
metric = "output_tokens:gpt-4o"
aggregation = "sum"
included = 1000
unit_price = "0.01"
currency = "USD"

# Paid in advance: the billing report shows what it paid, its balance and when it runs out.
[[credits]]
name = "projects-prepaid"
source = "projects"
amount = "400.00"
currency = "USD"
granted = {credit_granted:%Y-%m-%d}

# The demo's own webhook receiver on loopback (export {WEBHOOK_ENV} to use it again).
[[notifiers]]
name = "demo-hook"
kind = "webhook"
url_env = "{WEBHOOK_ENV}"

# Low on purpose, so that it fires during the demo; a real one would say 90 (docs/alerts.md).
[[alerts]]
name = "ws-connections-demo"
source = "ws-prod"
metric = "connections"
above_pct = 1
notify = ["demo-hook"]
"""


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_demo(
    directory: Path | str = DEFAULT_DIR,
    *,
    days: int = 28,
    rounds: int = 3,
    seed: int = 42,
    build_reports: ReportBuilder | None = None,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Fresh database, simulator, history through import, live polls, then reports.

    `build_reports(engine, config, out_dir)` builds the reports and returns their paths;
    without one the demo prints a per-source summary instead.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "usage.db"
    for stale in (database, folder / "usage.db-wal", folder / "usage.db-shm"):
        stale.unlink(missing_ok=True)
    config_path = folder / "usage-etl.toml"
    archive = folder / "history.jsonl"
    report_dir = folder / "reports-out"
    # Fresh random credentials: the demo's own simulator is the only one that knows them.
    token, api_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    started = time.monotonic()

    with WebhookReceiver() as receiver, _environ(
        {WS_TOKEN_ENV: token, PROJECTS_TOKEN_ENV: token, NECTED_KEY_ENV: api_key,
         WEBHOOK_ENV: receiver.url, HISTORY_TOKEN_ENV: HISTORY_CREDENTIALS["bearer"]}
    ), SimulatedVendor(port=0, tokens=(token,), api_keys=(api_key,), seed=seed) as sim, \
            HistorySimulator() as history_sim:
        config_path.write_text(demo_config_text(database, sim.base_url, report_dir,
                                                history_url=history_sim.url),
                               encoding="utf-8")
        # Parsed directly, so $USAGE_ETL_DATABASE_URL cannot point the demo at a real database.
        with config_path.open("rb") as fh:
            config = parse_config(tomllib.load(fh), str(config_path))
        engine = make_engine(config.database_url)
        try:
            upgrade(engine)
            echo(f"database:  {database.resolve()} (fresh, migrated)")
            paths = ", ".join(f"{name} {api.path}" for name, api in sim.apis.items())
            echo(f"simulator: {sim.base_url} ({paths})")

            now = datetime.now(UTC)
            start = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)
            end = now - timedelta(minutes=1)
            with archive.open("w", encoding="utf-8") as fh:
                snapshots = [s for s in config.sources if s.vendor.history is None]
                for line in generate_archive(snapshots, start, end, seed=seed):
                    fh.write(json.dumps(line, separators=(",", ":")) + "\n")
            imported = import_archives(engine, config, [str(archive)])
            echo(f"history:   {days} days imported from {archive.resolve()}: "
                 f"{imported.summary()}")

            result = DemoResult(folder, database, config_path, archive, report_dir, imported)
            with Collector(config.sources) as collector:
                for i in range(rounds):
                    if i:
                        time.sleep(0.2)
                    polls = collect_once(engine, config, collector=collector)
                    result.polls.append(polls)
                    echo(f"collect round {i + 1}: " + ", ".join(
                        f"{p.source} {p.outcome} ({p.samples_stored} samples)" for p in polls))

            result.alerts = check(engine, config)
            for made in result.alerts.events:
                echo(f"alert:     {made}")
            result.received = list(receiver.received)
            echo(f"webhook:   {receiver.url} received {len(result.received)} notification(s)")
            for body in result.received:
                echo(f"  {json.dumps(body, ensure_ascii=False)}")

            if build_reports is not None:
                result.reports = build_reports(engine, config, report_dir)
                for path in result.reports:
                    echo(f"report:    {path.resolve()}")
            else:
                echo("reports:   the reports package is not available; stored history:")
                for status in _status_lines(engine):
                    echo("  " + status)
        finally:
            forget_series_cache(engine)
            engine.dispose()

    echo(f"config:    {config_path.resolve()}")
    echo(f"done in {time.monotonic() - started:.1f} s. Try:")
    again = f"{usage_etl_command()} --config {shlex.quote(str(config_path.resolve()))}"
    echo(f"  {again} report billing --month {now:%Y-%m}")
    echo(f"  {again} export --start {start:%Y-%m-%d} --end {now:%Y-%m-%d} --format csv")
    return result


def usage_etl_command() -> str:
    """usage-etl as a shell command that works when pasted into a new shell, anywhere.

    The console script next to this interpreter by its absolute path (scripts/demo.sh runs
    .venv/bin/usage-etl, which a new shell does not have on its PATH), else
    `PYTHON -m etl` with this interpreter.
    """
    script = Path(sys.executable).parent / "usage-etl"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script.absolute()))
    return f"{shlex.quote(sys.executable)} -m etl"


def _status_lines(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        s = samples_from(conn).c  # rows and packed days (etl.store.packs)
        rows = conn.execute(
            select(Series.source, Series.metric, func.count(), func.max(s.observed_at))
            .join(s.observed_at.table, s.series_id == Series.id)
            .group_by(Series.source, Series.metric)
            .order_by(Series.source, Series.metric)
        ).all()
    return [f"{source}/{metric}: {count} samples, last at {last}"
            for source, metric, count, last in rows]
