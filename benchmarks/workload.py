"""The benchmark workload: a generated JSONL archive (SPEC 4) and the config that reads it.

N WireSocket sources (2 gauges each) and N Nected sources (1 counter each) give 3 N series,
i.e. "N sources x 3 metrics" with N = 100 at one sample a minute for September 2026:
300 series x 43,200 minutes = 12.96 M samples from 8.64 M archive lines. Realistic shape:
daily cycles, the Nected counters reset at the month start (the archive starts an hour
before it), a gap of two hours in every 7th source, and 0.1 % of the lines repeated later.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

MONTH = "2026-09"
MONTH_START = datetime(2026, 9, 1, tzinfo=UTC)
LEAD_MINUTES = 60  # the last hour of October: the counters reset at the month start


@dataclass(frozen=True)
class Workload:
    """How much history to generate."""

    pairs: int  # N: N wiresocket + N nected sources = 3 N series
    days: int  # days of November (the archive starts LEAD_MINUTES before)
    step_minutes: int = 1

    @property
    def minutes(self) -> int:
        return LEAD_MINUTES + self.days * 1440

    @property
    def lines(self) -> int:
        return 2 * self.pairs * (self.minutes // self.step_minutes)

    @property
    def samples(self) -> int:
        return 3 * self.pairs * (self.minutes // self.step_minutes)


def ws_name(i: int) -> str:
    return f"ws-{i:03d}"


def nx_name(i: int) -> str:
    return f"nx-{i:03d}"


def config_text(w: Workload, database_url: str, base_url: str = "http://127.0.0.1:9") -> str:
    """A usage-etl config naming every source of the workload (credentials from env vars)."""
    parts = [f'database_url = "{database_url}"', 'timezone = "UTC"', ""]
    for i in range(w.pairs):
        parts += [
            "[[sources]]", f'name = "{ws_name(i)}"', 'kind = "wiresocket"',
            f'base_url = "{base_url}"', 'token_env = "BENCH_WS_TOKEN"',
            f"interval_seconds = {60 * w.step_minutes}", "",
            "[[sources]]", f'name = "{nx_name(i)}"', 'kind = "nected"',
            f'base_url = "{base_url}"', 'api_key_env = "BENCH_NX_KEY"',
            f"interval_seconds = {60 * w.step_minutes}", "",
        ]
    for i in range(w.pairs):
        parts += [
            "[[billing]]", f'source = "{nx_name(i)}"', 'metric = "invocations"',
            'aggregation = "increase"', "included = 1000000", 'unit_price = "0.0002"',
            'currency = "USD"', "",
            "[[billing]]", f'source = "{ws_name(i)}"', 'metric = "connections"',
            'aggregation = "peak"', "included = 500", 'unit_price = "0.50"', 'currency = "USD"', "",
        ]
    return "\n".join(parts)


def _status(pct: float) -> str:
    return "critical" if pct >= 90 else "warning" if pct >= 75 else "healthy"


def write_archive(w: Workload, path: Path, seed: int = 1) -> int:
    """Write the workload's archive to `path`; returns the number of lines."""
    rng = random.Random(seed)
    start = MONTH_START - timedelta(minutes=LEAD_MINUTES)
    n = w.pairs
    conn_limit = [rng.choice((100, 250, 500, 1000)) for _ in range(n)]
    doc_limit = [rng.choice((20, 50, 100)) for _ in range(n)]
    phase = [rng.random() * 2 * math.pi for _ in range(n)]
    rate = [rng.uniform(5, 200) for _ in range(n)]
    counter = [rng.uniform(1e6, 5e6) for _ in range(n)]  # October's count before the reset
    gap_at = {i: rng.randrange(w.minutes - 120) for i in range(0, n, 7)}
    tenant = [f"{rng.getrandbits(128):032x}" for _ in range(n)]
    repeats: list[str] = []
    count = 0
    with path.open("w", encoding="utf-8", buffering=1 << 20) as fh:
        for m in range(0, w.minutes, w.step_minutes):
            at = start + timedelta(minutes=m)
            iso = at.strftime("%Y-%m-%dT%H:%M:%S")
            day_frac = (at.hour * 60 + at.minute) / 1440.0
            reset = at == MONTH_START
            out = []
            for i in range(n):
                g = gap_at.get(i)
                if g is not None and g <= m < g + 120:
                    continue
                cyc = 0.5 + 0.4 * math.sin(2 * math.pi * day_frac + phase[i])
                lim = conn_limit[i]
                c = max(0, min(lim, int(lim * cyc * rng.uniform(0.85, 1.15))))
                d = max(0, min(doc_limit[i], int(doc_limit[i] * (0.3 + 0.2 * cyc))))
                cp, dp = round(c * 100.0 / lim, 1), round(d * 100.0 / doc_limit[i], 1)
                out.append(
                    f'{{"source": "{ws_name(i)}", "body": {{"tenantId": "{tenant[i]}", '
                    f'"appId": "app-{i:03d}", "usage": {{"connections": {{"current": {c}, '
                    f'"limit": {lim}, "percent": {cp}, "status": "{_status(cp)}"}}, '
                    f'"documents": {{"current": {d}, "limit": {doc_limit[i]}, "percent": {dp}, '
                    f'"status": "{_status(dp)}"}}}}, "timestamp": "{iso}.000Z"}}}}\n'
                )
                counter[i] = 0.0 if reset else counter[i] + rate[i] * w.step_minutes * (0.2 + cyc)
                out.append(
                    f'{{"source": "{nx_name(i)}", "observed_at": "{iso}Z", "body": {{"data": '
                    f'{{"invocations": {int(counter[i])}}}, "code": "success", '
                    f'"message": "Success."}}}}\n'
                )
            for line in out:
                if rng.random() < 0.001:
                    repeats.append(line)
            fh.writelines(out)
            count += len(out)
            if len(repeats) > 200:
                fh.writelines(repeats)
                count += len(repeats)
                repeats.clear()
        fh.writelines(repeats)
        count += len(repeats)
    return count
