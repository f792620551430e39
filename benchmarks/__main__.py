"""`python -m benchmarks [--quick] [--json FILE]`: every figure of docs/performance.md.

Each figure is a ratio against a baseline measured in the same run on the same machine, the
two timed in turns (A, B, A, B, ...) and compared by their medians, so that load on a shared
machine moves both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import (
    collector_bench,
    credits_bench,
    history_bench,
    imports,
    reports_bench,
    startup,
    vendors_bench,
    wide_bench,
)
from benchmarks.workload import Workload, config_text, write_archive

GIB = 1 << 30
SECTIONS = ("import", "reports", "collector", "startup", "vendors", "credits", "wide",
            "history")


@dataclass(frozen=True)
class Size:
    """How big a run is."""

    import_workload: Workload  # archive imported several times per engine
    import_rounds: int  # product and baseline take turns this many times; medians count
    reports_workload: Workload  # history the reports read
    reports_rounds: int
    scaling_workload: Workload  # the month alone, and inside a year of history
    collector_sources: int
    collector_rounds: int  # rounds on the schedule
    collector_capacity_rounds: int  # collector and plain loop take turns this many times
    startup_rounds: int
    demo_days: int  # the demo database that `status` reads (`usage-etl demo`'s default)
    vendor_lines: int = 20_000  # archive lines imported through each kind (vendors_bench)
    vendor_repeats: int = 3  # turns of each kind's import (vendors_bench)
    vendor_polls: int = 400
    credit_sources: int = 20  # sources billed, each with a credit granted 12 months before
    credit_step_minutes: int = 30
    # Turns of the credits figure: its two reports take about 1.4 s each and, three turns a
    # side, one fast run of the plain one moved the ratio from 1.07 to 1.24 (2026-12-07).
    credit_rounds: int = 7
    wide_series: int = 100_000  # per-item series of one http_json source's daily report
    history_days: int = 90  # a backfill of this many daily pages (SPEC 10) ...
    history_series: int = 50  # ... of this many series at hourly buckets
    history_rounds: int = 5
    # The scaling figure's "year": days of history before the month and after it.
    scaling_before_days: int = reports_bench.YEAR_BEFORE_DAYS
    scaling_after_days: int = reports_bench.YEAR_AFTER_DAYS
    startup_warm_up: bool = True  # one untimed run of each command before the timed rounds
    wide_baseline_others: bool = True  # billing and alerts check of the narrow baseline too


FULL = Size(Workload(pairs=100, days=1), 5, Workload(pairs=100, days=30), 3,
            Workload(pairs=10, days=30), 1000, 6, 3, 9, 28)
# --quick: every section runs and writes every figure, at toy sizes (tests/
# test_benchmarks_quick.py, in the suite): no warm-up runs and no child process whose times
# feed no figure; the scaling figure's "year" is the month with a few days either side.
QUICK = Size(Workload(pairs=3, days=1, step_minutes=5), 1,
             Workload(pairs=2, days=30, step_minutes=60), 1,
             Workload(pairs=1, days=30, step_minutes=240), 40, 2, 1, 1, 1,
             vendor_lines=400, vendor_repeats=1, vendor_polls=20, credit_sources=2,
             credit_step_minutes=240, credit_rounds=1,
             wide_series=40, history_days=3, history_series=3, history_rounds=1,
             scaling_before_days=3, scaling_after_days=3, startup_warm_up=False,
             wide_baseline_others=False)

# The import goal is on the import as a whole (the CLI and the library call under it); the
# write-path figures (bulk_store against rows a script already built) are diagnostics.
GOALS = {
    # SPEC 13 (issue 25): at least as fast as the plain script (the CLI pays its start-up).
    "import_sqlite_library": (">=", 1.0), "import_sqlite_cli": (">=", 0.9),
    "import_postgresql_library": (">=", 1.0), "import_postgresql_cli": (">=", 0.9),
    "reports_cold": ("<=", 0.15), "reports_cold_peak_rss_gib": ("<=", 1.0),
    "reports_cold_other_tz": ("<=", 0.3),
    "reports_warm_seconds": ("<=", 0.25), "reports_warm_identical": ("==", True),
    # SPEC 13: the month's reports on a database holding twelve months over one holding one.
    "reports_cold_year_over_month": ("<=", 1.2), "reports_warm_year_over_month": ("<=", 1.2),
    "collector_polls_per_s": (">=", 200.0), "collector_every_poll_stored": ("==", True),
    "collector_no_schedule_lag": ("==", True),
    "startup_help_vs_import_click": ("<=", 3.0), "startup_status_seconds": ("<=", 0.6),
    # CPU per line (and per poll) of an http_json twin over the built-in kind it imitates.
    "http_json_import_cpu_ratio": ("<=", 1.5), "http_json_poll_cpu_ratio": ("<=", 1.5),
    # CPU of the warm billing report with credits granted 12 months earlier over without.
    "credits_warm_cpu_ratio": ("<=", 1.2),
    # A daily report's time per series at 100,000 series over 10,000: it grows with the table.
    "wide_daily_per_series_ratio": ("<=", 1.5),
    # SPEC 13: bytes per sample once raw responses are compacted, the database vacuumed.
    "storage_sqlite_compacted_bytes_per_sample": ("<=", 35.0),
    "storage_postgresql_compacted_bytes_per_sample": ("<=", 60.0),
    # SPEC 10: CPU per page reading a history endpoint over a plain requests + json loop
    # pulling out the same numbers (importing the pages against a script: a diagnostic).
    "history_page_cpu_ratio": ("<=", 1.5),
}


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures (ratios against the same-run baselines) from the raw results."""
    out: dict[str, Any] = {}
    for engine in ("sqlite", "postgresql"):
        res = results.get("import", {}).get(engine, {})
        if not res or "skipped" in res:
            continue
        out[f"import_{engine}_library"] = res["import_library_ratio"]
        out[f"import_{engine}_cli"] = res["import_cli_ratio"]
        out[f"import_{engine}_write_path"] = res["write_ratio"]
        if "import_library_cpu_ratio" in res:  # the importing process's CPU alone
            out[f"import_{engine}_library_cpu"] = res["import_library_cpu_ratio"]
        if "compaction" in res:  # SPEC 13: the database vacuumed; archives on disk apart
            comp = res["compaction"]
            out[f"storage_{engine}_bytes_per_sample"] = comp["bytes_per_sample"]
            out[f"storage_{engine}_compacted_bytes_per_sample"] = comp["compacted_bytes_per_sample"]
            out[f"storage_{engine}_archive_bytes_per_sample"] = comp["archive_bytes_per_sample"]
            out[f"compact_{engine}_responses_per_s"] = comp["compact_responses_per_s"]
    if "reports" in results:
        rep = results["reports"]
        out["reports_cold"] = rep["cold_ratio"]
        out["reports_cold_peak_rss_gib"] = rep["cold_peak_rss_bytes"] / GIB
        out["reports_cold_other_tz"] = rep["cold_other_tz_ratio"]
        out["reports_plain_peak_rss_gib"] = rep["plain_peak_rss_bytes"] / GIB
        out["reports_warm"] = rep["warm_ratio"]
        out["reports_warm_seconds"] = rep["warm_s"]
        out["reports_warm_frames_seconds"] = rep["warm_frames_s"]
        out["reports_warm_identical"] = rep["warm_identical_to_cold"]
        if "scaling" in rep:
            out["reports_cold_year_over_month"] = rep["scaling"]["cold_year_over_month"]
            out["reports_warm_year_over_month"] = rep["scaling"]["warm_year_over_month"]
    if "collector" in results:
        col = results["collector"]
        out["collector_polls_per_s"] = col["sustained_polls_per_s"]
        out["collector_capacity_polls_per_s"] = col["capacity_polls_per_s"]
        out["collector_vs_plain_loop"] = col["capacity_ratio"]
        out["collector_every_poll_stored"] = col["every_poll_stored"]
        out["collector_no_schedule_lag"] = col["no_schedule_lag"]
    if "import" in results:
        storage = results["import"]["sqlite"]["storage"]
        out["storage_bytes_per_sample"] = storage["bytes_per_sample"]
    if "startup" in results:
        start = results["startup"]
        out["startup_help_vs_import_click"] = start["help_ratio"]
        out["startup_version_vs_import_click"] = start["version_ratio"]
        out["startup_status_seconds"] = start["status_s"]
        out["startup_status_vs_import_click"] = start["status_ratio"]
        out["startup_status_cpu_seconds"] = start["status_cpu_s"]
        out["startup_help_cpu_vs_import_click"] = start["help_cpu_ratio"]
    if "vendors" in results:
        ven = results["vendors"]
        out["http_json_import_cpu_ratio"] = ven["import"]["import_ratio"]
        out["http_json_parse_cpu_ratio"] = ven["import"]["parse_ratio"]
        out["http_json_poll_cpu_ratio"] = ven["poll"]["ratio"]
    if "credits" in results:
        cre = results["credits"]
        out["credits_warm_cpu_ratio"] = cre["cpu_ratio"]
        out["credits_warm_wall_ratio"] = cre["ratio"]
    if "wide" in results:
        wide = results["wide"]
        out["wide_daily_per_series_ratio"] = wide["per_series_ratio"]
        out["wide_daily_seconds"] = wide["wide_s"]
        out["wide_daily_peak_rss_gib"] = wide["wide_peak_rss_bytes"] / 2**30
        out["wide_billing_seconds"] = wide["wide_others"]["billing_s"]
        out["wide_alerts_check_seconds"] = wide["wide_others"]["alerts_check_s"]
    if "history" in results:
        his = results["history"]
        out["history_page_cpu_ratio"] = his["page_cpu_ratio"]
        out["history_product_cpu_per_page_ms"] = his["product_cpu_per_page_ms"]
        out["history_plain_cpu_per_page_ms"] = his["plain_cpu_per_page_ms"]
        out["history_store_cpu_per_page_ms"] = his["store_cpu_per_page_ms"]
        out["history_import_ratio"] = his["import_ratio"]
        out["history_import_pages_per_s"] = his["import_pages_per_s"]
    return out


