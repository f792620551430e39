"""Reading a usage history endpoint (SPEC 10): a 90-day backfill of 50 series at hourly buckets.

Pages of 24 buckets (one day of 50 models each) are served by a child process, OpenAI's
shape with token paging. Figures, CPU time of this process only (the server is apart), the
product and its baseline timed in turns and compared by their medians:
- `page_cpu_ratio` (goal: at most 1.5): reading every page of the range as a poll does
  (`etl.collect.history.read_range`: the request with pacing, retries and the hung-connection
  watchdog, the JSON decode with its storable-text and depth checks, the buckets and their
  times, each item's series name normalized, the samples built) over a plain `requests` +
  `json` loop over the same pages that pulls out the same numbers (each bucket's start and
  end as times, each item's model and value). Storing is not reading: it is in the next
  figure, and `store_cpu_per_page_ms` gives it apart;
- `import_ratio` (goal: at least 0.8, as the import section's): a plain script's time over
  the product's to import those pages as archive lines into a fresh SQLite database (the
  script: json.loads each line, the rows of snapshots, samples and read ranges, sqlite3
  executemany in one transaction; the product: `usage-etl import`'s library call, which
  also keeps each bucket's latest fetch and its revisions).

    python -m benchmarks.history_bench [--days 90] [--series 50]
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import socket
import sqlite3
import time
import tomllib
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import parse_qs, urlsplit

START = datetime(2026, 8, 1, tzinfo=UTC)
CONFIG = """
[[sources]]
name = "bench"
kind = "http_json"
url = "{url}/v1/organization/usage/completions"
interval_seconds = 86400
max_requests_per_minute = 100000
params = {{ bucket_width = "1h", start_time = "{{start:unix}}", end_time = "{{end:unix}}" }}
[sources.window]
backfill = "{days}d"
step = "{days}d"
align = "1h"
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
"""


def page_body(day: int, days: int, series: int) -> bytes:
    """Day `day`'s page: 24 hourly buckets of `series` models."""
    base = int((START + timedelta(days=day)).timestamp())
    data = [{"object": "bucket", "start_time": base + 3600 * h, "end_time": base + 3600 * (h + 1),
             "results": [{"object": "organization.usage.completions.result",
                          "model": f"model-{m:02d}", "output_tokens": (day * 31 + h * 7 + m) % 991,
                          "input_tokens": 0, "num_model_requests": 1} for m in range(series)]}
            for h in range(24)]
    more = day + 1 < days
    return json.dumps({"object": "page", "data": data, "has_more": more,
                       "next_page": f"p{day + 1}" if more else None}).encode()


def serve(port: int, days: int, series: int) -> None:
    """Answer every page request from bodies built once (run in a child process)."""
    bodies = [page_body(d, days, series) for d in range(days)]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the base's name
            cursor = parse_qs(urlsplit(self.path).query).get("page", ["p0"])[-1]
            body = bodies[int(cursor[1:])]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)


def plain_read(url: str) -> list[tuple[Any, ...]]:
    """The baseline: every page with requests + json, and the numbers pulled out of it."""
    import requests

    rows: list[tuple[Any, ...]] = []
    with requests.Session() as session:
        cursor: str | None = "p0"
        while cursor is not None:
            body = session.get(f"{url}/v1/organization/usage/completions",
                               params={"page": cursor}, timeout=30).json()
            for bucket in body["data"]:
                start = datetime.fromtimestamp(bucket["start_time"], UTC)
                end = datetime.fromtimestamp(bucket["end_time"], UTC)
                for item in bucket["results"]:
                    rows.append((start, end, item["model"], float(item["output_tokens"])))
            cursor = body["next_page"] if body["has_more"] else None
    return rows


def _micros(text: str) -> int:
    at = datetime.fromisoformat(text)
    return (at - EPOCH) // timedelta(microseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def plain_import(archive: Path, db: Path, ids: dict[str, int]) -> int:
    """The baseline import: json.loads each line, its rows, sqlite3 executemany; samples stored."""
    snaps: list[tuple[Any, ...]] = []
    samples: list[tuple[Any, ...]] = []
    reads: dict[tuple[int, int], int] = {}
    with archive.open("rb") as fh:
        for k, line in enumerate(fh, 1):
            doc = json.loads(line)
            at = _micros(doc["observed_at"])
            window = (_micros(doc["window"]["start"]), _micros(doc["window"]["end"]))
            reads[window] = max(reads.get(window, at), at)
            snaps.append((k, doc["source"], "http_json", at, at, "import",
                          json.dumps(doc["body"]), *window))
            for bucket in doc["body"]["data"]:
                start, end = bucket["start_time"] * 1_000_000, bucket["end_time"] * 1_000_000
                for item in bucket["results"]:
                    samples.append((ids[item["model"]], start, end,
                                    float(item["output_tokens"]), at, 0))
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    with con:
        con.executemany("INSERT INTO snapshots (id, source, kind, observed_at, received_at, "
                        "origin, payload, window_start, window_end) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", snaps)
        con.executemany("INSERT INTO samples (series_id, observed_at, bucket_end, value, "
                        "fetched_at, revisions) VALUES (?, ?, ?, ?, ?, ?)",
                        samples)
        con.executemany("INSERT INTO history_reads (source, start_at, end_at, read_at) "
                        "VALUES ('bench', ?, ?, ?)", [(*w, at) for w, at in reads.items()])
    con.close()
    return len(samples)


