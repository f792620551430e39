"""Which series of a day get a chart: those a person reads first, a bounded number of them."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from reports.compute.daily import WARNING_PCT, exact_total

# Charts per daily report at most. A vendor with 100,000 per-item series gets a report a
# person can read (and that is drawn in seconds): the rest of its series are table rows.
MAX_CHARTS = 24
# Rows of a daily HTML's per-series table at most: past it, the series that matter (chosen
# as the charts are) in full and the others summed up per metric; the CSV has every one.
MAX_TABLE_ROWS = 5_000


def charted_rows(table: pd.DataFrame, billed: Iterable[tuple[str, str]],
                 most: int | None = None) -> list[int]:
    """Positions of the rows of one day's `table` (DAILY_COLUMNS) to chart, in table order.

    Every row when there are at most `most`; else, up to `most`: series near or past their
    limit (peak at WARNING_PCT or more, highest first), then billed ones (`billed`: (source,
    metric) pairs of the billing rules), then the busiest (largest increase, then largest
    value). `most` defaults to MAX_CHARTS.
    """
    most = MAX_CHARTS if most is None else most
    if len(table) <= most:
        return list(range(len(table)))
    frame = table.reset_index(drop=True)
    peak = pd.to_numeric(frame["peak_pct"], errors="coerce")
    near = peak[peak >= WARNING_PCT].sort_values(ascending=False, kind="stable").index
    wanted = set(billed)
    pairs = zip(frame["source"], frame["metric"], strict=True)
    paid = [i for i, pair in enumerate(pairs) if pair in wanted] if wanted else []
    busy = frame.assign(_inc=pd.to_numeric(frame["increase"], errors="coerce").fillna(-1),
                        _max=pd.to_numeric(frame["max"], errors="coerce").fillna(-1))
    busiest = busy.sort_values(["_inc", "_max"], ascending=False, kind="stable").index
    chosen: dict[int, None] = {}
    for group in (near, paid, busiest):
        for i in group:
            if len(chosen) >= most:
                return sorted(chosen)
            chosen.setdefault(int(i), None)
    return sorted(chosen)


def others_by_metric(rest: pd.DataFrame) -> pd.DataFrame:
    """The day's series left out of a bounded table, summed up per source and metric name.

    `rest`: rows of one day's table (DAILY_COLUMNS). One row per (source, metric name before
    a per-item key's ':', metric type): how many series, their samples, their exact total
    increase (counters and intervals), the lowest coverage and the highest peak.
    """
    names = rest["metric"].astype(str).str.split(":", n=1).str[0]
    keys = ["source", "metric", "metric_type"]
    frame = rest.assign(metric=names)
    out = []
    for (source, metric, mtype), g in frame.groupby(keys, sort=True):
        inc = g["increase"].dropna()
        peak = pd.to_numeric(g["peak_pct"], errors="coerce")
        out.append({"source": source, "metric": f"{metric} (other series)", "metric_type": mtype,
                    "series": len(g), "samples": int(g["samples"].sum()),
                    "increase": exact_total(inc) if len(inc) else None,
                    "lowest coverage_pct": float(g["coverage_pct"].min()),
                    "highest peak_pct": float(peak.max()) if peak.notna().any() else None})
    return pd.DataFrame(out, columns=["source", "metric", "metric_type", "series", "samples",
                                      "increase", "lowest coverage_pct", "highest peak_pct"])
