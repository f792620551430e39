"""Figure 6: start-up of `usage-etl --help` against `python -c "import click"`, and of
`usage-etl status` on the demo database.

Each round times the baseline and every command once, in that order (A, B, C, A, B, C, ...),
so that load on a shared machine falls on all of them alike; the figures are medians.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BASELINE = "import click"


def _timed(args: list[str], ok: tuple[int, ...] = (0,)) -> float:
    """Wall seconds of one fresh interpreter running `args`."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, check=False)
    elapsed = time.perf_counter() - t
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.decode()[-2000:]}")
    return elapsed


def run(workdir: Path, *, rounds: int, demo_days: int, log: Any = print) -> dict[str, Any]:
    """Build the demo database (`usage-etl demo`'s, without its reports), then time rounds."""
    from etl.runtime.demo import run_demo

    log(f"start-up: demo database ({demo_days} days)")
    demo = run_demo(workdir / "demo", days=demo_days, rounds=1, echo=lambda _: None)
    config = str(demo.config)
    commands = {
        "import_click": ["-c", BASELINE],
        "help": ["-m", "etl", "--help"],
        "version": ["-m", "etl", "--version"],
        # Exit 1 is a stale source (the demo's newest poll ages while we time): still a run.
        "status": ["-m", "etl", "--config", config, "status"],
    }
    for args in commands.values():  # once untimed: byte-compiled files and page cache warm
        _timed(args, ok=(0, 1))
    log(f"start-up: {rounds} interleaved rounds of {', '.join(commands)}")
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, args in commands.items():
            times[name].append(_timed(args, ok=(0, 1) if name == "status" else (0,)))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "rounds": rounds, "demo_days": demo_days, "times_s": times,
        "median_s": med,
        "help_ratio": med["help"] / med["import_click"],
        "version_ratio": med["version"] / med["import_click"],
        "status_s": med["status"],
        "status_ratio": med["status"] / med["import_click"],
    }
