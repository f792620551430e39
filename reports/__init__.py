"""usage-etl reports: pandas jobs that turn stored samples into daily, billing and reconciliation reports."""

from reports.api import (
    billing,
    daily_usage,
    list_series,
    load_attempts,
    load_samples,
    reconcile,
)

__all__ = ["billing", "daily_usage", "list_series", "load_attempts", "load_samples", "reconcile"]
