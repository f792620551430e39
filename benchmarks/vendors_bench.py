"""The cost of an `http_json` source against the built-in kind it imitates (docs/vendors.md twins).

Same responses, same run: the simulated WireSocket and Nected traffic is imported, and the
simulator polled, once through the built-in kinds and once through their `http_json` twins
(the TOML blocks of docs/vendors.md). Figures are CPU seconds (this process: parse, store,
HTTP client and the in-process simulator alike) per archive line and per poll, as the ratio
twin / built-in; each side is the best of `repeats` alternating runs.

`python -m benchmarks.vendors_bench [--lines N] [--polls N]` prints the figures alone.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import sqlite_engine
from etl.collect.http import PacerRegistry
from etl.collect.poll import Collector
from etl.config import Config, SourceConfig, parse_config
from etl.runtime.simulated_apis import generate_archive
from etl.runtime.simulator import SimulatedVendor
from etl.store.archive import import_archives
from etl.store.archive_line import parse_line
from etl.store.rows import forget_series_cache

DOC = Path(__file__).resolve().parents[1] / "docs" / "vendors.md"
BUILT_IN = """
[[sources]]
name = "ws-prod"
kind = "wiresocket"
base_url = "http://127.0.0.1:1"
token_env = "BENCH_WS_TOKEN"
interval_seconds = 60

[[sources]]
name = "rules"
kind = "nected"
base_url = "http://127.0.0.1:1"
api_key_env = "BENCH_NECTED_KEY"
interval_seconds = 60
"""
UNPACED = 10**9


def _twin_text() -> str:
    blocks = re.findall(r"```toml\n(# twin: \w+\n.*?)```", DOC.read_text(), re.S)
    return "\n".join(blocks).replace('"WIRESOCKET_TOKEN"', '"BENCH_WS_TOKEN"').replace(
        '"NECTED_API_KEY"', '"BENCH_NECTED_KEY"')


def configs(db: Path) -> tuple[Config, Config]:
    """(built-in, twin) configs with the same source names."""
    def make(text: str, name: str) -> Config:
        return parse_config({**tomllib.loads(text), "database_url": f"sqlite:///{db}-{name}"})

    return make(BUILT_IN, "built_in"), make(_twin_text(), "twin")


def _cpu(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench_import(built_in: Config, twin: Config, archive: Path, workdir: Path, lines: int,
                 repeats: int) -> dict[str, Any]:
    """CPU per archive line: `import` as a whole (parse and store), and parsing alone."""
    raw = archive.read_bytes().splitlines()
    out: dict[str, Any] = {"lines": lines}
    for what in ("import", "parse"):
        best: dict[str, float] = {}
        for i in range(repeats):
            for name, cfg in (("built_in", built_in), ("twin", twin)):
                if what == "import":
                    engine = sqlite_engine(workdir / f"vendors-{name}-{i}.db")

                    def run(engine: Any = engine, cfg: Config = cfg) -> None:
                        result = import_archives(engine, cfg, [str(archive)],
                                                 on_problem=lambda m: None)
                        assert result.ok and result.snapshots == lines, result.summary()

                    cpu = _cpu(run)
                    forget_series_cache(engine)
                    engine.dispose()
                else:
                    sources = {s.name: s for s in cfg.sources}
                    cpu = _cpu(lambda sources=sources: [parse_line(r, sources) for r in raw])
                best[name] = min(best.get(name, cpu), cpu)
        out[f"{what}_us_per_line"] = {k: v / lines * 1e6 for k, v in best.items()}
        out[f"{what}_ratio"] = best["twin"] / best["built_in"]
    return out


def bench_polls(built_in: Config, twin: Config, polls: int, repeats: int) -> dict[str, Any]:
    """CPU per poll of the simulator (HTTP, parse; both ends are in this process)."""
    import os

    token, key = "bench-token-vendors", "bench-key-vendors"
    os.environ["BENCH_WS_TOKEN"], os.environ["BENCH_NECTED_KEY"] = token, key
    best: dict[str, float] = {}
    with SimulatedVendor(tokens=(token,), api_keys=(key,),
                         rates={"wiresocket": (UNPACED, 60.0), "nected": (UNPACED, 60.0)}) as sim:
        sides = {"built_in": [_unpaced(s, sim.base_url) for s in built_in.sources],
                 "twin": [_unpaced(s, sim.base_url) for s in twin.sources]}
        for _ in range(repeats):
            for name, sources in sides.items():
                with Collector(sources, pacers=PacerRegistry()) as collector:
                    def run(sources: list[SourceConfig] = sources,
                            collector: Collector = collector) -> None:
                        for _ in range(polls // len(sources)):
                            for src in sources:
                                assert collector.poll(src).ok

                    cpu = _cpu(run)
                best[name] = min(best.get(name, cpu), cpu)
    return {"polls": polls, "us_per_poll": {k: v / polls * 1e6 for k, v in best.items()},
            "ratio": best["twin"] / best["built_in"]}


def _unpaced(src: SourceConfig, base_url: str) -> SourceConfig:
    """The source pointed at the simulator, its request budget lifted (pacing is not measured)."""
    if src.bound is None:
        return replace(src, base_url=base_url,
                       bound=replace(src.vendor, rate_limit=(UNPACED, 60.0)))
    path = "/usage" if src.name == "ws-prod" else "/dev/usage"
    raw = src.vendor
    return replace(src, bound=replace(raw, url=lambda b, r: base_url + path,
                                      rate_limit=(UNPACED, 60.0)))


def run(workdir: Path, *, lines: int, polls: int, repeats: int,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    built_in, twin = configs(workdir / "vendors.db")
    archive = workdir / "vendors.jsonl"
    start = datetime(2026, 11, 2, tzinfo=UTC)
    step = 60.0
    span = timedelta(seconds=step * lines / 2)
    with archive.open("w", encoding="utf-8") as fh:
        for line in generate_archive(built_in.sources, start, start + span, step, seed=3):
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    log(f"vendors: {lines:,} archive lines and {polls} polls, built-in kinds vs http_json twins")
    result = {"import": bench_import(built_in, twin, archive, workdir, lines, repeats),
              "poll": bench_polls(built_in, twin, polls, repeats)}
    archive.unlink()
    return result


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m benchmarks.vendors_bench")
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--polls", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="usage-etl-vendors-") as folder:
        result = run(Path(folder), lines=args.lines, polls=args.polls, repeats=args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
