"""The runtime: the `schedule` daemon, `collect` runs, nightly reports, status, logs, demo and
the simulated vendor.

May import every other part of `etl` and `reports` (to build reports); never click.
"""