def run(workdir: Path, *, days: int = 90, series: int = 50, rounds: int = 3,
        log: Any = print) -> dict[str, Any]:
    """Both figures (medians of `rounds` turns), with the sizes and the raw times."""
    from benchmarks.common import sqlite_engine
    from etl.collect.history import read_range
    from etl.collect.pacing import PacerRegistry
    from etl.collect.poll import Collector
    from etl.config import parse_config
    from etl.store.archive import import_archives
    from etl.store.history import store_history
    from etl.store.rows import forget_series_cache, series_ids
    from etl.vendors.types import MetricType, SampleValue

    port = _free_port()
    child = multiprocessing.Process(target=serve, args=(port, days, series), daemon=True)
    child.start()
    _wait(port)
    url = f"http://127.0.0.1:{port}"
    end = START + timedelta(days=days)
    product: list[float] = []
    plain: list[float] = []
    store: list[float] = []
    try:
        config = parse_config(tomllib.loads(CONFIG.format(url=url, days=days)))
        (source,) = config.sources
        read_range(Collector([source], pacers=PacerRegistry()), source, START, end,
                   time.monotonic() + 3600)  # warm: imports and compiled expressions
        plain_read(url)
        read, rows = None, []
        for i in range(rounds):
            # Each timed part starts from the same heap: the last round's pages and rows let
            # go and collected (the garbage collector's passes grow with what is alive).
            read = None
            gc.collect()
            t0 = time.process_time()
            with Collector([source], pacers=PacerRegistry()) as collector:
                read = read_range(collector, source, START, end, time.monotonic() + 3600)
            product.append(time.process_time() - t0)
            rows = []
            gc.collect()
            t0 = time.process_time()
            rows = plain_read(url)
            plain.append(time.process_time() - t0)
            assert len(rows) == sum(len(p.samples) for p in read.pages), len(rows)
            engine = sqlite_engine(workdir / f"history-store-{i}.db")
            t0 = time.process_time()
            with engine.begin() as conn:
                store_history(conn, read.pages)
            store.append(time.process_time() - t0)
            forget_series_cache(engine)
            engine.dispose()
        assert read is not None
        pages = read.pages
        log(f"history: read {len(pages)} pages of {24 * series} samples, {rounds} round(s)")
    finally:
        child.terminate()
    archive = workdir / "history-pages.jsonl"
    with archive.open("w") as fh:
        for page in pages:
            fh.write(json.dumps({
                "source": "bench", "observed_at": page.observed_at.isoformat(),
                "window": {"start": START.isoformat(), "end": end.isoformat()},
                "body": json.loads(page.payload)}) + "\n")
    names = [f"output_tokens:model-{m:02d}" for m in range(series)]
    imports: list[float] = []
    scripts: list[float] = []
    stored = 0
    for i in range(rounds):
        engine = sqlite_engine(workdir / f"history-import-{i}.db")
        t0 = time.perf_counter()
        stored = import_archives(engine, config, [str(archive)]).samples
        imports.append(time.perf_counter() - t0)
        forget_series_cache(engine)
        engine.dispose()
        db = workdir / f"history-script-{i}.db"
        engine = sqlite_engine(db)
        with engine.begin() as conn:  # the script needs the same series keys
            ids = series_ids(conn, "bench", "http_json", [
                SampleValue(n, 0.0, metric_type=MetricType.INTERVAL) for n in names])
        forget_series_cache(engine)
        engine.dispose()
        t0 = time.perf_counter()
        written = plain_import(archive, db, {n.split(":", 1)[1]: ids[n] for n in names})
        scripts.append(time.perf_counter() - t0)
        assert written == stored, (written, stored)
    archive.unlink()
    n = len(pages)
    product_s, plain_s, store_s = median(product), median(plain), median(store)
    import_s, script_s = median(imports), median(scripts)
    log(f"history: imported {stored:,} samples")
    return {"days": days, "series": series, "pages": n, "samples_per_page": 24 * series,
            "rounds": rounds, "product_cpu_s": product, "plain_cpu_s": plain,
            "store_cpu_s": store, "import_s": imports, "script_s": scripts,
            "product_cpu_per_page_ms": product_s / n * 1000,
            "plain_cpu_per_page_ms": plain_s / n * 1000,
            "store_cpu_per_page_ms": store_s / n * 1000,
            "page_cpu_ratio": product_s / plain_s,
            "import_pages_per_s": n / import_s, "script_pages_per_s": n / script_s,
            "import_ratio": script_s / import_s, "import_samples": stored}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.history_bench", description=__doc__)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--series", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=".")
    args = ap.parse_args(argv)
    print(json.dumps(run(Path(args.workdir), days=args.days, series=args.series,
                         rounds=args.rounds), indent=2))


if __name__ == "__main__":
    main()