def verdicts(figs: dict[str, Any]) -> dict[str, bool]:
    out = {}
    for name, (op, goal) in GOALS.items():
        if name not in figs:
            continue
        value = figs[name]
        out[name] = (value >= goal if op == ">=" else value <= goal if op == "<=" else value == goal)
    return out


def table(figs: dict[str, Any], met: dict[str, bool], *, quick: bool = False) -> str:
    """The figures with their goals; at --quick size no goal is judged (toy sizes)."""
    lines = [f"{'figure':34} {'value':>12}  goal", "-" * 60]
    for name, value in figs.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        goal = GOALS.get(name)
        verdict = "not judged (--quick)" if quick else "met" if met.get(name) else "MISSED"
        mark = "" if goal is None else f"{goal[0]} {goal[1]}  {verdict}"
        lines.append(f"{name:34} {shown:>12}  {mark}")
    if quick:
        lines.append("--quick: toy sizes, one round; the figures only show that every "
                     "section runs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes for CI (no meaningful figures)")
    ap.add_argument("--json", metavar="FILE", help="write every figure and raw timing here")
    ap.add_argument("--workdir", metavar="DIR", help="where to put the archive and databases")
    ap.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    ap.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                    help=f"run only this section (repeatable; {', '.join(SECTIONS)})")
    args = ap.parse_args(argv)
    # The commands timed in fresh processes (start-up, the CLI import) load etl/ and reports/
    # byte-compiled, as an installed copy does: where $PYTHONDONTWRITEBYTECODE is set (as on
    # these machines) each would compile every module it imports again, which the baselines,
    # loading only installed libraries compiled at install time, never pay.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    wanted = set(args.only or SECTIONS)
    size = QUICK if args.quick else FULL
    own = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="usage-etl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    # The load average before and after: how busy the machine was is part of the figures.
    results: dict[str, Any] = {"size": asdict(size), "quick": args.quick,
                               "sections": sorted(wanted),
                               "machine": {"python": platform.python_version(),
                                           "platform": platform.platform(),
                                           "cpus": os.cpu_count(),
                                           "loadavg_at_start": os.getloadavg()}}
    try:
        if "import" in wanted:
            w = size.import_workload
            archive = workdir / "archive.jsonl"
            lines = write_archive(w, archive)
            cfg = workdir / "import.toml"
            cfg.write_text(config_text(w, f"sqlite:///{workdir / 'unused.db'}"))
            log(f"workload: {lines:,} archive lines, {w.samples:,} samples to import")
            results["import"] = imports.run(archive, cfg, workdir, postgres=not args.no_postgres,
                                            rounds=size.import_rounds, log=log)
            archive.unlink()
        if "reports" in wanted:
            rw = size.reports_workload
            rcfg = workdir / "reports.toml"
            rcfg.write_text(config_text(rw, f"sqlite:///{workdir / 'reports.db'}"))
            results["reports"] = reports_bench.run(rw, workdir, rcfg,
                                                   rounds=size.reports_rounds, log=log)
            results["reports"]["scaling"] = reports_bench.run_scaling(
                size.scaling_workload, workdir, rounds=size.reports_rounds, log=log,
                before_days=size.scaling_before_days, after_days=size.scaling_after_days)
        if "collector" in wanted:
            results["collector"] = collector_bench.run(
                size.collector_sources, size.collector_rounds, workdir,
                capacity_rounds=size.collector_capacity_rounds, log=log)
        if "startup" in wanted:
            results["startup"] = startup.run(workdir, rounds=size.startup_rounds,
                                             demo_days=size.demo_days, log=log,
                                             warm_up=size.startup_warm_up)
        if "vendors" in wanted:
            results["vendors"] = vendors_bench.run(workdir, lines=size.vendor_lines,
                                                   polls=size.vendor_polls,
                                                   repeats=size.vendor_repeats, log=log)
        if "credits" in wanted:
            results["credits"] = credits_bench.run(
                workdir, sources=size.credit_sources, step_minutes=size.credit_step_minutes,
                rounds=size.credit_rounds, log=log)
        if "wide" in wanted:
            results["wide"] = wide_bench.run(workdir, series=size.wide_series, log=log,
                                             baseline_others=size.wide_baseline_others)
        if "history" in wanted:
            results["history"] = history_bench.run(
                workdir, days=size.history_days, series=size.history_series,
                rounds=size.history_rounds, log=log)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:  # the raw timings first, so that nothing measured is lost
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    figs = figures(results)
    met = verdicts(figs)
    results["figures"] = figs
    results["goals_met"] = met
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    print(table(figs, met, quick=args.quick))
    load = results["machine"]
    print(f"total {results['elapsed_s']:.0f} s; load average (1 min) {load['loadavg_at_start'][0]:.1f} "
          f"at the start, {load['loadavg_at_end'][0]:.1f} at the end, on {load['cpus']} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
