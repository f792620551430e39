"""Figure 4: collector throughput against the simulator running in another process.

N sources (half WireSocket, half Nected), each with its own credential because the
vendor allows one credential 12 requests a minute, polled every 5 s (the smallest interval
the config allows, i.e. exactly that limit): N / 5 polls per second are due. The
collector's pacing never sends a credential more than its limit, so a round that starts
late would be delayed further; we report the lag. Baseline: a plain loop of
requests.get over other credentials on the same simulator (nothing stored).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

INTERVAL = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, n: int) -> None:
    """The simulator with 2 n tokens and 2 n keys (one set for us, one for the baseline)."""
    from etl.runtime.simulator import SimulatedVendor

    creds = [f"{p}-{i}" for p in ("tok", "base-tok") for i in range(n)]
    keys = [f"{p}-{i}" for p in ("key", "base-key") for i in range(n)]
    with SimulatedVendor(port=port, tokens=creds, api_keys=keys):
        print("ready", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def _config(n: int, base_url: str, db_url: str) -> tuple[Any, dict[str, str]]:
    from etl.config import Config, SourceConfig

    sources = []
    env = {}
    for i in range(n):
        if i % 2 == 0:
            sources.append(SourceConfig(name=f"ws-{i:04d}", kind="wiresocket", interval_seconds=INTERVAL,
                                        base_url=base_url, secret_env=f"BENCH_CRED_{i}"))
            env[f"BENCH_CRED_{i}"] = f"tok-{i}"
        else:
            sources.append(SourceConfig(name=f"nx-{i:04d}", kind="nected", interval_seconds=INTERVAL,
                                        base_url=base_url, secret_env=f"BENCH_CRED_{i}"))
            env[f"BENCH_CRED_{i}"] = f"key-{i}"
    return Config(database_url=db_url, sources=tuple(sources)), env


def run(n: int, rounds: int, workdir: Path, *, capacity_rounds: int = 3,
        log: Any = print) -> dict[str, Any]:
    """Poll n sources for `rounds` rounds, INTERVAL apart (the schedule); then the capacity
    against the plain baseline, interleaved, as medians of `capacity_rounds` turns each."""
    import requests
    from sqlalchemy import func, select

    from benchmarks.common import sqlite_engine
    from etl.collect.poll import Collector
    from etl.runtime.collect_run import collect_once
    from etl.store.models import CollectionAttempt, Sample
    from etl.store.rows import forget_series_cache

    port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "benchmarks.collector_bench", "serve",
                            "--port", str(port), "-n", str(n)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert sim.stdout is not None
        if sim.stdout.readline().strip() != b"ready":
            raise RuntimeError("the simulator did not start")
        base = f"http://127.0.0.1:{port}"
        db = workdir / "collect.db"
        engine = sqlite_engine(db)
        config, env = _config(n, base, f"sqlite:///{db}")
        os.environ.update(env)
        # A pacing folder of this run's own: runs a minute apart must not share the budget of
        # the same fixed credentials (the default folder is shared by the whole machine).
        os.environ["USAGE_ETL_PACING_DIR"] = str(workdir / "pacing")
        collector = Collector(list(config.sources))
        log(f"collector: {n} sources every {INTERVAL:g} s for {rounds} rounds")
        durations, lags = [], []
        start = time.perf_counter()
        ok = 0
        for r in range(rounds):
            due = start + r * INTERVAL
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            lags.append(max(0.0, time.perf_counter() - due))
            t = time.perf_counter()
            results = collect_once(engine, config, collector=collector)
            durations.append(time.perf_counter() - t)
            ok += sum(1 for res in results if res.outcome == "ok")
        elapsed = time.perf_counter() - start

        # Capacity against the baseline, taking turns (A, B, A, B, ...) so that load on a
        # shared machine falls on both alike: a round of the collector as fast as it goes,
        # then a plain requests.get loop over the other set of credentials (nothing stored).
        log(f"collector: capacity, {capacity_rounds} rounds of the collector and of a plain "
            "requests.get loop, taking turns")
        capacity: list[float] = []
        plain_rates: list[float] = []
        plain_ok = extra_ok = 0
        for _ in range(capacity_rounds):
            t = time.perf_counter()
            results = collect_once(engine, config, collector=collector)
            capacity.append(n / (time.perf_counter() - t))
            extra_ok += sum(1 for res in results if res.outcome == "ok")
            t = time.perf_counter()
            got = 0
            for i in range(n):
                if i % 2 == 0:
                    resp = requests.get(f"{base}/usage",
                                        headers={"Authorization": f"Bearer base-tok-{i}"},
                                        timeout=10)
                else:
                    resp = requests.get(f"{base}/dev/usage",
                                        headers={"Nected-API-Key": f"base-key-{i}"}, timeout=10)
                got += resp.status_code == 200
            plain_rates.append(got / (time.perf_counter() - t))
            plain_ok += got
        collector.close()
        with engine.connect() as conn:
            attempts = conn.scalar(select(func.count()).select_from(CollectionAttempt))
            samples = conn.scalar(select(func.count()).select_from(Sample))
        forget_series_cache(engine)
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
    polls = n * (rounds + capacity_rounds)
    round_capacity = statistics.median(capacity)
    plain_rate = statistics.median(plain_rates)
    # Sustained: what was due and done, over the time it took (a late round stretches it).
    sustained = ok / max(elapsed, rounds * INTERVAL)
    return {
        "sources": n, "rounds": rounds, "interval_s": INTERVAL, "polls": polls, "polls_ok": ok + extra_ok,
        "capacity_rounds": capacity_rounds, "capacity_round_polls_per_s": capacity,
        "plain_round_polls_per_s": plain_rates,
        "attempts_stored": attempts, "samples_stored": samples,
        "every_poll_stored": attempts == polls,
        "round_seconds": durations, "max_round_s": max(durations),
        "max_start_lag_s": max(lags), "no_schedule_lag": max(durations) <= INTERVAL,
        "sustained_polls_per_s": sustained, "capacity_polls_per_s": round_capacity,
        "plain_polls_per_s": plain_rate, "plain_ok": plain_ok,
        "capacity_ratio": round_capacity / plain_rate,
    }


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.collector_bench")
    ap.add_argument("mode", choices=("serve",))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, required=True)
    args = ap.parse_args(argv)
    serve(args.port, args.n)


if __name__ == "__main__":
    main(sys.argv[1:])
