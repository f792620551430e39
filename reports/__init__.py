"""usage-etl reports: pandas jobs that turn stored samples into daily, billing and reconciliation reports."""
