"""usage-etl reports: turn stored samples into daily, billing and reconciliation reports.

Inside: `read` (queries, invoice files), `compute` (pure arithmetic, SPEC 5), `render`
(CSV, HTML, charts), `pipelines` (one pipeline per report, called by the CLI, the daemon,
the DataFrame API and the notebooks) and `api` (the analysts' DataFrames). May import the
store side of `etl` (etl.store, etl.config, etl.vendors), never the HTTP side (etl.collect).

The DataFrame API is loaded on first use, so `reports.names` costs no pandas import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["billing", "daily_usage", "focus", "list_series", "load_attempts", "load_samples", "reconcile"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from reports import api

        return getattr(api, name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
