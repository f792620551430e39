"""History sources' archive lines (SPEC 10): `window`, import in any order, export JSONL and CSV."""

from __future__ import annotations

import io
import json
import tomllib
from datetime import date
from pathlib import Path

from sqlalchemy import Engine

from etl.config import Config, parse_config
from etl.store.archive import import_archives
from etl.store.export import export_archive

CONFIG = """
[[sources]]
name = "openai"
kind = "http_json"
url = "https://api.openai.com/v1/organization/usage/completions"
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
value = "output_tokens"
"""
# 2026-11-20T00:00Z and the hours after it.
T = 1795132800
WINDOW = {"start": "2026-11-20T00:00:00Z", "end": "2026-11-21T00:00:00Z"}


def _line(observed_at: str, buckets: list[tuple[int, dict[str, int]]], window: dict | None = WINDOW
          ) -> str:  # type: ignore[type-arg]
    body = {"object": "page", "data": [
        {"start_time": T + 3600 * h, "end_time": T + 3600 * (h + 1),
         "results": [{"model": m, "output_tokens": v} for m, v in values.items()]}
        for h, values in buckets]}
    line: dict[str, object] = {"source": "openai", "observed_at": observed_at}
    if window is not None:
        line["window"] = window
    line["body"] = body
    return json.dumps(line)


LINES = [
    _line("2026-11-20T03:00:05Z", [(0, {"gpt-4o": 100, "o1": 3}), (1, {"gpt-4o": 50})]),
    _line("2026-11-20T04:00:05Z", [(1, {"gpt-4o": 60}), (2, {"gpt-4o": 5})]),
]


def _config() -> Config:
    return parse_config(tomllib.loads(CONFIG))


def _import(engine: Engine, tmp_path: Path, lines: list[str], name: str = "a.jsonl") -> list[str]:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    problems: list[str] = []
    import_archives(engine, _config(), [str(path)], on_problem=problems.append)
    return problems


def _export(engine: Engine, fmt: str) -> str:
    out = io.StringIO()
    export_archive(engine, _config(), date(2026, 11, 19), date(2026, 11, 21), out, fmt)
    return out.getvalue()


def test_export_csv_gives_each_buckets_latest_fetch_with_its_bounds_and_revisions(
        engine: Engine, tmp_path: Path) -> None:
    assert _import(engine, tmp_path, LINES) == []
    assert _export(engine, "csv").splitlines() == [
        "observed_at,source,metric,value,limit,status,bucket_start,bucket_end,revisions",
        "2026-11-20T03:00:05Z,openai,tokens:gpt-4o,100,,,2026-11-20T00:00:00Z,2026-11-20T01:00:00Z,0",
        "2026-11-20T03:00:05Z,openai,tokens:o1,3,,,2026-11-20T00:00:00Z,2026-11-20T01:00:00Z,0",
        "2026-11-20T04:00:05Z,openai,tokens:gpt-4o,60,,,2026-11-20T01:00:00Z,2026-11-20T02:00:00Z,1",
        "2026-11-20T04:00:05Z,openai,tokens:gpt-4o,5,,,2026-11-20T02:00:00Z,2026-11-20T03:00:00Z,0",
    ]


def test_exported_pages_reimported_in_reverse_or_twice_export_the_same(
        engine: Engine, tmp_path: Path) -> None:
    _import(engine, tmp_path, LINES)
    jsonl = _export(engine, "jsonl")
    assert json.loads(jsonl.splitlines()[0])["window"] == WINDOW
    csv_text = _export(engine, "csv")
    lines = jsonl.splitlines()
    from tests.factories import reference_engine

    with reference_engine(engine, tmp_path) as fresh:
        _import(fresh, tmp_path, lines[::-1], "rev.jsonl")
        _import(fresh, tmp_path, lines, "again.jsonl")
        assert _export(fresh, "jsonl") == jsonl
        assert _export(fresh, "csv") == csv_text


def test_a_history_line_without_window_is_refused_and_the_others_kept(
        engine: Engine, tmp_path: Path) -> None:
    bad = _line("2026-11-20T05:00:05Z", [(3, {"gpt-4o": 1})], window=None)
    backwards = _line("2026-11-20T06:00:05Z", [(3, {"gpt-4o": 1})],
                      window={"start": WINDOW["end"], "end": WINDOW["start"]})
    problems = _import(engine, tmp_path, [LINES[0], bad, backwards])
    path = tmp_path / "a.jsonl"
    assert problems == [f"{path}:2: window: required for a history source",
                        f"{path}:3: window: end is not after start"]
    assert len(_export(engine, "csv").splitlines()) == 1 + 3  # header, three buckets
