"""Reading a usage history endpoint (SPEC 10): a 90-day backfill of 50 series at hourly buckets.

Pages of 24 buckets (one day of 50 models each) are served by a child process, OpenAI's
shape with token paging. Figures, CPU time of this process only (the server is apart):
- `page_cpu_ratio`: the product reading every range page by page (`etl.collect.history`:
  fetch with pacing and retries, JMESPath parse into bucket samples) over a plain
  `requests` + `json` loop over the same pages (goal: at most 1.5);
- `import_pages_per_s`: importing those pages as archive lines (`usage-etl import`'s
  library call) into a fresh SQLite database, and the samples it stored.

    python -m benchmarks.history_bench [--days 90] [--series 50]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import time
import tomllib
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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


def run(workdir: Path, *, days: int = 90, series: int = 50, rounds: int = 3) -> dict[str, Any]:
    """Both figures (medians of `rounds`), with the sizes."""
    import requests

    from etl.collect.history import read_range
    from etl.collect.pacing import PacerRegistry
    from etl.collect.poll import Collector
    from etl.config import parse_config
    from etl.store.archive import import_archives
    from etl.store.engine import make_engine, upgrade

    port = _free_port()
    child = multiprocessing.Process(target=serve, args=(port, days, series), daemon=True)
    child.start()
    _wait(port)
    url = f"http://127.0.0.1:{port}"
    try:
        config = parse_config(tomllib.loads(CONFIG.format(url=url, days=days)))
        (source,) = config.sources
        end = START + timedelta(days=days)
        product, plain, pages = [], [], []
        for _ in range(rounds):
            t0 = time.process_time()
            with Collector([source], pacers=PacerRegistry()) as collector:
                read = read_range(collector, source, START, end, time.monotonic() + 3600)
            product.append(time.process_time() - t0)
            pages = read.pages
            t0 = time.process_time()
            with requests.Session() as session:
                cursor: str | None = "p0"
                while cursor is not None:
                    body = session.get(f"{url}/v1/organization/usage/completions",
                                       params={"page": cursor}, timeout=30).json()
                    cursor = body["next_page"]
            plain.append(time.process_time() - t0)
        archive = workdir / "history-pages.jsonl"
        with archive.open("w") as fh:
            for page in pages:
                fh.write(json.dumps({
                    "source": "bench", "observed_at": page.observed_at.isoformat(),
                    "window": {"start": START.isoformat(), "end": end.isoformat()},
                    "body": json.loads(page.payload)}) + "\n")
        db = workdir / "history-bench.db"
        db.unlink(missing_ok=True)
        engine = make_engine(f"sqlite:///{db}")
        upgrade(engine)
        t0 = time.perf_counter()
        imported = import_archives(engine, config, [str(archive)])
        import_s = time.perf_counter() - t0
        engine.dispose()
    finally:
        child.terminate()
    product_s, plain_s = sorted(product)[rounds // 2], sorted(plain)[rounds // 2]
    return {"days": days, "series": series, "pages": len(pages),
            "samples_per_page": 24 * series,
            "product_cpu_per_page_ms": product_s / len(pages) * 1000,
            "plain_cpu_per_page_ms": plain_s / len(pages) * 1000,
            "page_cpu_ratio": product_s / plain_s,
            "import_s": import_s, "import_pages_per_s": len(pages) / import_s,
            "import_samples": imported.samples}


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
