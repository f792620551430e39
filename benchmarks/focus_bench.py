"""`python -m benchmarks.focus_bench [--gib 1.0] [--gzip]`: a large FOCUS invoice's memory.

Generates a Vercel-style FOCUS charges file of about `--gib` GiB (hourly rows of November
2026 for the three SKUs docs/examples/focus-month.toml selects and 60 it does not), imports
the example's history into a throwaway SQLite database, and runs `usage-etl reconcile
--invoice FILE` on it as a child process, reading the child's own peak RSS. The baseline is
the same command on the small docs/examples/vercel-focus-2026-11.csv, in the same run.
SPEC 12's goal: a 1 GB FOCUS export reconciles under 300 MB of peak memory. Prints one JSON
line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import run_child, run_child_rss

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "examples" / "focus-month.toml"
HISTORY = REPO / "docs" / "examples" / "focus-history.jsonl"
SMALL = REPO / "docs" / "examples" / "vercel-focus-2026-11.csv"
GOAL_BYTES = 300 * 1000 * 1000
HEADER = ("BilledCost,BillingAccountId,BillingCurrency,BillingPeriodStart,BillingPeriodEnd,"
          "ChargeCategory,ChargeDescription,ChargeFrequency,ChargePeriodStart,ChargePeriodEnd,"
          "ConsumedQuantity,ConsumedUnit,EffectiveCost,PricingQuantity,PricingUnit,"
          "ProviderName,ServiceCategory,ServiceName,SkuId,Tags\n")
SKUS = ([("Functions", "fn-invocations", "Requests", "USD"),
         ("Builds", "build-minutes", "Invocations", "EUR"),
         ("Bandwidth", "fast-data-transfer", "GB", "USD")]
        + [(f"Service{n:02d}", f"sku-{n:02d}", "Requests", "USD") for n in range(60)])


def write_focus(path: Path, target_bytes: int) -> int:
    """Hourly FOCUS rows of November 2026, repeated per project tag, up to `target_bytes`."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    hours = [(start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(721)]
    rows = 0
    written = len(HEADER)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(HEADER)
        project = 0
        while written < target_bytes:
            project += 1
            lines = []
            for h in range(720):
                for n, (service, sku, unit, cur) in enumerate(SKUS):
                    quantity = (h * 7 + n + project) % 1000 + 1
                    cost = f"{quantity * 0.0012:.4f}"
                    lines.append(
                        f"{cost},team_acme,{cur},2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,"
                        f"Usage,{service} usage,Usage-Based,{hours[h]},{hours[h + 1]},"
                        f"{quantity},{unit},{cost},{quantity},{unit},Vercel,Compute,"
                        f"{service},{sku},\"{{\"\"project\"\": \"\"p{project}\"\"}}\"\n")
            chunk = "".join(lines)
            fh.write(chunk)
            written += len(chunk.encode())
            rows += len(lines)
    return rows


def reconcile(db_url: str, invoice: Path, out: Path) -> tuple[float, int]:
    seconds, peak, _ = run_child_rss(
        ["-m", "etl", "--config", str(EXAMPLE), "--database-url", db_url, "reconcile",
         "--month", "2026-11", "--invoice", str(invoice), "--format", "csv", "--out",
         str(out)])
    return seconds, peak


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the FOCUS file")
    parser.add_argument("--gzip", action="store_true", help="also the file gzip-compressed")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="focus-bench-"))
    try:
        db_url = f"sqlite:///{folder / 'usage.db'}"
        run_child(["-m", "etl", "--config", str(EXAMPLE), "--database-url", db_url, "import",
                   str(HISTORY)])
        big = folder / "focus-2026-11.csv"
        rows = write_focus(big, int(args.gib * (1 << 30)))
        base_s, base_rss = reconcile(db_url, SMALL, folder / "small")
        big_s, big_rss = reconcile(db_url, big, folder / "big")
        result: dict[str, Any] = {
            "focus_file_bytes": big.stat().st_size, "focus_rows": rows,
            "small_seconds": round(base_s, 2), "small_peak_rss_bytes": base_rss,
            "large_seconds": round(big_s, 2), "large_peak_rss_bytes": big_rss,
            "large_over_small_rss": round(big_rss / base_rss, 2),
            "goal_peak_rss_bytes": GOAL_BYTES, "goal_met": big_rss < GOAL_BYTES,
            "statuses": (folder / "big" / "reconcile-2026-11.csv").read_text().count("\n") - 1,
        }
        if args.gzip:
            zipped = folder / "focus-2026-11.csv.gz"
            with big.open("rb") as src, gzip.open(zipped, "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            gz_s, gz_rss = reconcile(db_url, zipped, folder / "gz")
            result |= {"gzip_seconds": round(gz_s, 2), "gzip_peak_rss_bytes": gz_rss,
                       "gzip_goal_met": gz_rss < GOAL_BYTES}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["goal_met"] else 1)
