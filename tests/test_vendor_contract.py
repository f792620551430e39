"""The contract every kind keeps (SPEC 4, 5, 7): built in, from a plugin, defined in config.

For each kind: its example body parses; a bad value is refused with a clear reason; a
missing, null or -1 limit is stored as no limit; the secret travels only in a header and
shows in no log, error, row or file; archive lines round-trip through export and import.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from etl.cli import cli
from etl.collect.http import PacerRegistry
from etl.collect.poll import Collector
from etl.config import Config, SourceConfig
from etl.errors import ParseError
from etl.store.engine import make_engine, upgrade
from etl.store.models import Sample, Series
from etl.store.rows import forget_series_cache
from etl.store.writer import record_polls
from etl.vendors import KINDS, VendorKind
from etl.vendors.http_json import EXAMPLE_BODY, EXAMPLE_SOURCE
from etl.vendors.parse_api import ParseContext
from tests.factories import load_plugin_site, make_plugin_site

SECRET = "s3cr3t-contract-9d1e7a"
RECEIVED = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """A kind under test: a config table for one source of it, where its value and limit are."""

    kind: str
    table: dict[str, Any]
    example: Any
    value: tuple[str, ...]
    limit: tuple[str, ...] | None


def _plugin_kinds() -> dict[str, VendorKind]:
    """The built-in kinds plus the example plugin, loaded from a site made for it."""
    found, failures = load_plugin_site(
        make_plugin_site(tempfile.mkdtemp(prefix="usage-etl-plugin-")))
    assert failures == [], failures
    return found


ALL_KINDS = _plugin_kinds()
CASES = [
    Case("wiresocket", {"base_url": "http://h", "token_env": "K"},
         ALL_KINDS["wiresocket"].example_body, ("usage", "connections", "current"),
         ("usage", "connections", "limit")),
    Case("nected", {"base_url": "http://h", "api_key_env": "K"},
         ALL_KINDS["nected"].example_body, ("data", "invocations"), None),
    Case("http_json", {**EXAMPLE_SOURCE, "token_env": "K"}, EXAMPLE_BODY,
         ("totals", "calls"), ("plan", "calls_limit")),
    Case("acme", {"base_url": "http://h", "token_env": "K"}, ALL_KINDS["acme"].example_body,
         ("calls",), ("calls_limit",)),
]
IDS = [c.kind for c in CASES]


@pytest.fixture(autouse=True)
def plugin_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin kind in the registry, as if installed when the process started."""
    monkeypatch.setitem(KINDS, "acme", ALL_KINDS["acme"])


def source_of(case: Case, name: str = "src", **table: Any) -> SourceConfig:
    """The source a config with one `case` entry gives (built with the plugin registered)."""
    raw = {"name": name, "kind": case.kind, **case.table, **table}
    kind = ALL_KINDS[case.kind]
    if kind.configure is not None:
        bound = kind.configure(raw, f"sources.{name}", problems := [])
        assert bound is not None, problems
        return SourceConfig(name=name, kind=case.kind, interval_seconds=60, bound=bound,
                            base_url=raw.get("base_url"), secret_env=raw.get("token_env"))
    env_key, _ = kind.secret_keys
    return SourceConfig(name=name, kind=case.kind, interval_seconds=60, bound=kind,
                        base_url=raw.get("base_url"), secret_env=raw.get(env_key))


def with_value(body: Any, path: tuple[str, ...], value: Any, *, drop: bool = False) -> Any:
    body = copy.deepcopy(body)
    node = body
    for key in path[:-1]:
        node = node[key]
    if drop:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return body


def parse(case: Case, body: Any) -> Any:
    return source_of(case).vendor.parse(body, ParseContext("src", received_at=RECEIVED))


def test_the_example_plugin_loaded_without_failures() -> None:
    assert "acme" in ALL_KINDS and ALL_KINDS["acme"].provider == "plugin acme-usage 0.1.0"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_example_body_parses_into_every_fixed_metric(case: Case) -> None:
    obs = parse(case, case.example)
    vendor = source_of(case).vendor
    assert obs.source == "src" and obs.kind == case.kind
    assert {s.metric for s in obs.samples} >= set(vendor.metrics)
    assert all(math.isfinite(s.value) and s.value >= 0 for s in obs.samples)
    assert obs.observed_at.tzinfo is not None


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize(("bad", "reason"), [
    (None, "missing"), (-1, "0 or more"), (math.nan, "finite"), (math.inf, "finite"),
    ("12", "must be a number"), (True, "must be a number"),
])
def test_a_missing_negative_non_finite_or_non_numeric_value_is_refused(
        case: Case, bad: Any, reason: str) -> None:
    body = with_value(case.example, case.value, bad, drop=bad is None)
    with pytest.raises(ParseError) as err:
        parse(case, body)
    assert reason in str(err.value)
    assert case.value[-1] in str(err.value)  # names the field that is wrong


@pytest.mark.parametrize("case", [c for c in CASES if c.limit], ids=[c.kind for c in CASES
                                                                      if c.limit])
@pytest.mark.parametrize("limit", ["drop", None, -1])
def test_a_missing_null_or_minus_one_limit_is_stored_as_no_limit(
        case: Case, limit: Any, tmp_path: Path) -> None:
    assert case.limit is not None
    body = with_value(case.example, case.limit, limit, drop=limit == "drop")
    parse(case, body)
    stored = _import_and_read(_config(case, tmp_path / "l.db"), _archive(case, body, tmp_path))
    value = _at(case.example, case.value)
    metric = case.value[-2] if case.kind == "wiresocket" else None
    row = next(r for r in stored if metric is None or r[0] == metric)
    assert (row[3], row[4]) == (value, None)  # the reading kept, no limit


