"""Figure 6: start-up of `usage-etl --help` against `python -c "import click"`, and of
`usage-etl status` on the demo database.

Each round times the baseline and every command once, in that order (A, B, C, A, B, C, ...),
so that load on a shared machine falls on all of them alike; the figures are medians.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BASELINE = "import click"


def _timed(args: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh interpreter running `args`.

    The CPU time (user + system, from the reaped child's rusage) moves far less with load
    than the wall time: on a busy machine the process mostly waits for a core.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, check=False)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def run(workdir: Path, *, rounds: int, demo_days: int, log: Any = print,
        warm_up: bool = True) -> dict[str, Any]:
    """Build the demo database (`usage-etl demo`'s, without its reports), then time rounds
    (after one untimed run of each command unless `warm_up` is False: --quick)."""
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
    for args in commands.values() if warm_up else ():  # once untimed: byte-compiled files
        _timed(args, ok=(0, 1))                         # and page cache warm
    log(f"start-up: {rounds} interleaved rounds of {', '.join(commands)}")
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, args in commands.items():
            wall, used = _timed(args, ok=(0, 1) if name == "status" else (0,))
            times[name].append(wall)
            cpu[name].append(used)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    cpu_med = {name: statistics.median(ts) for name, ts in cpu.items()}
    return {
        "rounds": rounds, "demo_days": demo_days, "times_s": times, "cpu_s": cpu,
        "median_s": med, "cpu_median_s": cpu_med,
        "status_cpu_s": cpu_med["status"],
        "help_cpu_ratio": cpu_med["help"] / cpu_med["import_click"],
        "help_ratio": med["help"] / med["import_click"],
        "version_ratio": med["version"] / med["import_click"],
        "status_s": med["status"],
        "status_ratio": med["status"] / med["import_click"],
    }