def _at(body: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


def _config(case: Case, db: Path) -> Config:
    return Config(database_url=f"sqlite:///{db}", sources=(source_of(case),))


def _archive(case: Case, body: Any, folder: Path) -> Path:
    line = {"source": "src", "body": body}
    if not source_of(case).vendor.time_in_body:
        line["observed_at"] = "2026-11-21T10:00:00Z"
    archive = folder / "in.jsonl"
    archive.write_text(json.dumps(line) + "\n")
    return archive


class Recorder:
    """A loopback vendor answering every GET with `body` (or 500 quoting the credential)."""

    def __init__(self) -> None:
        self.body: Any = None
        self.seen: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.seen.append((self.path, dict(self.headers)))
                quoted = " ".join(v for v in self.headers.values())
                status, payload = (500, {"error": f"internal, your request said {quoted}"}) \
                    if outer.body is None else (200, outer.body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    found = Recorder()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_secret_goes_only_in_a_header_and_in_no_log_error_row_or_file(
        case: Case, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("K", SECRET)
    table = ({"url": recorder.base_url + "/v2/usage"} if case.kind == "http_json"
             else {"base_url": recorder.base_url})
    src = source_of(case, **table)
    engine = make_engine(f"sqlite:///{tmp_path / 'u.db'}")
    upgrade(engine)
    caplog.set_level(logging.DEBUG)
    with Collector([src], pacers=PacerRegistry(), sleep=lambda s: None) as collector:
        failed = collector.poll(src)
        recorder.body = case.example
        ok = collector.poll(src)
    assert not failed.ok and ok.ok, (failed.error, ok.error)
    record_polls(engine, [failed, ok])
    path, headers = recorder.seen[-1]
    assert SECRET not in path
    assert [k for k, v in headers.items() if SECRET in v] != []
    assert SECRET not in (failed.error or "") and SECRET not in caplog.text
    with engine.connect() as conn:
        dump = "\n".join(str(row) for table_name in ("snapshots", "samples", "series",
                                                     "collection_attempts")
                         for row in conn.execute(text(f"SELECT * FROM {table_name}")))  # noqa: S608
    assert dump and SECRET not in dump
    forget_series_cache(engine)
    engine.dispose()
    assert SECRET.encode() not in (tmp_path / "u.db").read_bytes()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_archive_lines_round_trip_through_export_and_import(
        case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_one = _config(case, tmp_path / "a.db")
    stored = _import_and_read(config_one, _archive(case, case.example, tmp_path))
    assert stored, "the example stored samples"

    exported = tmp_path / "out.jsonl"
    _export(config_one, exported)
    config_two = replace(config_one, database_url=f"sqlite:///{tmp_path / 'b.db'}")
    assert _import_and_read(config_two, exported) == stored


def _import_and_read(config: Config, archive: Path) -> list[tuple[Any, ...]]:
    from etl.store.archive import import_archives

    engine = make_engine(config.database_url)
    upgrade(engine)
    result = import_archives(engine, config, [str(archive)])
    assert result.ok and result.bad_lines == 0, result.summary()
    with engine.connect() as conn:
        rows = conn.execute(
            select(Series.metric, Series.metric_type, Sample.observed_at, Sample.value,
                   Sample.plan_limit, Sample.status)
            .join(Sample, Sample.series_id == Series.id).order_by(Series.metric)).all()
    forget_series_cache(engine)
    engine.dispose()
    return [tuple(r) for r in rows]


def _export(config: Config, out: Path) -> None:
    from datetime import date

    from etl.store.export import export_archive

    engine = make_engine(config.database_url)
    with out.open("w", encoding="utf-8") as fh:
        assert export_archive(engine, config, date(2020, 1, 1), date(2030, 1, 1), fh) > 0
    engine.dispose()


def test_usage_etl_vendors_lists_every_kind_with_its_metrics_and_keys() -> None:
    result = CliRunner().invoke(cli, ["--config", "/dev/null/none.toml", "vendors"])
    # An explicit config that does not exist is refused only after the kinds are listed.
    assert "wiresocket (built in)" in result.output
    assert "  metrics: connections (gauge), documents (gauge)" in result.output
    assert "  config keys: base_url, region, token_env | token_file" in result.output
    assert "  metrics: invocations (counter)" in result.output
    assert "  config keys: base_url, api_key_env | api_key_file" in result.output
    assert ("  config keys: auth, auth_header, auth_prefix, buckets, headers, "
            "max_requests_per_minute, metrics, ok_when, page, params, secret_headers, timestamp, "
            "url, username, username_env, window, token_env | token_file (optional)"
            ) in result.output


def test_usage_etl_vendors_lists_the_configs_http_json_sources(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    lines = ["[[sources]]", 'name = "acme"', 'kind = "http_json"']
    for key, value in EXAMPLE_SOURCE.items():
        if key != "metrics":
            lines.append(f"{key} = {json.dumps(value)}")
    for metric in EXAMPLE_SOURCE["metrics"]:
        lines.append("[[sources.metrics]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in metric.items())
    config.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["--config", str(config), "vendors"])
    assert result.exit_code == 0, result.output
    assert ("  acme (http_json): api_calls (counter), tokens:KEY (counter, one series per item)"
            in result.output)
